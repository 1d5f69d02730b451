r"""The structure encoder: a GAT whose aggregation is one CSR matrix product.

Stock :class:`~torch_geometric.nn.conv.GATConv` gathers ``[E, d]`` messages
and scatters them back; on CPU those per-edge ops are most of a step. Here
only the attention scores are per edge (``[E, H]``); features move through a
sparse CSR product ``A_\alpha X`` whose backward is another CSR product
(for :math:`X`) and a sampled dense product (for :math:`\alpha`).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import coalesce, remove_self_loops, softmax, to_undirected

__all__ = ['CSRAdjacency', 'csr_spmm', 'DiagGATConv', 'GATEncoder']


def _csr(ptr: Tensor, idx: Tensor, value: Tensor, n: int) -> Tensor:
    # Built from our own sorted, coalesced indices: no invariant checks.
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', 'Sparse CSR tensor support')
        return torch.sparse_csr_tensor(ptr, idx, value, (n, n),
                                       check_invariants=False)


class CSRAdjacency:
    r"""A fixed graph in CSR form, with its transpose, for :func:`csr_spmm`.

    Row :math:`i` lists the neighbours whose messages node :math:`i`
    receives (PyG's ``adj_t``). Duplicate edges (several relations between
    two entities) collapse into one.

    Args:
        edge_index (Tensor): ``[2, E]`` (source, target) pairs.
        num_nodes (int): :math:`N`.
        undirected (bool): Add reverse edges. (default: :obj:`True`)
        self_loops (bool): Add a self-loop to every node.
            (default: :obj:`True`)
    """

    def __init__(self, edge_index: Tensor, num_nodes: int,
                 undirected: bool = True, self_loops: bool = True):
        edge_index = edge_index.long()
        if edge_index.numel() and (edge_index.min() < 0
                                   or edge_index.max() >= num_nodes):
            raise ValueError(f'edge_index refers to nodes outside [0, '
                             f'{num_nodes})')
        edge_index, _ = remove_self_loops(edge_index)
        if undirected:
            edge_index = to_undirected(edge_index, num_nodes=num_nodes)
        if self_loops:
            loop = torch.arange(num_nodes, device=edge_index.device)
            edge_index = torch.cat([edge_index, loop.expand(2, -1)], dim=1)
        # Sorted by receiver (row), then sender (col).
        src, dst = coalesce(edge_index, num_nodes=num_nodes,
                            sort_by_row=False)
        self.num_nodes = num_nodes
        self.row, self.col = dst, src
        self.rowptr = torch._convert_indices_from_coo_to_csr(
            self.row, num_nodes)
        # The transpose: the same edges sorted by col.
        self.perm = (self.col * num_nodes + self.row).argsort()
        self.colptr = torch._convert_indices_from_coo_to_csr(
            self.col[self.perm], num_nodes)
        self.row_t = self.row[self.perm]

    @property
    def num_edges(self) -> int:
        return self.row.numel()

    @property
    def edge_index(self) -> Tensor:
        """``[2, E]`` (sender, receiver), in CSR order."""
        return torch.stack([self.col, self.row])

    def matrix(self, value: Optional[Tensor] = None) -> Tensor:
        """``torch.sparse_csr`` adjacency with the given edge values."""
        if value is None:
            value = torch.ones(self.num_edges, device=self.row.device)
        return _csr(self.rowptr, self.col, value, self.num_nodes)

    def to(self, device) -> CSRAdjacency:
        out = object.__new__(CSRAdjacency)
        out.__dict__ = {k: v.to(device) if isinstance(v, Tensor) else v
                        for k, v in self.__dict__.items()}
        return out

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_nodes={self.num_nodes}, '
                f'num_edges={self.num_edges})')


class _CSRSpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value: Tensor, x: Tensor, adj: CSRAdjacency) -> Tensor:
        ctx.adj = adj
        ctx.save_for_backward(value, x)
        return adj.matrix(value) @ x

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        value, x = ctx.saved_tensors
        adj = ctx.adj
        grad_value = grad_x = None
        if ctx.needs_input_grad[0]:
            # d/dA_ij = <grad_out_i, x_j>, on the sparsity pattern only.
            pattern = adj.matrix(torch.zeros_like(value))
            grad_value = torch.sparse.sampled_addmm(
                pattern, grad_out.contiguous(), x.t()).values()
        if ctx.needs_input_grad[1]:
            adj_t = _csr(adj.colptr, adj.row_t, value[adj.perm],
                         adj.num_nodes)
            grad_x = adj_t @ grad_out
        return grad_value, grad_x, None


def csr_spmm(adj: CSRAdjacency, value: Tensor, x: Tensor) -> Tensor:
    r""":math:`A_{\text{value}} X` with :math:`A` the pattern of :obj:`adj`
    (values in CSR edge order), differentiable in both :obj:`value` and
    :obj:`x`."""
    return _CSRSpMM.apply(value, x, adj)


class DiagGATConv(MessagePassing):
    r"""The graph attention layer of MEAformer's structure encoder, after
    `"Graph Attention Networks" <https://arxiv.org/abs/1710.10903>`_, with
    an optional diagonal weight (`MEAformer
    <https://arxiv.org/abs/2212.14454>`_ default) and head averaging:

    .. math::
        \mathbf{h}^{k}_i = \mathbf{w}^{k} \odot \mathbf{x}_i \ \
        (\text{diag}) \quad\text{or}\quad \mathbf{W}^{k}\mathbf{x}_i

        \alpha^{k}_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)}
        \Big(\mathrm{LeakyReLU}\big(\mathbf{a}^{k\top}_{\text{dst}}
        \mathbf{h}^{k}_i + \mathbf{a}^{k\top}_{\text{src}}
        \mathbf{h}^{k}_j\big)\Big)

        \mathbf{x}'_i = \frac{1}{H} \sum_{k=1}^{H} \sum_{j \in
        \mathcal{N}(i)} \alpha^{k}_{ij} \mathbf{h}^{k}_j

    Given a :class:`CSRAdjacency` the aggregation is one CSR product per head
    (fast path); given an ``edge_index`` it is PyG's gather/scatter message
    passing (the reference path, equal up to float rounding).

    Args:
        channels (int): Input and output size :math:`d`.
        heads (int): :math:`H`. (default: :obj:`2`)
        diag (bool): Diagonal weight :math:`\mathbf{w}^k \in \mathbb{R}^d`
            instead of a full :math:`d \times d` matrix.
            (default: :obj:`True`)
        negative_slope (float): LeakyReLU slope. (default: :obj:`0.2`)
        attn_dropout (float): Dropout on :math:`\alpha`.
            (default: :obj:`0.0`)

    Shapes:
        - **input:** ``x [N, d]``; :class:`CSRAdjacency` or ``edge_index
          [2, E]`` (sender, receiver; self-loops included by the caller)
        - **output:** ``[N, d]``
    """

    def __init__(self, channels: int, heads: int = 2, diag: bool = True,
                 negative_slope: float = 0.2, attn_dropout: float = 0.0):
        super().__init__(aggr='add', node_dim=0)
        self.channels, self.heads, self.diag = channels, heads, diag
        self.negative_slope, self.attn_dropout = negative_slope, attn_dropout
        shape = (heads, channels) if diag else (heads, channels, channels)
        self.weight = torch.nn.Parameter(torch.empty(shape))
        self.att_src = torch.nn.Parameter(torch.empty(heads, channels))
        self.att_dst = torch.nn.Parameter(torch.empty(heads, channels))
        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        if self.diag:
            torch.nn.init.ones_(self.weight)  # as MEAformer
        else:
            for w in self.weight:
                torch.nn.init.xavier_uniform_(w)
        bound = math.sqrt(6.0 / (self.channels + 1))
        torch.nn.init.uniform_(self.att_src, -bound, bound)
        torch.nn.init.uniform_(self.att_dst, -bound, bound)

    def forward(self, x: Tensor, graph: Union[CSRAdjacency, Tensor]
                ) -> Tensor:
        if isinstance(graph, CSRAdjacency):
            return self._forward_csr(x, graph)
        if self.diag:
            h = x.unsqueeze(1) * self.weight  # [N, H, d]
        else:
            h = torch.einsum('nd,hde->nhe', x, self.weight)
        a_src = (h * self.att_src).sum(-1)  # [N, H]
        a_dst = (h * self.att_dst).sum(-1)
        src, dst = graph
        alpha = self._alpha(a_src[src] + a_dst[dst], dst, x.size(0))
        out = self.propagate(graph, h=h, alpha=alpha, size=None)
        return out.mean(dim=1)

    def _forward_csr(self, x: Tensor, graph: CSRAdjacency) -> Tensor:
        if self.diag:
            # (w * x) . a = x . (w * a), and A (w * x) = w * (A x): no
            # [N, H, d] tensor, and every head aggregates x itself.
            hs = [x] * self.heads
            a_src = x @ (self.weight * self.att_src).t()  # [N, H]
            a_dst = x @ (self.weight * self.att_dst).t()
        else:
            hs = [x @ w for w in self.weight]
            a_src = torch.stack([h @ a for h, a in zip(hs, self.att_src)], 1)
            a_dst = torch.stack([h @ a for h, a in zip(hs, self.att_dst)], 1)
        alpha = self._alpha(a_src[graph.col] + a_dst[graph.row], graph.row,
                            x.size(0))
        out = 0
        for k, h in enumerate(hs):
            agg = csr_spmm(graph, alpha[:, k].contiguous(), h)
            out = out + (agg * self.weight[k] if self.diag else agg)
        return out / self.heads

    def _alpha(self, score: Tensor, index: Tensor, num_nodes: int) -> Tensor:
        score = F.leaky_relu(score, self.negative_slope)
        alpha = softmax(score, index, num_nodes=num_nodes)
        return F.dropout(alpha, self.attn_dropout, self.training)

    def message(self, h_j: Tensor, alpha: Tensor) -> Tensor:
        return h_j * alpha.unsqueeze(-1)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, '
                f'heads={self.heads}, diag={self.diag})')


class GATEncoder(torch.nn.Module):
    r"""MEAformer's structure encoder: :obj:`num_layers`
    :class:`DiagGATConv` layers with ELU between them, over learnable entity
    embeddings of both KGs (one disjoint graph, so the KGs share weights).

    .. math::
        \mathbf{X}^{(0)} = \mathrm{Norm}(\mathbf{E}), \quad
        \mathbf{X}^{(l+1)} = \sigma_l\big(\mathrm{GAT}_l(\mathbf{X}^{(l)})
        \big), \quad \sigma_l = \mathrm{ELU}\ (l < L - 1),
        \ \mathrm{id}\ (l = L - 1)

    Args:
        channels (int): :math:`d`. (default: :obj:`300`)
        num_layers (int): :math:`L`. (default: :obj:`2`)
        heads (int): (default: :obj:`2`)
        diag (bool): Diagonal weights. (default: :obj:`True`)
        dropout (float): Feature dropout before each layer but the first.
            (default: :obj:`0.0`)
        attn_dropout (float): (default: :obj:`0.0`)
        input_norm (bool): Standardise each input feature over the nodes with
            a learnable affine map (MEAformer's instance norm).
            (default: :obj:`True`)

    Shapes:
        - **input:** ``x [N, d]``, :class:`CSRAdjacency` or ``edge_index``
        - **output:** ``[N, d]``
    """

    def __init__(self, channels: int = 300, num_layers: int = 2,
                 heads: int = 2, diag: bool = True, dropout: float = 0.0,
                 attn_dropout: float = 0.0, input_norm: bool = True):
        super().__init__()
        self.channels, self.dropout = channels, dropout
        self.convs = torch.nn.ModuleList([
            DiagGATConv(channels, heads, diag, attn_dropout=attn_dropout)
            for _ in range(num_layers)])
        self.norm = (torch.nn.InstanceNorm1d(channels, affine=True)
                     if input_norm else None)
        self.reset_parameters()

    def reset_parameters(self):
        for conv in self.convs:
            conv.reset_parameters()
        if self.norm is not None:
            self.norm.reset_parameters()

    def forward(self, x: Tensor, graph: Union[CSRAdjacency, Tensor]
                ) -> Tensor:
        if self.norm is not None:  # over nodes: [1, d, N]
            x = self.norm(x.t().unsqueeze(0)).squeeze(0).t()
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            if i > 0:
                x = F.dropout(x, self.dropout, self.training)
            x = conv(x, graph)
            if i < last:
                x = F.elu(x)
        return x

    def __repr__(self) -> str:
        c = self.convs[0]
        return (f'{self.__class__.__name__}({self.channels}, '
                f'num_layers={len(self.convs)}, heads={c.heads}, '
                f'diag={c.diag})')
