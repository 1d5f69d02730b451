import pytest
import torch

from ricea_pyg.nn.relational import (
    RelationalAdjacency,
    RelationalReflectionConv,
    RelationAwareEncoder,
)

R = 3  # relations in the tiny graph


def tiny_triples():
    """6 entities, 3 relations; a duplicate triple, two relations between
    one pair, a self-loop triple and an isolated entity (5)."""
    edge_index = torch.tensor([[0, 0, 0, 1, 2, 3, 3, 4],
                               [1, 1, 1, 2, 0, 4, 3, 0]])
    edge_type = torch.tensor([0, 0, 2, 1, 1, 2, 0, 1])
    return edge_index, edge_type, 6


def directed_edges(edge_index, edge_type):
    """The distinct (sender, receiver, type) edges with reverses, as a set."""
    edges = set()
    for (h, t), r in zip(edge_index.t().tolist(), edge_type.tolist()):
        edges.add((h, t, r))
        edges.add((t, h, r + R))
    return sorted(edges)


def dense_conv(x, edges, rel, att):
    """Loop reference: softmax over each receiver's in-edges, reflect."""
    r = rel / rel.norm(dim=-1, keepdim=True)
    out = []
    for i in range(x.size(0)):
        ins = [(s, t) for s, d, t in edges if d == i]
        if not ins:
            out.append(torch.zeros_like(x[0]))
            continue
        alpha = torch.stack([r[t] @ att for _, t in ins]).softmax(0)
        out.append(sum(a * (x[s] - 2 * (x[s] @ r[t]) * r[t])
                       for a, (s, t) in zip(alpha, ins)))
    return torch.stack(out)


def dense_encoder(enc, x, edge_index, edge_type):
    edges = directed_edges(edge_index, edge_type)
    n, rel = x.size(0), enc.rel_emb
    h_ent, h_rel = [], []
    for i in range(n):
        nbrs = {i} | {s for s, d, _ in edges if d == i and s != i}
        h_ent.append(torch.stack([x[j] for j in sorted(nbrs)]).mean(0))
        types = [t for _, d, t in edges if d == i]
        h_rel.append(torch.stack([rel[t] for t in types]).mean(0) if types
                     else torch.zeros_like(rel[0]))
    outs = []
    for h, convs in ((torch.stack(h_ent), enc.entity_convs),
                     (torch.stack(h_rel), enc.relation_convs)):
        h = torch.tanh(h)
        outs.append(h)
        for conv in convs:
            h = torch.tanh(dense_conv(h, edges, rel, conv.att))
            outs.append(h)
    out = torch.cat(outs, -1)
    return enc.lin(out) if enc.lin is not None else out


def test_adjacency_adds_reverses_and_collapses_duplicates():
    edge_index, edge_type, n = tiny_triples()
    g = RelationalAdjacency(edge_index, edge_type, n, R)
    got = sorted(zip(*g.edge_index.tolist(), g.edge_type.tolist()))
    assert got == directed_edges(edge_index, edge_type)
    assert g.num_edges == 14  # 8 triples, 1 duplicate, both directions
    # Sorted by receiver, then type, then sender.
    key = (g.edge_index[1] * 2 * R + g.edge_type) * n + g.edge_index[0]
    assert torch.equal(key, key.sort()[0])
    # The pattern positions point back at each edge's pair.
    assert torch.equal(g.pair.row[g.edge_pair], g.edge_index[1])
    assert torch.equal(g.src_type.col[g.edge_src_type], g.edge_type)
    assert torch.equal(g.dst_type.row[g.edge_dst_type], g.edge_index[1])
    assert repr(g) == ('RelationalAdjacency(num_nodes=6, num_relations=3, '
                       'num_edges=14)')
    moved = g.to('cpu')
    assert torch.equal(moved.edge_index, g.edge_index)
    assert torch.equal(moved.dst_type.matrix().to_dense(),
                       g.dst_type.matrix().to_dense())


def test_adjacency_errors():
    edge_index, edge_type, n = tiny_triples()
    with pytest.raises(ValueError, match=r'outside \[0, 2\)'):
        RelationalAdjacency(edge_index, edge_type, n, 2)
    with pytest.raises(ValueError, match=r'outside \[0, 4\)'):
        RelationalAdjacency(edge_index, edge_type, 4, R)
    with pytest.raises(ValueError, match=r'edge_type must be \[E\]'):
        RelationalAdjacency(edge_index, edge_type[:-1], n, R)
    with pytest.raises(ValueError, match=r'\[2, E\]'):
        RelationalAdjacency(edge_index.t(), edge_type, n, R)


def test_conv_matches_dense_reference_values_and_grads():
    torch.manual_seed(0)
    edge_index, edge_type, n = tiny_triples()
    g = RelationalAdjacency(edge_index, edge_type, n, R)
    conv = RelationalReflectionConv(4)
    x = torch.randn(n, 4, requires_grad=True)
    rel = torch.randn(2 * R, 4, requires_grad=True)
    params = [x, rel, conv.att]
    edges = directed_edges(edge_index, edge_type)
    runs = {
        'sparse': lambda: conv(x, g, rel=rel),
        'message passing': lambda: conv(x, g.edge_index, g.edge_type,
                                        rel=rel),
        'dense': lambda: dense_conv(x, edges, rel, conv.att),
    }
    outs, grads = {}, {}
    for name, run in runs.items():
        outs[name] = run()
        grads[name] = torch.autograd.grad((outs[name] ** 3).sum(), params)
    assert outs['dense'][5].abs().max() == 0  # isolated: nothing arrives
    for name in ('sparse', 'message passing'):
        assert torch.allclose(outs[name], outs['dense'], atol=1e-5), name
        for a, b in zip(grads[name], grads['dense']):
            assert torch.allclose(a, b, atol=1e-5), name


def test_conv_gradcheck_sparse_path():
    edge_index, edge_type, n = tiny_triples()
    g = RelationalAdjacency(edge_index, edge_type, n, R)
    conv = RelationalReflectionConv(3).double()
    x = torch.randn(n, 3, dtype=torch.double, requires_grad=True)
    rel = torch.randn(2 * R, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: conv(a, g, rel=b),
                                    (x, rel))


def test_reflection_keeps_norms():
    # One in-edge per receiver: the output is the reflected sender.
    edge_index = torch.tensor([[0, 1], [1, 2]])
    g = RelationalAdjacency(edge_index, torch.tensor([0, 1]), 3, 2)
    conv = RelationalReflectionConv(5)
    x, rel = torch.randn(3, 5), torch.randn(4, 5)
    out = conv(x, g, rel=rel)
    # Entity 0 receives only from 1 (type 2), entity 2 only from 1 (type 1).
    assert torch.allclose(out[0].norm(), x[1].norm(), atol=1e-5)
    assert torch.allclose(out[2].norm(), x[1].norm(), atol=1e-5)
    assert not torch.allclose(out[0], x[1], atol=1e-3)


@pytest.mark.parametrize('out_channels', [None, 7])
def test_encoder_matches_dense_reference(out_channels):
    torch.manual_seed(0)
    edge_index, edge_type, n = tiny_triples()
    enc = RelationAwareEncoder(R, channels=4, num_layers=2,
                               out_channels=out_channels)
    x = torch.randn(n, 4, requires_grad=True)
    params = [x] + list(enc.parameters())
    g = RelationalAdjacency(edge_index, edge_type, n, R)
    ref = dense_encoder(enc, x, edge_index, edge_type)
    ref_grads = torch.autograd.grad((ref ** 3).sum(), params)
    for out in (enc(x, g), enc(x, edge_index, edge_type)):
        assert out.shape == (n, out_channels or 2 * 3 * 4)
        assert torch.allclose(out, ref, atol=1e-5)
        grads = torch.autograd.grad((out ** 3).sum(), params)
        for a, b in zip(grads, ref_grads):
            assert torch.allclose(a, b, atol=1e-5)


def test_encoder_repr_reset_and_errors():
    enc = RelationAwareEncoder(5, channels=8)
    assert repr(enc) == 'RelationAwareEncoder(5, channels=8, num_layers=2)'
    assert repr(RelationAwareEncoder(5, 8, 1, out_channels=3, dropout=0.1)) \
        == ('RelationAwareEncoder(5, channels=8, num_layers=1, '
            'out_channels=3, dropout=0.1)')
    assert repr(enc.entity_convs[0]) == 'RelationalReflectionConv(8)'
    assert enc.rel_emb.shape == (10, 8)
    for p in enc.parameters():
        torch.nn.init.zeros_(p)
    enc.reset_parameters()
    for p in enc.parameters():
        assert p.abs().min() > 0 or p.numel() == 0
        assert p.abs().max() <= (6 / (8 + 1)) ** 0.5
    x = torch.randn(4, 8)
    edge_index, edge_type = torch.tensor([[0], [1]]), torch.tensor([2])
    with pytest.raises(ValueError, match=r'x must be \[N, 8\] \(got'):
        enc(torch.randn(4, 6), edge_index, edge_type)
    with pytest.raises(ValueError, match='edge_type is required'):
        enc(x, edge_index)
    with pytest.raises(ValueError, match='edge_type is required'):
        enc.entity_convs[0](x, edge_index, rel=enc.rel_emb)
    g = RelationalAdjacency(edge_index, edge_type, 3, 5)
    with pytest.raises(ValueError, match='expected 4 and 5'):
        enc(x, g)


def test_encoder_dropout_only_in_training():
    torch.manual_seed(0)
    edge_index, edge_type, n = tiny_triples()
    enc = RelationAwareEncoder(R, channels=4, dropout=0.5)
    x = torch.randn(n, 4)
    g = RelationalAdjacency(edge_index, edge_type, n, R)
    enc.eval()
    assert torch.equal(enc(x, g), enc(x, g))
    enc.train()
    assert (enc(x, g) == 0).float().mean() > 0.2


def test_empty_graph():
    torch.manual_seed(0)
    enc = RelationAwareEncoder(2, channels=4, out_channels=3)
    x = torch.randn(3, 4, requires_grad=True)
    empty = torch.empty(2, 0, dtype=torch.long)
    out = enc(x, empty, torch.empty(0, dtype=torch.long))
    z = torch.cat([torch.tanh(x)] + [torch.zeros(3, 4)] * 5, -1)
    assert torch.allclose(out, enc.lin(z))  # only the entity input is left
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    conv = RelationalReflectionConv(4)
    assert torch.equal(conv(x, empty, torch.empty(0, dtype=torch.long),
                            rel=enc.rel_emb), torch.zeros(3, 4))
    none = enc(torch.empty(0, 4), empty, torch.empty(0, dtype=torch.long))
    assert none.shape == (0, 3)
