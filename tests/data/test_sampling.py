import pytest
import torch

from ricea_pyg.data.sampling import NeighborSampler
from ricea_pyg.nn import GATEncoder
from ricea_pyg.nn.structure import CSRAdjacency


def _graph(n=200, e=800, seed=0):
    gen = torch.Generator().manual_seed(seed)
    head = torch.randint(n, (e,), generator=gen)
    # A hub: node 0 is the tail of a quarter of the edges.
    tail = torch.where(torch.rand(e, generator=gen) < 0.25,
                       torch.zeros(e, dtype=torch.long),
                       torch.randint(n, (e,), generator=gen))
    return torch.stack([head, tail]), n


def test_full_fanout_equals_full_graph():
    edge_index, n = _graph()
    full = CSRAdjacency(edge_index, n)
    max_deg = int((full.rowptr[1:] - full.rowptr[:-1]).max())
    sampler = NeighborSampler(edge_index, n, fanouts=[max_deg, max_deg])
    torch.manual_seed(0)
    enc = GATEncoder(8, num_layers=2, heads=2, diag=False, input_norm=False)
    x = torch.randn(n, 8)
    ref = enc(x, full)
    seeds = torch.tensor([5, 0, 17, 5, 199])
    sub = sampler.sample(seeds)
    out = enc(x[sub.nodes], sub.adjacency())[sub.seed_index]
    torch.testing.assert_close(out, ref[seeds], atol=1e-5, rtol=1e-5)


def test_fanout_caps_the_hub_and_keeps_small_nodes_whole():
    edge_index, n = _graph()
    sampler = NeighborSampler(edge_index, n, fanouts=[3])
    gen = torch.Generator().manual_seed(1)
    sub = sampler.sample(torch.tensor([0]), gen)
    assert sampler.degree[0] > 100
    # At most 3 distinct senders into the hub, plus the hub itself.
    assert 2 <= sub.num_nodes <= 4
    small = int(torch.nonzero(sampler.degree == 2)[0])
    sub = sampler.sample(torch.tensor([small]), gen)
    expect = set(sampler.col[sampler.rowptr[small]:sampler.rowptr[small + 1]]
                 .tolist())
    assert set(sub.nodes[1:].tolist()) == expect


def test_local_ids_and_reuse():
    edge_index, n = _graph()
    sampler = NeighborSampler(edge_index, n, fanouts=[4, 2])
    gen = torch.Generator().manual_seed(2)
    for seeds in (torch.arange(10), torch.tensor([3, 3, 150])):
        sub = sampler.sample(seeds, gen)
        assert torch.equal(sub.nodes[sub.seed_index], seeds)
        assert sub.nodes.unique().numel() == sub.num_nodes
        assert int(sub.edge_index.max()) < sub.num_nodes
        # Every sampled edge exists in the graph (either direction).
        g = sub.nodes[sub.edge_index]
        both = set(map(tuple, edge_index.t().tolist())) | set(
            map(tuple, edge_index.flip(0).t().tolist()))
        assert all(tuple(p) in both for p in g.t().tolist())
    assert bool((sampler._local == -1).all())  # map reset after each call


def test_deterministic_in_generator():
    edge_index, n = _graph()
    sampler = NeighborSampler(edge_index, n, fanouts=[2, 2])
    a = sampler.sample(torch.arange(20), torch.Generator().manual_seed(3))
    b = sampler.sample(torch.arange(20), torch.Generator().manual_seed(3))
    assert torch.equal(a.nodes, b.nodes)
    assert torch.equal(a.edge_index, b.edge_index)


def test_bad_input():
    edge_index, n = _graph()
    with pytest.raises(ValueError, match='fanouts'):
        NeighborSampler(edge_index, n, fanouts=[])
    with pytest.raises(ValueError, match='seeds'):
        NeighborSampler(edge_index, n).sample(torch.tensor([n]))
