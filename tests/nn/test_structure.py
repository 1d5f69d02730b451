import pytest
import torch
import torch.nn.functional as F

from ricea_pyg.nn.structure import CSRAdjacency, DiagGATConv, GATEncoder, csr_spmm


def dense_gat(conv: DiagGATConv, x, adj):
    """Plain dense GAT: every (receiver, sender) score, -inf off the graph."""
    outs = []
    for k in range(conv.heads):
        w = conv.weight[k]
        h = x * w if conv.diag else x @ w
        score = (h @ conv.att_dst[k]).view(-1, 1) + (h @ conv.att_src[k])
        score = F.leaky_relu(score, conv.negative_slope)
        score = score.masked_fill(~adj, float('-inf'))
        outs.append(score.softmax(dim=1) @ h)
    return torch.stack(outs).mean(0)


def random_graph(n=40, e=160, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (2, e), generator=g), n


def test_csr_adjacency_structure():
    edge_index = torch.tensor([[0, 0, 1, 2, 2], [1, 1, 2, 2, 0]])
    g = CSRAdjacency(edge_index, 4)
    dense = g.matrix().to_dense()
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0],
                             [0, 0, 0, 1]], dtype=torch.float)
    assert torch.equal(dense, expected)  # dedup, undirected, self-loops
    directed = CSRAdjacency(edge_index, 4, undirected=False,
                            self_loops=False).matrix().to_dense()
    assert directed[1, 0] == 1 and directed[0, 1] == 0  # row = receiver
    assert repr(g) == 'CSRAdjacency(num_nodes=4, num_edges=10)'


def test_csr_adjacency_rejects_out_of_range():
    with pytest.raises(ValueError, match='outside'):
        CSRAdjacency(torch.tensor([[0], [5]]), 3)


def test_csr_spmm_matches_dense_and_gradcheck():
    edge_index, n = random_graph(12, 30)
    g = CSRAdjacency(edge_index, n)
    value = torch.rand(g.num_edges, dtype=torch.double, requires_grad=True)
    x = torch.randn(n, 3, dtype=torch.double, requires_grad=True)
    dense = torch.zeros(n, n, dtype=torch.double)
    dense[g.row, g.col] = value.detach()
    assert torch.allclose(csr_spmm(g, value, x), dense @ x.detach())
    assert torch.autograd.gradcheck(lambda v, y: csr_spmm(g, v, y),
                                    (value, x))


@pytest.mark.parametrize('diag', [True, False])
def test_conv_csr_equals_scatter_and_dense_reference(diag):
    edge_index, n = random_graph()
    g = CSRAdjacency(edge_index, n)
    conv = DiagGATConv(8, heads=2, diag=diag)
    if diag:  # away from the all-ones init so the weight matters
        torch.nn.init.normal_(conv.weight)
    x = torch.randn(n, 8, requires_grad=True)
    adj = g.matrix().to_dense().bool()
    params = [x] + list(conv.parameters())
    outs, grads = [], []
    for run in (lambda: conv(x, g), lambda: conv(x, g.edge_index),
                lambda: dense_gat(conv, x, adj)):
        out = run()
        outs.append(out)
        grads.append(torch.autograd.grad((out * out).sum(), params))
    for out, grad in zip(outs[1:], grads[1:]):
        assert torch.allclose(outs[0], out, atol=1e-5)
        for a, b in zip(grads[0], grad):
            assert torch.allclose(a, b, atol=1e-5)


def test_encoder_shapes_repr_and_reset():
    edge_index, n = random_graph()
    g = CSRAdjacency(edge_index, n)
    enc = GATEncoder(16, num_layers=2, heads=2)
    x = torch.randn(n, 16)
    out = enc(x, g)
    assert out.shape == (n, 16) and torch.isfinite(out).all()
    assert torch.allclose(out, enc(x, g.edge_index), atol=1e-5)
    assert repr(enc) == 'GATEncoder(16, num_layers=2, heads=2, diag=True)'
    torch.nn.init.normal_(enc.convs[0].weight)
    enc.reset_parameters()
    assert torch.equal(enc.convs[0].weight, torch.ones(2, 16))


def test_encoder_elu_between_layers_only():
    edge_index, n = random_graph()
    g = CSRAdjacency(edge_index, n)
    enc = GATEncoder(8, num_layers=2, input_norm=False)
    torch.nn.init.constant_(enc.convs[1].weight, 3.0)
    x = 5 * torch.randn(n, 8)
    manual = enc.convs[1](F.elu(enc.convs[0](x, g)), g)
    assert torch.allclose(enc(x, g), manual)
    assert (enc(x, g) < -1).any()  # no ELU after the last layer


def test_isolated_node_keeps_its_own_embedding():
    g = CSRAdjacency(torch.tensor([[0], [1]]), 3)
    conv = DiagGATConv(4, heads=2)
    x = torch.randn(3, 4)
    assert torch.allclose(conv(x, g)[2], x[2])  # only its self-loop
