import os
import socket

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


def _worker(rank, world, port, base, queries, k, sizes, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=world)
    try:
        start = sum(sizes[:rank])
        shard = base[start:start + sizes[rank]]
        index = ShardedIndex('flat').add(shard, start)
        q = queries if rank == 0 else torch.zeros_like(queries)
        scores, ids = index.search(q, k, src=0)
        torch.save((scores, ids), os.path.join(out_dir, f'{rank}.pt'))
    finally:
        dist.destroy_process_group()


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
        assert torch.equal(scores, ref_s)


def test_shard_range_covers():
    spans = [shard_range(10, r, 3) for r in range(3)]
    assert spans == [(0, 4), (4, 7), (7, 10)]
