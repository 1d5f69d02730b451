"""Peak memory of exact ranks: ``true_ranks`` in one process against
``sharded_true_ranks`` over gloo processes on 127.0.0.1.

    python benchmarks/rank_memory.py --queries 10000 --targets 1000000 \
        --dim 64 --csls 0 3

Both run the same chunked kernel (``rank_counts``), so both should stay
within ``SCORE_CHUNK_BYTES`` (512 MiB) of scores per process, plus the
ℓ2-normalised copy of their targets (and, with CSLS, the augmented copy and
``r_t``). ``peak_rss_mib`` is the peak resident set size above the start of
the call, sampled every 2 ms in a thread of each process (``PeakMemory``);
the inputs (queries, truth, the process's targets) exist before the start
and are not counted. ``sum_mib`` adds the processes' peaks. Every sharded
process builds its own shard from per-block seeds, so no process ever holds
all targets; the sharded ranks are checked equal to the one-process ranks.
Timings are indicative only (shared CPUs); one process uses all threads,
each of the ``--world`` processes an equal share.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PeakMemory, emit, machine  # noqa: E402

from ricea_pyg.search import (  # noqa: E402
    shard_range,
    sharded_true_ranks,
    true_ranks,
)
from ricea_pyg.search.csls import rank_chunk_rows  # noqa: E402

BLOCK = 1 << 16  # rows of targets drawn from one seed


def target_rows(start: int, end: int, dim: int, seed: int) -> torch.Tensor:
    """Rows ``start:end`` of the target matrix, the same whichever process
    draws them (one generator seed per block of :data:`BLOCK` rows)."""
    out = torch.empty(max(0, end - start), dim)
    for b in range(start // BLOCK, (end + BLOCK - 1) // BLOCK):
        lo, hi = max(start, b * BLOCK), min(end, (b + 1) * BLOCK)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + b)
        block = torch.randn(BLOCK, dim, generator=gen)
        out[lo - start:hi - start] = block[lo - b * BLOCK:hi - b * BLOCK]
    return out


def planted_queries(targets: torch.Tensor, num_queries: int, noise: float,
                    seed: int):
    """ℓ2-normalised noisy copies of random distinct targets, and which."""
    gen = torch.Generator().manual_seed(seed)
    truth = torch.randperm(targets.size(0), generator=gen)[:num_queries]
    queries = targets[truth] + noise * torch.randn(
        truth.numel(), targets.size(1), generator=gen)
    return F.normalize(queries, dim=1), truth


def _worker(rank, world, port, args, queries, truth, threads, out_dir):
    torch.set_num_threads(threads)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=world,
                            timeout=timedelta(minutes=30))
    try:
        start, end = shard_range(args.targets, rank, world)
        shard = target_rows(start, end, args.dim, args.seed)
        rows = []
        for csls_k in args.csls:
            dist.barrier()
            t = time.perf_counter()
            with PeakMemory(torch.device('cpu')) as mem:
                ranks = sharded_true_ranks(queries, shard, start, truth,
                                           csls_k, src=None, progress=False)
            rows.append(dict(csls_k=csls_k, rank=rank, shard=end - start,
                             peak=mem.peak, time_s=time.perf_counter() - t,
                             ranks=ranks))
        torch.save(rows, os.path.join(out_dir, f'{rank}.pt'))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--queries', type=int, default=10_000)
    p.add_argument('--targets', type=int, default=1_000_000)
    p.add_argument('--dim', type=int, default=64)
    p.add_argument('--csls', type=int, nargs='+', default=[0, 3],
                   help='CSLS neighbourhoods to run (0 = cosine)')
    p.add_argument('--world', type=int, default=2,
                   help='gloo processes for the sharded run')
    p.add_argument('--noise', type=float, default=1.0)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', action='store_true')
    args = p.parse_args()
    threads = torch.get_num_threads()
    if not args.json:
        print(f'# {machine()}')
    mib = 2**20
    targets = target_rows(0, args.targets, args.dim, args.seed)
    queries, truth = planted_queries(targets, args.queries, args.noise,
                                     args.seed + 1)
    out, local = [], {}
    cols = ['path', 'csls_k', 'processes', 'threads', 'targets_per_proc',
            'chunk_rows', 'peak_rss_mib', 'sum_mib', 'time_s', 'hits@1',
            'equal']
    for csls_k in args.csls:
        t = time.perf_counter()
        with PeakMemory(torch.device('cpu')) as mem:
            local[csls_k] = true_ranks(queries, targets, truth, csls_k,
                                       progress=False)
        out.append(dict(
            path='true_ranks', csls_k=csls_k, processes=1, threads=threads,
            targets_per_proc=args.targets,
            chunk_rows=rank_chunk_rows(4096, args.targets),
            peak_rss_mib=mem.peak / mib, sum_mib=mem.peak / mib,
            time_s=time.perf_counter() - t,
            **{'hits@1': (local[csls_k] == 1).float().mean().item()}))
        emit(out[-1:], args.json, cols)
    del targets
    with tempfile.TemporaryDirectory() as tmp:
        per_proc = max(1, threads // args.world)
        mp.spawn(_worker, args=(args.world, _free_port(), args, queries,
                                truth, per_proc, tmp),
                 nprocs=args.world, join=True)
        results = [torch.load(os.path.join(tmp, f'{r}.pt'))
                   for r in range(args.world)]
    for i, csls_k in enumerate(args.csls):
        rows = [res[i] for res in results]
        largest = max(r['shard'] for r in rows)
        out.append(dict(
            path='sharded_true_ranks', csls_k=csls_k, processes=args.world,
            threads=per_proc, targets_per_proc=largest,
            chunk_rows=rank_chunk_rows(4096, largest),
            peak_rss_mib=max(r['peak'] for r in rows) / mib,
            sum_mib=sum(r['peak'] for r in rows) / mib,
            time_s=max(r['time_s'] for r in rows),
            equal=all(torch.equal(r['ranks'], local[csls_k])
                      for r in rows),
            **{'hits@1': (rows[0]['ranks'] == 1).float().mean().item()}))
        emit(out[-1:], args.json, cols)
    if not args.json:
        print('\nAll rows (peak_rss_mib: the largest process; sum_mib: all '
              'processes together; equal: sharded ranks == one-process '
              'ranks)')
        emit(out, False, cols)


if __name__ == '__main__':
    main()
