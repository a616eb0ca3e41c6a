"""A stand-in for ``python -m mae_dense.cli.probe`` with the same command line and result file.

``python -m fake_probe CONFIG --work-dir DIR [--mode fast|augmented] [--cfg-options k=v ...]`` writes
``DIR/probe_result.json`` as the real probe does, with an mIoU derived from the backbone file's bytes and
the seed (so two backbones differ and a rerun gives the same number), and ``DIR/fake_probe_call.json``
with what it was given (arguments, CUDA_VISIBLE_DEVICES, Slurm variables). The pipeline tests inject it
with the probe task's ``module:`` key. Environment switches:

* ``FAKE_PROBE_FAIL=TEXT``: fail with an ``error:`` line when ``model.pretrained`` contains TEXT;
* ``FAKE_PROBE_BARRIER=DIR:N``: wait until N probes have started (proves they run at the same time).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument('config')
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--mode', default='fast', choices=['fast', 'augmented'])
    parser.add_argument('--cfg-options', nargs='+', default=[])
    args = parser.parse_args(argv)
    options = dict(o.split('=', 1) for o in args.cfg_options)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    pretrained = options.get('model.pretrained', 'None')
    (work / 'fake_probe_call.json').write_text(
        json.dumps(
            dict(
                argv=sys.argv[1:],
                cuda_visible_devices=os.environ.get('CUDA_VISIBLE_DEVICES'),
                slurm_job_id=os.environ.get('SLURM_JOB_ID'),
            )
        )
    )
    fail = os.environ.get('FAKE_PROBE_FAIL')
    if fail and fail in pretrained:
        print(f'error: {pretrained}: the fake probe refuses this backbone', file=sys.stderr)
        return 1
    barrier = os.environ.get('FAKE_PROBE_BARRIER')
    if barrier:
        folder, count = barrier.rsplit(':', 1)
        Path(folder, f'{os.getpid()}').touch()
        deadline = time.monotonic() + 60
        while len(list(Path(folder).iterdir())) < int(count):
            if time.monotonic() > deadline:
                print(
                    f'error: only {len(list(Path(folder).iterdir()))} of {count} probes started',
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.05)
    weights = Path(pretrained).read_bytes() if Path(pretrained).is_file() else pretrained.encode()
    seed = int(options.get('randomness.seed', 0))
    miou = 10.0 + int(hashlib.sha256(weights).hexdigest()[:4], 16) % 2000 / 100 + 0.5 * seed
    result = dict(
        metrics=dict(mIoU=miou, aAcc=50.0 + miou / 2),
        mode=args.mode,
        lr=1e-3,
        sweep={'0.0001': miou - 1.0, '0.001': miou},
        config=args.config,
        iterations=2,
    )
    (work / 'probe_result.json').write_text(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
