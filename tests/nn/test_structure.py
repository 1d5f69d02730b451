import pytest
import torch
import torch.nn.functional as F
from torch_geometric import EdgeIndex
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csc_tensor

from ricea_pyg.nn.structure import (
    CSRAdjacency,
    CSRPattern,
    DiagGATConv,
    GATEncoder,
    csr_sddmm,
    csr_spmm,
)


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
    moved = g.to('cpu')
    assert isinstance(moved, CSRAdjacency)
    assert torch.equal(moved.matrix().to_dense(), dense)


def test_csr_adjacency_rejects_out_of_range():
    with pytest.raises(ValueError, match='outside'):
        CSRAdjacency(torch.tensor([[0], [5]]), 3)


def graph_inputs(edge_index, n):
    """The same directed graph in every form the layers take; the sparse
    ones are PyG's ``adj_t`` (row = receiver)."""
    inputs = {
        'edge_index': edge_index,
        'EdgeIndex': EdgeIndex(edge_index, sparse_size=(n, n)),
        'csr': to_torch_csc_tensor(edge_index, size=(n, n)).t(),
        'coo': to_torch_coo_tensor(edge_index.flip(0), size=(n, n)),
        'csc': to_torch_coo_tensor(edge_index.flip(0),
                                   size=(n, n)).to_sparse_csc(),
        'prepared': CSRAdjacency(edge_index, n),
    }
    try:
        from torch_sparse import SparseTensor
        inputs['SparseTensor'] = SparseTensor.from_edge_index(
            edge_index, sparse_sizes=(n, n)).t()
    except ImportError:
        pass
    return inputs


@pytest.mark.parametrize('undirected', [True, False])
def test_from_input_same_graph_for_every_type(undirected):
    edge_index, n = random_graph(15, 40)
    edge_index = torch.cat([edge_index, edge_index[:, :5]], 1)  # duplicates
    ref = CSRAdjacency(edge_index, n, undirected=undirected)
    for name, adj in graph_inputs(edge_index, n).items():
        if name == 'prepared':
            continue
        g = CSRAdjacency.from_input(adj, n, undirected=undirected)
        assert g.num_nodes == n, name
        assert torch.equal(g.edge_index, ref.edge_index), name
        assert torch.equal(g.rowptr, ref.rowptr), name
        assert torch.equal(g.colptr, ref.colptr), name
    directed = CSRAdjacency.from_input(edge_index, n, undirected=False,
                                       self_loops=False)
    dense = torch.zeros(n, n)
    dense[edge_index[1], edge_index[0]] = 1  # row = receiver
    dense.fill_diagonal_(0)
    assert torch.equal(directed.matrix().to_dense(), dense)


def test_from_input_sizes_and_errors():
    edge_index = torch.tensor([[0, 1], [1, 2]])
    prepared = CSRAdjacency(edge_index, 5)
    assert CSRAdjacency.from_input(prepared) is prepared
    assert CSRAdjacency.from_input(edge_index).num_nodes == 3  # max + 1
    assert CSRAdjacency.from_input(
        EdgeIndex(edge_index, sparse_size=(6, 6))).num_nodes == 6
    assert CSRAdjacency.from_input(
        to_torch_coo_tensor(edge_index, size=(7, 7))).num_nodes == 7
    with pytest.raises(ValueError, match='has 5 nodes, not 4'):
        CSRAdjacency.from_input(prepared, 4)
    with pytest.raises(ValueError, match=r'\[N, N\]'):
        CSRAdjacency.from_input(to_torch_coo_tensor(edge_index, size=(3, 4)))
    with pytest.raises(ValueError, match=r'N = 5'):
        CSRAdjacency.from_input(to_torch_coo_tensor(edge_index, size=(3, 3)),
                                5)
    with pytest.raises(TypeError, match=r'edge_index \[2, E\].*got Tensor'):
        CSRAdjacency.from_input(torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match='got list'):
        CSRAdjacency.from_input([[0, 1], [1, 2]])


@pytest.mark.parametrize('diag', [True, False])
def test_conv_same_output_and_grads_for_every_input_type(diag):
    torch.manual_seed(0)
    edge_index, n = random_graph(30, 90)
    conv = DiagGATConv(8, heads=2, diag=diag)
    if diag:
        torch.nn.init.normal_(conv.weight)
    x = torch.randn(n, 8, requires_grad=True)
    params = [x] + list(conv.parameters())
    ref = conv(x, edge_index)
    ref_grads = torch.autograd.grad((ref * ref).sum(), params)
    for name, adj in graph_inputs(edge_index, n).items():
        out = conv(x, adj)
        assert torch.allclose(out, ref, atol=1e-6), name
        grads = torch.autograd.grad((out * out).sum(), params)
        for a, b in zip(ref_grads, grads):
            assert torch.allclose(a, b, atol=1e-5), name


def test_sparse_tensor_input():
    torch_sparse = pytest.importorskip('torch_sparse')
    edge_index, n = random_graph(20, 50)
    adj_t = torch_sparse.SparseTensor.from_edge_index(
        edge_index, sparse_sizes=(n, n)).t()
    enc = GATEncoder(8)
    x = torch.randn(n, 8)
    assert torch.allclose(enc(x, adj_t), enc(x, edge_index), atol=1e-6)


@pytest.mark.parametrize('diag', [True, False])
def test_zero_edges_keeps_only_self_loops(diag):
    torch.manual_seed(0)
    conv = DiagGATConv(4, heads=2, diag=diag)
    x = torch.randn(5, 4, requires_grad=True)
    empty = torch.empty(2, 0, dtype=torch.long)
    if diag:
        torch.nn.init.normal_(conv.weight)
    out = conv(x, empty)
    # alpha = 1 on the self-loop: each head returns its own h_i.
    h = [x * w if diag else x @ w for w in conv.weight]
    expected = torch.stack(h).mean(0)
    assert torch.allclose(out, expected, atol=1e-6)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    # Without self-loops nothing reaches any node.
    bare = CSRAdjacency(empty, 5, self_loops=False)
    assert bare.num_edges == 0
    assert torch.equal(conv(x, bare), torch.zeros(5, 4))


def test_empty_graph_no_nodes():
    torch.manual_seed(0)
    enc = GATEncoder(4)
    x = torch.empty(0, 4, requires_grad=True)
    out = enc(x, torch.empty(2, 0, dtype=torch.long))
    assert out.shape == (0, 4)
    out.sum().backward()
    assert x.grad.shape == (0, 4)


def test_rectangular_pattern_kernels_match_dense_and_gradcheck():
    g = torch.Generator().manual_seed(1)
    row = torch.randint(0, 7, (25,), generator=g)
    col = torch.randint(0, 4, (25,), generator=g)
    pattern, inverse = CSRPattern.from_coo(row, col, (7, 4))
    assert pattern.nnz == inverse.max() + 1
    assert torch.equal(pattern.row[inverse], row)
    assert torch.equal(pattern.col[inverse], col)
    a = torch.randn(7, 3, dtype=torch.double, requires_grad=True)
    b = torch.randn(4, 3, dtype=torch.double, requires_grad=True)
    value = torch.rand(pattern.nnz, dtype=torch.double, requires_grad=True)
    assert torch.allclose(csr_sddmm(pattern, a, b),
                          (a[pattern.row] * b[pattern.col]).sum(-1))
    dense = torch.zeros(7, 4, dtype=torch.double)
    dense[pattern.row, pattern.col] = value.detach()
    assert torch.allclose(csr_spmm(pattern, value, b), dense @ b.detach())
    assert torch.autograd.gradcheck(
        lambda x, y: csr_sddmm(pattern, x, y), (a, b))
    assert torch.autograd.gradcheck(
        lambda v, y: csr_spmm(pattern, v, y), (value, b))
    assert repr(pattern) == f'CSRPattern(size=(7, 4), nnz={pattern.nnz})'


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
def test_conv_matches_dense_reference(diag):
    edge_index, n = random_graph()
    g = CSRAdjacency(edge_index, n)
    conv = DiagGATConv(8, heads=2, diag=diag)
    if diag:  # away from the all-ones init so the weight matters
        torch.nn.init.normal_(conv.weight)
    x = torch.randn(n, 8, requires_grad=True)
    adj = g.matrix().to_dense().bool()
    params = [x] + list(conv.parameters())
    outs, grads = [], []
    for run in (lambda: conv(x, g), lambda: dense_gat(conv, x, adj)):
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
