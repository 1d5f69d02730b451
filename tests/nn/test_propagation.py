import math

import pytest
import torch
import torch.nn.functional as F

from ricea_pyg.nn.propagation import (
    FeaturePropagation,
    PropagationGraph,
    SeedLabelPropagation,
)

from .test_relational import R, tiny_triples


def dense_weighted(edge_index, edge_type, n):
    """Loop reference of the rarity-weighted, row-normalised adjacency."""
    count = torch.bincount(edge_type, minlength=R).double()
    a = torch.eye(n, dtype=torch.float64)
    for (h, t), r in zip(edge_index.t().tolist(), edge_type.tolist()):
        w = math.log(edge_type.numel() / count[r].item())
        a[h, t] += w
        a[t, h] += w
    return (a / a.sum(1, keepdim=True)).float()


def dense_views(edge_index, edge_type, n):
    """Neighbour counts, the binary entity-relation incidence and the
    relations of each directed edge ``[n, n, 2R]``, by loops."""
    a = torch.zeros(n, n)
    b = torch.zeros(n, 2 * R)
    w = torch.zeros(n, n, 2 * R)
    for (h, t), r in zip(edge_index.t().tolist(), edge_type.tolist()):
        a[h, t] += 1
        a[t, h] += 1
        b[h, r] = b[t, r + R] = 1
        w[h, t, r] = w[t, h, r + R] = 1
    return a, b, w


def test_graph_matches_dense_reference():
    ei, et, n = tiny_triples()
    graph = PropagationGraph(ei, et, n, R)
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(graph.smooth(x), dense_weighted(ei, et, n) @ x,
                          atol=1e-6)
    a, b, w = dense_views(ei, et, n)
    assert torch.allclose(graph.neighbours.matrix(graph.neighbour_count)
                          .to_dense(), a)
    assert torch.allclose(graph.incidence.matrix().to_dense(), b)
    rels = graph.neighbour_relations.matrix().to_dense()
    pos = graph.neighbours.row * n + graph.neighbours.col
    assert torch.equal(rels, w.reshape(n * n, 2 * R)[pos])
    assert 'num_nodes=6' in repr(graph)


def test_feature_propagation_matches_dense_reference():
    ei, et, n = tiny_triples()
    graph = PropagationGraph(ei, et, n, R)
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(1))
    x[5] = 0  # a missing feature
    out = FeaturePropagation(hops=2)(x, graph)
    a = dense_weighted(ei, et, n)
    h0 = F.normalize(x, dim=1)
    h1 = F.normalize(a @ h0, dim=1)
    h2 = F.normalize(a @ h1, dim=1)
    ref = torch.cat([h0, h1, h2], dim=1) / math.sqrt(3)
    assert out.shape == (n, 15)
    assert torch.allclose(out, ref, atol=1e-6)
    # Unit rows, and the cosine is the mean of the hops' cosines.
    assert torch.allclose(out[:5].norm(dim=1), torch.ones(5), atol=1e-6)
    cos = out[0] @ out[1]
    hops = [(h[0] @ h[1]) for h in (h0, h1, h2)]
    assert torch.allclose(cos, torch.stack(hops).mean(), atol=1e-6)
    # The isolated, featureless entity stays zero: nothing to borrow.
    assert out[5].abs().sum() == 0
    assert repr(FeaturePropagation(3)) == 'FeaturePropagation(hops=3)'


def test_feature_propagation_hops_zero_is_normalisation():
    ei, et, n = tiny_triples()
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(2))
    out = FeaturePropagation(hops=0)(x, PropagationGraph(ei, et, n, R))
    assert torch.allclose(out, F.normalize(x, dim=1))


def test_feature_propagation_bad_input():
    ei, et, n = tiny_triples()
    graph = PropagationGraph(ei, et, n, R)
    with pytest.raises(ValueError, match='NaN'):
        x = torch.randn(n, 3)
        x[2, 1] = float('nan')
        FeaturePropagation()(x, graph)
    with pytest.raises(ValueError, match=r'N = 6'):
        FeaturePropagation()(torch.randn(4, 3), graph)
    with pytest.raises(ValueError, match='hops'):
        FeaturePropagation(hops=-1)
    with pytest.raises(ValueError, match='num_nodes'):
        PropagationGraph(ei, et, 4, R)
    with pytest.raises(ValueError, match='num_relations'):
        PropagationGraph(ei, et, n, 2)


def lightea_reference(ei, et, n, seeds, d, hops, heads, m, gen):
    """LightEA's three views written out densely, every product formed."""
    labels = F.normalize(torch.randn(seeds.size(1), d, generator=gen), dim=1)
    u = F.normalize(torch.randn((hops + 1) * d, heads, generator=gen), dim=1)
    v = F.normalize(torch.randn((hops + 1) * d, heads, m, generator=gen),
                    dim=2)
    a, b, w = dense_views(ei, et, n)
    a = a + torch.diag(2 * a.sum(1))
    swap = torch.cat([torch.arange(R, 2 * R), torch.arange(R)])
    ent = torch.zeros(n, d)
    ent[seeds[0]] = labels
    ent[seeds[1]] = labels
    rel = torch.zeros(2 * R, d)
    ents, rels = [ent], [rel]
    for _ in range(hops):
        ent, rel = (F.normalize(a @ ent + b @ rel[swap], dim=1),
                    F.normalize(b.t() @ ent, dim=1))
        ents.append(ent)
        rels.append(rel)
    e = F.normalize(torch.cat(ents, 1), dim=1)
    r = F.normalize(torch.cat(rels, 1), dim=1)
    edge = w @ (r @ u)  # [n, n, heads]
    out = torch.stack([edge[:, :, h] @ (e @ v[:, h]) for h in range(heads)],
                      dim=1)
    return F.normalize(out.reshape(n, heads * m), dim=1)


@pytest.mark.parametrize('hops', [1, 2])
def test_seed_labels_match_dense_reference(hops, monkeypatch):
    from ricea_pyg.nn import propagation
    monkeypatch.setattr(propagation, '_BLOCK_COLUMNS', 8)  # several blocks
    ei, et, n = tiny_triples()
    graph = PropagationGraph(ei, et, n, R)
    seeds = torch.tensor([[0, 2], [3, 4]])
    layer = SeedLabelPropagation(channels=8, hops=hops, heads=5,
                                 head_channels=3)
    out = layer(seeds, graph, torch.Generator().manual_seed(3))
    ref = lightea_reference(ei, et, n, seeds, 8, hops, 5, 3,
                            torch.Generator().manual_seed(3))
    assert out.shape == (n, 15) and layer.out_channels == 15
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.isfinite(out).all()
    assert repr(layer) == (f'SeedLabelPropagation(8, hops={hops}, heads=5, '
                           'head_channels=3)')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_seed_labels_built_in_a_half_type_match_the_reference(dtype,
                                                             monkeypatch):
    # Built in place in the half type (no float32 copy of the output), over
    # several blocks of heads: the reference rounded once, within a few
    # units of the type's last place.
    from ricea_pyg.nn import propagation
    monkeypatch.setattr(propagation, '_BLOCK_COLUMNS', 6)
    monkeypatch.setattr(propagation, '_BLOCK_ROWS', 4)
    # Edge weights a million times larger leave the normalised output as it
    # is, but overflow float16 unless each row is scaled before it is
    # stored.
    init = propagation._LabelViews.__init__

    def large_weights(self, graph):
        init(self, graph)
        self.edge_relations = self.edge_relations * 1e6

    monkeypatch.setattr(propagation._LabelViews, '__init__', large_weights)
    ei, et, n = tiny_triples()
    graph = PropagationGraph(ei, et, n, R)
    seeds = torch.tensor([[0, 2], [3, 4]])
    layer = SeedLabelPropagation(channels=8, hops=2, heads=5,
                                 head_channels=3)
    out = layer(seeds, graph, torch.Generator().manual_seed(3), dtype=dtype)
    ref = lightea_reference(ei, et, n, seeds, 8, 2, 5, 3,
                            torch.Generator().manual_seed(3))
    assert out.dtype == dtype and out.shape == ref.shape
    eps = torch.finfo(dtype).eps
    assert ((out.float() - ref).abs() <= eps * ref.abs() + 1e-6).all()
    nonzero = ref.norm(dim=1) > 0
    assert torch.allclose(out.float().norm(dim=1)[nonzero],
                          torch.ones(int(nonzero.sum())), atol=2 * eps)
    with pytest.raises(ValueError, match='dtype'):
        layer(seeds, graph, dtype=torch.int64)


def test_seed_labels_find_counterparts_in_an_isomorphic_copy():
    # KG 2 is KG 1 with its entities permuted: every counterpart of an
    # unseeded entity gets exactly that entity's row.
    gen = torch.Generator().manual_seed(4)
    n1, e = 40, 120
    ei1 = torch.randint(0, n1, (2, e), generator=gen)
    et1 = torch.randint(0, R, (e,), generator=gen)
    perm = torch.randperm(n1, generator=gen)
    ei = torch.cat([ei1, perm[ei1] + n1], dim=1)
    et = torch.cat([et1, et1 + R])
    graph = PropagationGraph(ei, et, 2 * n1, 2 * R)
    seeded = torch.arange(0, n1, 3)
    seeds = torch.stack([seeded, perm[seeded] + n1])
    out = SeedLabelPropagation(channels=16, hops=2, heads=8)(seeds, graph,
                                                              gen)
    assert torch.allclose(out[:n1], out[perm + n1], atol=1e-5)
    with pytest.raises(ValueError, match='seed_pairs'):
        SeedLabelPropagation()(torch.tensor([[0], [99]]), graph)
    with pytest.raises(ValueError, match='channels'):
        SeedLabelPropagation(channels=0)
    with pytest.raises(ValueError, match='heads'):
        SeedLabelPropagation(heads=0)
