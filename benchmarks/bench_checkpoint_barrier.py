"""What the barrier at the end of every checkpoint save costs, on 2 gloo processes (CPU).

mmengine saves on rank 0 only; ``CrashSafeCheckpointHook`` ends every save with a barrier so that no rank runs
past a checkpoint that is not yet on disk. This measures, per save of a checkpoint of the chosen size (model +
AdamW state, written the way the hook writes it: ``torch.save`` through the atomic local backend, then
``last_checkpoint``):

* ``save s``: rank 0's save;
* ``barrier wait s``: what rank 1 spends in the barrier (it has nothing to save);
* ``cycle s``: one save plus the next DDP training step, the slower rank's time, with and without the
  barrier. Without it rank 1 starts its next step during the save and then waits in the step's gradient
  all-reduce instead, so the difference is the overlap the barrier gives up: the real cost per save.

    python benchmarks/bench_checkpoint_barrier.py                 # ViT-L/16 (304M parameters), 224 px
    python benchmarks/bench_checkpoint_barrier.py --arch base --cycles 2
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mae_dense.models.archs import get_arch  # noqa: E402
from mae_dense.models.vit import VisionTransformer  # noqa: E402


def _worker(rank: int, args: argparse.Namespace, port: int, results) -> None:
    from mmengine.runner.checkpoint import save_checkpoint

    from mae_dense.openmmlab.engine.checkpointing import atomic_write, install_atomic_checkpoints

    install_atomic_checkpoints()
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    torch.manual_seed(0)
    model = DistributedDataParallel(
        VisionTransformer(mode='mae', img_size=args.img_size, **get_arch(args.arch).vit_kwargs())
    )
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(1, 3, args.img_size, args.img_size)

    def step() -> None:
        optim.zero_grad(set_to_none=True)
        model(x).float().mean().backward()
        optim.step()

    def save(i: int) -> float:
        t0 = time.perf_counter()
        if rank == 0:
            path = Path(args.out) / f'iter_{i}.pth'
            save_checkpoint(
                dict(state_dict=model.module.state_dict(), optimizer=optim.state_dict()), str(path)
            )
            atomic_write(Path(args.out) / 'last_checkpoint', str(path).encode())
            path.unlink()
        return time.perf_counter() - t0

    step()  # AdamW's state exists from here on: the checkpoint has its full size
    size = sum(t.numel() * t.element_size() for t in model.module.state_dict().values())
    size += sum(
        v.numel() * v.element_size() for s in optim.state.values() for v in s.values() if torch.is_tensor(v)
    )
    rows = []
    for with_barrier in (True, False) * args.cycles:
        dist.barrier()
        t0 = time.perf_counter()
        saved = save(len(rows))
        t1 = time.perf_counter()
        if with_barrier:
            dist.barrier()
        waited = time.perf_counter() - t1
        step()
        rows.append(dict(barrier=with_barrier, save=saved, wait=waited, cycle=time.perf_counter() - t0))
    results[rank] = dict(rows=rows, bytes=size)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='large')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument(
        '--cycles', type=int, default=2, choices=(1, 2, 3), help='save+step cycles of each kind'
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get('TMPDIR')) as out:
        args.out = out
        with mp.Manager() as manager:
            results = manager.dict()
            with socket.socket() as s:
                s.bind(('127.0.0.1', 0))
                port = s.getsockname()[1]
            mp.spawn(_worker, args=(args, port, results), nprocs=2, join=True)
            results = dict(results)
    gb = results[0]['bytes'] / 1e9
    print(
        f'{get_arch(args.arch).name}, {args.img_size} px, checkpoint {gb:.2f} GB (model + AdamW state), 2 gloo processes'
    )
    print('| barrier | rank 0 save s | rank 1 barrier wait s | cycle s (save + next step, slower rank) |')
    print('|---|---|---|---|')
    cycles: dict[bool, list[float]] = {True: [], False: []}
    after: dict[bool, list[float]] = {True: [], False: []}
    for r0, r1 in zip(results[0]['rows'], results[1]['rows']):
        cycle = max(r0['cycle'], r1['cycle'])
        cycles[r0['barrier']].append(cycle)
        after[r0['barrier']].append(cycle - r0['save'])  # the disk's own noise taken out
        print(f'| {"yes" if r0["barrier"] else "no"} | {r0["save"]:.2f} | {r1["wait"]:.2f} | {cycle:.2f} |')
    with_b, without = statistics.median(cycles[True]), statistics.median(cycles[False])
    a_with, a_without = statistics.median(after[True]), statistics.median(after[False])
    print(
        f'cost per save: cycle {with_b - without:+.2f} s ({with_b / without:.3f}x); cycle minus the save '
        f"(independent of the disk's speed from one save to the next) {a_with - a_without:+.2f} s"
    )


if __name__ == '__main__':
    main()
