import io
import os
import socket
from contextlib import contextmanager, redirect_stderr
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ricea_pyg.search import AlignmentIndex, ShardedIndex, shard_range

pytestmark = pytest.mark.distributed


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@contextmanager
def _gloo_shard(rank, world, port, base, sizes):
    """This rank's process group and ``(offset, shard)`` of :obj:`base`."""
    torch.set_num_threads(1)
    # A timeout turns a collective that one rank never joins into an error
    # instead of a hung test.
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        start = sum(sizes[:rank])
        yield start, base[start:start + sizes[rank]]
    finally:
        dist.destroy_process_group()


def _worker(rank, world, port, base, queries, k, sizes, out_dir):
    with _gloo_shard(rank, world, port, base, sizes) as (start, shard):
        index = ShardedIndex('flat').add(shard, start)
        q = queries if rank == 0 else torch.zeros_like(queries)
        scores, ids = index.search(q, k, src=0)
        torch.save((scores, ids), os.path.join(out_dir, f'{rank}.pt'))


@pytest.mark.parametrize('sizes,k', [((100, 100), 5), ((170, 30), 5),
                                     ((197, 3), 10)])
def test_two_process_search_equals_single_process(tmp_path, sizes, k):
    gen = torch.Generator().manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(sum(sizes), 16,
                                                     generator=gen), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(40, 16,
                                                        generator=gen), dim=1)
    mp.spawn(_worker, args=(2, _free_port(), base, queries, k, sizes,
                            str(tmp_path)), nprocs=2, join=True)
    ref_s, ref_i = AlignmentIndex('flat').add(base).search(queries, k)
    for rank in range(2):
        scores, ids = torch.load(tmp_path / f'{rank}.pt')
        assert torch.equal(ids, ref_i)
        # The same products, but BLAS may block a 197-row shard and the
        # 200-row table differently (seen on a 2026-12-07 machine): the
        # last bit can differ, the ranking cannot.
        assert torch.allclose(scores, ref_s, rtol=0, atol=1e-6)


def test_shard_range_covers():
    spans = [shard_range(10, r, 3) for r in range(3)]
    assert spans == [(0, 4), (4, 7), (7, 10)]


#: 3 query rows per chunk of float32 scores against 110 targets, 33
#: against 10: uneven shards want different chunks.
TINY_BUDGET = 3 * 110 * 4


def _csls_worker(rank, world, port, base, queries, truth, sizes, out_dir):
    import ricea_pyg.search.index as index_module
    from ricea_pyg.search import sharded_csls_search, sharded_true_ranks
    with _gloo_shard(rank, world, port, base, sizes) as (start, shard):
        q = queries if rank == 0 else torch.zeros_like(queries)
        t = truth if rank == 0 else torch.zeros_like(truth)
        out = {}
        for csls_k in (0, 3):
            out[csls_k] = (sharded_csls_search(q.clone(), shard, start, 4,
                                               csls_k),
                           sharded_true_ranks(q.clone(), shard, start,
                                              t.clone(), csls_k,
                                              batch_size=7),
                           sharded_true_ranks(q.clone(), shard, start,
                                              t.clone(), csls_k,
                                              max_bytes=TINY_BUDGET))
        index_module.PROGRESS_WORK = 0  # every call counts as long
        for progress in (False, True):
            err = io.StringIO()
            with redirect_stderr(err):
                sharded_csls_search(q.clone(), shard, start, 4, 3,
                                    progress=progress)
                sharded_true_ranks(q.clone(), shard, start, t.clone(), 3,
                                   progress=progress)
            out[f'stderr_{progress}'] = err.getvalue()
        torch.save(out, os.path.join(out_dir, f'{rank}.pt'))


@pytest.mark.parametrize('sizes', [(60, 60), (110, 10)])
def test_two_process_csls_and_ranks_equal_single_process(tmp_path, sizes):
    from ricea_pyg.search import csls_search, true_ranks
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(sum(sizes), 8, generator=gen)
    truth = torch.randperm(sum(sizes), generator=gen)[:30]
    queries = base[truth] + 0.8 * torch.randn(30, 8, generator=gen)
    queries[0] = base[truth[0]]  # exact duplicate: tie handling
    mp.spawn(_csls_worker, args=(2, _free_port(), base, queries, truth,
                                 sizes, str(tmp_path)), nprocs=2, join=True)
    for csls_k in (0, 3):
        ref_s, ref_i = csls_search(queries, base, 4, csls_k)
        ref_r = true_ranks(queries, base, truth, csls_k, batch_size=7)
        one_chunk = true_ranks(queries, base, truth, csls_k, batch_size=30,
                               max_bytes=2**40)
        assert torch.equal(one_chunk, ref_r)
        for rank in range(2):
            out = torch.load(tmp_path / f'{rank}.pt')
            (scores, ids), ranks, tiny = out[csls_k]
            assert torch.equal(ids, ref_i)
            assert torch.allclose(scores, ref_s, atol=1e-6)
            assert torch.equal(ranks, ref_r)
            assert torch.equal(tiny, one_chunk)  # many chunks, same ranks
    for rank in range(2):
        out = torch.load(tmp_path / f'{rank}.pt')
        assert out['stderr_False'] == ''
        assert '%|' in out['stderr_True']  # a tqdm bar
