"""Alignment search at scale on planted-alignment embeddings.

    python benchmarks/search.py --sizes 15000 100000 --dims 128 300
    python benchmarks/search.py --sizes 1000000 --dims 128 --kinds auto \
        --no-dense --clusters 1000 --noise 0.3

For each (N, d) and index kind: build time, top-1 search time, peak RSS,
recall@1 against exact search (on a sample of --recall-queries queries) and
Hits@1 of the planted alignment; then the full pipeline (CSLS k=3 with that
kind: r_s, r_t and the CSLS top-1) with its Hits@1. ``peak_rss_mb`` is the
peak above the start of the timed part; the sparse pipeline also reports
``process_peak_mb``, the whole process's peak during it (inputs included).
Rows print as a table, and as JSON lines with --json.

``--backends faiss torch`` times each exact kind on both backends (the
torch one is chunked matrix products, :func:`torch_topk`).

``--pipeline sparse`` times the scalable pipeline instead: one index over the
targets (the kNN: top-10 cosine candidates and r_s), one over the sources
(r_t), CSLS on the candidate pairs only (``sparse_csls_search``); its
``total_s`` is kNN + CSLS + Hits@1 from start to end:

    python benchmarks/search.py --sizes 1000000 --dims 128 --kinds auto \
        --no-dense --clusters 1000 --noise 0.3 --pipeline sparse --nprobe 16
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PeakMemory, emit, machine  # noqa: E402

from ricea_pyg.data import planted_embeddings  # noqa: E402
from ricea_pyg.search import (  # noqa: E402
    AlignmentIndex,
    csls_search,
    sparse_csls_search,
    torch_topk,
)


def run_sparse(kind, src, tgt, perm, exact_ids, sample, index_kwargs):
    cpu = torch.device('cpu')
    row = dict(kind=kind, N=src.size(0), d=src.size(1), pipeline='sparse')
    t = time.perf_counter()
    with PeakMemory(cpu) as mem:
        (_, c_ids), (_, knn) = sparse_csls_search(
            src, tgt, 1, csls_k=3, candidates=10, kind=kind,
            return_knn=True, progress=True, **index_kwargs)
        row['csls_hits@1'] = (c_ids[:, 0] == perm).float().mean().item()
    row['total_s'] = time.perf_counter() - t
    row['peak_rss_mb'] = mem.peak / 2**20
    row['process_peak_mb'] = (mem.base + mem.peak) / 2**20  # inputs too
    row['recall@1'] = (knn[sample, 0] == exact_ids).float().mean().item()
    row['hits@1'] = (knn[:, 0] == perm).float().mean().item()
    return row


def run_kind(kind, src, tgt, perm, exact_ids, sample, backend='auto',
             index_kwargs=None):
    cpu = torch.device('cpu')
    index_kwargs = index_kwargs or {}
    row = dict(kind=kind, N=src.size(0), d=src.size(1))
    with PeakMemory(cpu) as mem:
        t = time.perf_counter()
        if kind == 'dense-torch':
            ids = torch_topk(src, tgt, 1)[1][:, 0]
            row['build_s'] = 0.0
        else:
            index = AlignmentIndex(kind, backend=backend, **index_kwargs)
            index.add(tgt)
            row['build_s'] = time.perf_counter() - t
            row['chosen'], row['backend'] = index.chosen, index.backend
            t = time.perf_counter()
            ids = index.search(src, 1)[1][:, 0]
        row['search_s'] = time.perf_counter() - t
    row['peak_rss_mb'] = mem.peak / 2**20
    row['recall@1'] = (ids[sample] == exact_ids).float().mean().item()
    row['hits@1'] = (ids == perm).float().mean().item()
    if kind != 'dense-torch':
        t = time.perf_counter()
        with PeakMemory(cpu) as mem:
            c_ids = csls_search(src, tgt, 1, csls_k=3, kind=kind,
                                backend=backend)[1][:, 0]
        row['csls_pipeline_s'] = time.perf_counter() - t
        row['csls_peak_mb'] = mem.peak / 2**20
        row['csls_hits@1'] = (c_ids == perm).float().mean().item()
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', type=int, nargs='+', default=[15_000, 100_000])
    p.add_argument('--dims', type=int, nargs='+', default=[128, 300])
    p.add_argument('--kinds', nargs='+',
                   default=['flat', 'ivf', 'hnsw', 'auto'])
    p.add_argument('--no-dense', action='store_true')
    p.add_argument('--noise', type=float, default=0.6)
    p.add_argument('--clusters', type=int, default=0,
                   help='latent clusters (0 = isotropic, the ANN worst case)')
    p.add_argument('--spread', type=float, default=0.5)
    p.add_argument('--recall-queries', type=int, default=10_000)
    p.add_argument('--pipeline', choices=['exact', 'sparse'],
                   default='exact')
    p.add_argument('--nlist', type=int, default=None)
    p.add_argument('--nprobe', type=int, default=None)
    p.add_argument('--backends', nargs='+', default=['auto'],
                   choices=['auto', 'faiss', 'torch'],
                   help='AlignmentIndex backends to time (torch: exact '
                   'kinds only)')
    p.add_argument('--json', action='store_true')
    args = p.parse_args()
    if not args.json:
        print(f'# {machine()}')
    rows = []
    cols = ['kind', 'chosen', 'backend', 'N', 'd', 'build_s', 'search_s', 'peak_rss_mb',
            'recall@1', 'hits@1', 'csls_pipeline_s', 'csls_peak_mb',
            'csls_hits@1', 'pipeline', 'total_s', 'process_peak_mb']
    for n in args.sizes:
        for d in args.dims:
            src, tgt, pairs = planted_embeddings(
                n, d, args.noise, seed=0, num_clusters=args.clusters,
                cluster_spread=args.spread)
            perm = pairs[1]
            gen = torch.Generator().manual_seed(1)
            sample = torch.randperm(n, generator=gen)[:args.recall_queries]
            exact_ids = torch_topk(src[sample], tgt, 1)[1][:, 0]
            kinds = list(args.kinds) + ([] if args.no_dense else
                                        ['dense-torch'])
            index_kwargs = {k: v for k, v in (('nlist', args.nlist),
                                              ('nprobe', args.nprobe))
                            if v is not None}
            for kind in kinds:
                # The sparse pipeline and dense-torch have no backend choice.
                for backend in (args.backends if kind != 'dense-torch' and
                                args.pipeline == 'exact' else ['auto']):
                    if args.pipeline == 'sparse' and kind != 'dense-torch':
                        rows.append(run_sparse(kind, src, tgt, perm,
                                               exact_ids, sample,
                                               index_kwargs))
                    else:
                        rows.append(run_kind(kind, src, tgt, perm, exact_ids,
                                             sample, backend, index_kwargs))
                    emit(rows[-1:], args.json, cols if not args.json else [])
    if not args.json:
        print('\nAll rows')
        emit(rows, False, cols)


if __name__ == '__main__':
    main()
