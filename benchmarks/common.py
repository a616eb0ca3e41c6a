"""Timing helpers shared by the benchmarks: warm-up, synchronised timing, peak memory, ratio lines."""

from __future__ import annotations

import ctypes
import gc
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch


def device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)'


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, warmup: int = 2, iters: int = 5) -> dict:
    """Median seconds per call and peak memory (CUDA: allocator peak; CPU: not measured)."""
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else None
    return dict(seconds=statistics.median(times), peak_gib=peak)


class Memory:
    """Peak memory of a code region (``start()`` ... ``stop()``): CUDA allocator; CPU resident set (Linux).

    On CPU the process's peak resident set (``VmHWM``) is reset through ``/proc/self/clear_refs`` at
    ``start``, after the freed heap is returned to the system (``malloc_trim``), so the working memory is
    the peak during the region minus the resident memory at its start. Run one implementation per
    process: memory one run frees stays mapped and would hide the next run's allocations.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0

    def start(self) -> None:
        gc.collect()
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        try:
            ctypes.CDLL('libc.so.6').malloc_trim(0)
        except OSError:
            pass
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset VmHWM to the current resident set
        self.base = _proc_status_kib('VmRSS') * 1024

    def stop(self) -> dict:
        """``peak_gib`` (whole process / allocator), ``work_gib`` (peak minus the start), ``base_gib``."""
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _proc_status_kib('VmHWM') * 1024
        return dict(peak_gib=peak / 2**30, work_gib=(peak - self.base) / 2**30, base_gib=self.base / 2**30)


def _proc_status_kib(key: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'/proc/self/status has no {key}: peak resident memory needs Linux')


def report(title: str, rows: dict[str, dict], baseline: str, per: int = 1, unit: str = 'img') -> dict:
    """Print a table with ratios against ``baseline`` (>1 means faster / less memory than it)."""
    base = rows[baseline]
    print(f'\n{title}')
    print(f'  {"impl":<40} {"s/iter":>9} {unit + "/s":>9} {"speed-up":>9} {"peak GiB":>9} {"mem ratio":>9}')
    for name, r in rows.items():
        speed = base['seconds'] / r['seconds']
        mem = (
            (f'{r["peak_gib"]:.2f}', f'{base["peak_gib"] / r["peak_gib"]:.2f}x')
            if r['peak_gib']
            else ('-', '-')
        )
        r['speedup_vs_' + baseline] = speed
        print(
            f'  {name:<40} {r["seconds"]:>9.4f} {per / r["seconds"]:>9.2f} {speed:>8.2f}x {mem[0]:>9} {mem[1]:>9}'
        )
    return rows


def dump(path: str | None, payload: dict) -> None:
    if path:
        with open(path, 'w') as f:
            json.dump(payload, f, indent=2, default=str)
