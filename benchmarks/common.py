"""Timing and memory helpers shared by the benchmark scripts."""
from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from typing import Callable, Dict, List

import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
           else 'no GPU')
    return (f'{os.cpu_count()} cores ({cpu}), torch {torch.__version__} '
            f'{torch.get_num_threads()} threads, {gpu}')


def rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


class PeakMemory:
    """Peak memory above the starting point: CUDA allocator stats on GPU,
    sampled resident set size (every 2 ms) on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0

    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = rss_bytes()
            self.top = self.base
            self.running = True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.top = max(self.top, rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.running = False
            self.thread.join()
            self.peak = max(self.top, rss_bytes()) - self.base


def median_time(fn: Callable[[], None], device: torch.device,
                warmup: int = 2, repeats: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times: List[float] = []
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def emit(rows: List[Dict], as_json: bool, columns: List[str]) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows))
              for c in columns]
    print('  '.join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print('  '.join(_fmt(r.get(c)).ljust(w) for c, w in
                        zip(columns, widths)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f'{v:.4g}'
    return '' if v is None else str(v)
