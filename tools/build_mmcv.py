#!/usr/bin/env python
"""Build, cache, install and smoke-test mmcv 2.1.0 with its compiled ops for the installed torch.

mmcv 2.1.0 ships only a source archive, and that archive does not build on current torch as is:
  * its setup.py imports ``pkg_resources`` (gone in setuptools >= 82) -> build with setuptools < 82 and
    ``--no-build-isolation`` so that it also compiles against the torch that is installed;
  * it hard-codes ``-std=c++14``/``-std=c++17`` while torch >= 2.10 headers need C++20 -> raised here.

CPU ops are built where no CUDA device + toolkit is present; CUDA ops where both are (or FORCE_CUDA=1),
honouring TORCH_CUDA_ARCH_LIST. The wheel is cached outside the repository, keyed by mmcv version,
Python, torch version and CPU/CUDA(+arch), so a second set-up on the same machine takes seconds.

Usage: python tools/build_mmcv.py [--check] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

MMCV_VERSION = '2.1.0'
SMOKE = """
import torch
import mmcv
assert mmcv.__version__ == {version!r}, mmcv.__version__
import mmcv._ext  # noqa: F401  the compiled ops
from mmcv.ops import RoIAlign, batched_nms, nms
feats = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
rois = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0], [1, 2.0, 2.0, 7.0, 7.0]])
out = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2, aligned=True)(feats, rois)
assert out.shape == (2, 3, 2, 2) and torch.isfinite(out).all()
boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
scores = torch.tensor([0.9, 0.8, 0.7])
dets, keep = batched_nms(boxes, scores, torch.tensor([0, 0, 1]), dict(type='nms', iou_threshold=0.5))
assert keep.tolist() == [0, 2], keep
print('mmcv', mmcv.__version__, 'ops OK', '(cuda)' if {cuda} else '(cpu)')
if {cuda}:
    out = RoIAlign((2, 2), 1.0, 2, aligned=True)(feats.cuda(), rois.cuda())
    _, keep = nms(boxes.cuda(), scores.cuda(), 0.5)
    print('mmcv CUDA ops OK')
"""


def log(msg: str) -> None:
    print(f'[build_mmcv] {msg}', flush=True)


def torch_facts() -> tuple[str, str | None, bool]:
    """Return (torch version, torch CUDA version or None, whether a CUDA device is usable)."""
    import torch

    return torch.__version__.split('+')[0], torch.version.cuda, torch.cuda.is_available()


def want_cuda(torch_cuda: str | None, has_device: bool) -> bool:
    """FORCE_CUDA=1/0 decides when set; otherwise CUDA ops when a device and nvcc are both present."""
    if 'FORCE_CUDA' in os.environ:
        return os.environ['FORCE_CUDA'] == '1'
    nvcc = (
        shutil.which('nvcc') or (Path(os.environ.get('CUDA_HOME', '/nonexistent')) / 'bin' / 'nvcc').exists()
    )
    return bool(torch_cuda and has_device and nvcc)


def cache_key(torch_version: str, cuda: bool, torch_cuda: str | None) -> str:
    py = f'py{sys.version_info.major}{sys.version_info.minor}'
    if cuda:
        arch = os.environ.get('TORCH_CUDA_ARCH_LIST', 'native').replace(' ', '_').replace(';', '_')
        flavour = f'cu{torch_cuda}-arch{arch}'
    else:
        flavour = 'cpu'
    return f'mmcv-{MMCV_VERSION}-{py}-torch{torch_version}-{flavour}'


def smoke(cuda: bool, quiet_if_absent: bool = False) -> bool:
    if quiet_if_absent and importlib.util.find_spec('mmcv') is None:
        log('mmcv is not installed yet')
        return False
    code = SMOKE.format(version=MMCV_VERSION, cuda=cuda)
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    if proc.returncode == 0:
        log(proc.stdout.strip())
        return True
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['(no output)']
    log(f'smoke test failed: {tail[0]}')
    return False


def pip(*args: str) -> None:
    cmd = [sys.executable, '-m', 'pip', *args]
    subprocess.run(cmd, check=True)


def patch_setup_py(setup_py: Path) -> None:
    """Raise every hard-coded C++ standard to C++20 (torch >= 2.10 headers require it)."""
    text = setup_py.read_text()
    new, n = re.subn(r'-std=c\+\+1[47]', '-std=c++20', text)
    if n == 0 and '-std=c++20' not in text:
        sys.exit(
            f'[build_mmcv] {setup_py}: no -std=c++14/17 flag found to raise to C++20; '
            'the mmcv source layout changed, check MMCV_VERSION'
        )
    setup_py.write_text(new)
    log(f'patched {n} C++ standard flag(s) to -std=c++20 in setup.py')


def build_wheel(out_dir: Path, cuda: bool, source: str | None = None) -> Path:
    with tempfile.TemporaryDirectory(prefix='mmcv-build-') as tmp:
        tmp_path = Path(tmp)
        if source:  # an offline machine: the archive was brought along
            archive = Path(source)
        else:
            log(f'downloading the mmcv {MMCV_VERSION} source archive')
            pip(
                'download',
                '--no-deps',
                '--no-build-isolation',
                '--no-binary',
                ':all:',
                '-d',
                str(tmp_path),
                f'mmcv=={MMCV_VERSION}',
            )
            archive = next(tmp_path.glob('mmcv-*.tar.gz'))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp_path, filter='data')
        src = tmp_path / f'mmcv-{MMCV_VERSION}'
        patch_setup_py(src / 'setup.py')
        env = dict(os.environ)
        env['MMCV_WITH_OPS'] = '1'
        env['FORCE_CUDA'] = '1' if cuda else '0'
        env.setdefault('MAX_JOBS', str(os.cpu_count() or 1))
        log(
            f'compiling {"CUDA" if cuda else "CPU"} ops with MAX_JOBS={env["MAX_JOBS"]} '
            '(about 12 min on 2 cores for CPU ops)'
        )
        wheel_dir = tmp_path / 'wheel'
        subprocess.run(
            [
                sys.executable,
                '-m',
                'pip',
                'wheel',
                '--no-build-isolation',
                '--no-deps',
                '-w',
                str(wheel_dir),
                str(src),
            ],
            check=True,
            env=env,
        )
        wheel = next(wheel_dir.glob('mmcv-*.whl'))
        out_dir.mkdir(parents=True, exist_ok=True)
        dest = out_dir / wheel.name
        shutil.copy2(wheel, dest.with_suffix('.part'))
        os.replace(dest.with_suffix('.part'), dest)  # atomic: a killed build never leaves half a wheel
        return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='only run the ops smoke test')
    parser.add_argument('--source', help='mmcv source archive to build from (offline machines)')
    parser.add_argument(
        '--cache-dir', default=os.environ.get('MAE_DENSE_CACHE', str(Path.home() / '.cache' / 'mae-dense'))
    )
    args = parser.parse_args()

    torch_version, torch_cuda, has_device = torch_facts()
    cuda = want_cuda(torch_cuda, has_device)
    if args.check:
        if smoke(cuda):
            return 0
        print(
            '[build_mmcv] mmcv ops are not usable: run `make setup` again (it rebuilds mmcv); '
            'if the build itself fails, read its log above',
            file=sys.stderr,
        )
        return 1

    if smoke(cuda, quiet_if_absent=True):  # already installed and working: set-up stays idempotent and fast
        return 0
    key = cache_key(torch_version, cuda, torch_cuda)
    wheel_dir = Path(args.cache_dir) / 'wheels' / key
    wheels = sorted(wheel_dir.glob('mmcv-*.whl'))
    if wheels:
        log(f'using the cached wheel {wheels[-1]}')
    else:
        wheels = [build_wheel(wheel_dir, cuda, args.source)]
        log(f'cached {wheels[-1]}')
    pip('install', '--no-deps', '--force-reinstall', '-q', str(wheels[-1]))
    if not smoke(cuda):
        print(
            f'[build_mmcv] the mmcv wheel {wheels[-1]} installed but its ops do not work: delete '
            f'{wheel_dir} and run `make setup` again to rebuild it',
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
