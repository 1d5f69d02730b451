r"""The structure encoder: a GAT whose aggregation is one CSR matrix product.

Stock :class:`~torch_geometric.nn.conv.GATConv` gathers ``[E, d]`` messages
and scatters them back; on CPU those per-edge ops are most of a step. Here
only the attention scores are per edge (``[E, H]``); features move through a
sparse CSR product ``A_\alpha X`` whose backward is another CSR product
(for :math:`X`) and a sampled dense product (for :math:`\alpha`).

The layers take a graph in any of PyG's forms (``edge_index``,
:class:`~torch_geometric.EdgeIndex`, a ``torch.sparse`` adjacency or a
``torch_sparse.SparseTensor``) and prepare it as a :class:`CSRAdjacency`;
build that once with :meth:`CSRAdjacency.from_input` to skip the work on
every call.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric import EdgeIndex
from torch_geometric.index import index2ptr
from torch_geometric.typing import SparseTensor
from torch_geometric.utils import (
    coalesce,
    is_sparse,
    remove_self_loops,
    softmax,
    to_edge_index,
    to_undirected,
)

__all__ = ['CSRPattern', 'CSRAdjacency', 'csr_spmm', 'csr_sddmm',
           'DiagGATConv', 'GATEncoder']


def _csr(ptr: Tensor, idx: Tensor, value: Tensor, size: Tuple[int, int]
         ) -> Tensor:
    # Built from our own sorted, coalesced indices: no invariant checks.
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', 'Sparse CSR tensor support')
        return torch.sparse_csr_tensor(ptr, idx, value, size,
                                       check_invariants=False)


class CSRPattern:
    r"""The sparsity pattern of an :math:`m \times n` matrix in CSR order,
    with its transpose, for :func:`csr_spmm` and :func:`csr_sddmm`.

    Entry :math:`k` sits at (:obj:`row[k]`, :obj:`col[k]`); values given to
    the kernels follow this order.

    Args:
        row (Tensor): ``[nnz]`` row indices, sorted.
        col (Tensor): ``[nnz]`` column indices, sorted within each row, no
            duplicate (row, col).
        size (tuple): :math:`(m, n)`.
    """

    def __init__(self, row: Tensor, col: Tensor, size: Tuple[int, int]):
        self.size = (int(size[0]), int(size[1]))
        self.row, self.col = row, col
        self.rowptr = index2ptr(row, self.size[0])
        # The transpose: rows are sorted, so a stable sort by col gives
        # (col, row) order.
        self.perm = torch.sort(col, stable=True)[1]
        self.colptr = index2ptr(col[self.perm], self.size[1])
        self.row_t = row[self.perm]
        # MKL's sparse products take int32 indices; converting int64 ones
        # on every call costs ~10% of a product.
        small = max(self.size + (self.nnz,)) < 2**31
        self._index = [i.int() if small else i for i in
                       (self.rowptr, self.col, self.colptr, self.row_t)]

    @classmethod
    def from_coo(cls, row: Tensor, col: Tensor, size: Tuple[int, int]
                 ) -> Tuple[CSRPattern, Tensor]:
        """The pattern of the distinct (row, col) pairs, and ``[len(row)]``
        the position of each given pair in it."""
        key = row * size[1] + col
        if bool((key[1:] >= key[:-1]).all()):  # already sorted: no sort
            key, inverse = torch.unique_consecutive(key, return_inverse=True)
        else:
            key, inverse = torch.unique(key, sorted=True,
                                        return_inverse=True)
        return cls(key // size[1], key % size[1], size), inverse

    @property
    def nnz(self) -> int:
        return self.row.numel()

    def matrix(self, value: Optional[Tensor] = None) -> Tensor:
        """``torch.sparse_csr`` matrix with the given entry values."""
        if value is None:
            value = torch.ones(self.nnz, device=self.row.device)
        return _csr(self._index[0], self._index[1], value, self.size)

    def matrix_t(self, value: Tensor) -> Tensor:
        """The transpose of :meth:`matrix`, also in CSR."""
        return _csr(self._index[2], self._index[3], value[self.perm],
                    self.size[::-1])

    def to(self, device) -> CSRPattern:
        out = object.__new__(type(self))
        out.__dict__ = {k: v.to(device) if isinstance(v, Tensor) else v
                        for k, v in self.__dict__.items()}
        out._index = [i.to(device) for i in self._index]
        return out

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(size={self.size}, nnz={self.nnz})'


GraphInput = Union['CSRAdjacency', Tensor, EdgeIndex, SparseTensor]


class CSRAdjacency(CSRPattern):
    r"""A fixed graph prepared for :class:`DiagGATConv`: the message graph
    in CSR form, with its transpose.

    Row :math:`i` lists the nodes whose messages node :math:`i` receives
    (PyG's ``adj_t``). Preparation, in order: self-loops in the input are
    dropped; with :obj:`undirected`, every edge gets its reverse; with
    :obj:`self_loops`, every node gets one self-loop; duplicate edges
    (several relations between two entities) collapse into one. Edge
    weights are not kept: the attention supplies them.

    Args:
        edge_index (Tensor): ``[2, E]`` (sender, receiver) pairs.
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
                             f'{num_nodes}); pass the right num_nodes')
        edge_index, _ = remove_self_loops(edge_index)
        if undirected:
            edge_index = to_undirected(edge_index, num_nodes=num_nodes)
        if self_loops:
            loop = torch.arange(num_nodes, device=edge_index.device)
            edge_index = torch.cat([edge_index, loop.expand(2, -1)], dim=1)
        # Sorted by receiver (row), then sender (col).
        src, dst = coalesce(edge_index, num_nodes=num_nodes,
                            sort_by_row=False)
        super().__init__(dst, src, (num_nodes, num_nodes))

    @classmethod
    def from_input(cls, adj: GraphInput, num_nodes: Optional[int] = None,
                   undirected: bool = True, self_loops: bool = True
                   ) -> CSRAdjacency:
        r"""Prepares a graph given in any of PyG's forms.

        Args:
            adj: A :class:`CSRAdjacency` (returned as it is); an
                ``edge_index`` ``[2, E]`` or
                :class:`~torch_geometric.EdgeIndex` of (sender, receiver)
                pairs; or an :math:`N \times N` adjacency whose row
                :math:`i` lists the senders to node :math:`i` (PyG's
                ``adj_t``), as a ``torch.sparse`` tensor of any layout or a
                ``torch_sparse.SparseTensor``. Stored values are ignored.
            num_nodes (int, optional): :math:`N`. (default: the adjacency's
                size, else the largest index plus one)
            undirected (bool): Add reverse edges. (default: :obj:`True`)
            self_loops (bool): Add a self-loop to every node.
                (default: :obj:`True`)
        """
        if isinstance(adj, CSRAdjacency):
            if num_nodes is not None and adj.size[0] != num_nodes:
                raise ValueError(f'the CSRAdjacency has {adj.size[0]} '
                                 f'nodes, not {num_nodes}')
            return adj
        if is_sparse(adj):
            size = (tuple(adj.sparse_sizes()) if isinstance(adj, SparseTensor)
                    else tuple(adj.shape[:2]))
            if size[0] != size[1] or (num_nodes is not None
                                      and size[0] != num_nodes):
                raise ValueError(f'a sparse adjacency must be [N, N] with '
                                 f'N = {num_nodes} (got {list(size)})')
            receiver, sender = to_edge_index(adj)[0]
            return cls(torch.stack([sender, receiver]), size[0], undirected,
                       self_loops)
        if not isinstance(adj, Tensor) or adj.dim() != 2 or adj.size(0) != 2:
            raise TypeError(f'expected a CSRAdjacency, an edge_index [2, E], '
                            f'an EdgeIndex or a sparse adjacency (got '
                            f'{type(adj).__name__} '
                            f'{list(getattr(adj, "shape", []))})')
        if isinstance(adj, EdgeIndex):
            if num_nodes is None:
                known = [s for s in adj.sparse_size() if s is not None]
                num_nodes = max(known) if known else None
            adj = adj.as_tensor()
        if num_nodes is None:
            num_nodes = int(adj.max()) + 1 if adj.numel() else 0
        return cls(adj, num_nodes, undirected, self_loops)

    @property
    def num_nodes(self) -> int:
        return self.size[0]

    @property
    def num_edges(self) -> int:
        return self.nnz

    @property
    def edge_index(self) -> Tensor:
        """``[2, E]`` (sender, receiver), in CSR order."""
        return torch.stack([self.col, self.row])

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_nodes={self.num_nodes}, '
                f'num_edges={self.num_edges})')


class _CSRSpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value: Tensor, x: Tensor, pattern: CSRPattern) -> Tensor:
        ctx.pattern = pattern
        ctx.save_for_backward(value, x)
        return pattern.matrix(value) @ x

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        value, x = ctx.saved_tensors
        pattern = ctx.pattern
        grad_value = grad_x = None
        if ctx.needs_input_grad[0]:
            # d/dA_ij = <grad_out_i, x_j>, on the sparsity pattern only.
            grad_value = _sddmm(pattern, grad_out, x)
        if ctx.needs_input_grad[1]:
            grad_x = pattern.matrix_t(value) @ grad_out
        return grad_value, grad_x, None


def _sddmm(pattern: CSRPattern, a: Tensor, b: Tensor) -> Tensor:
    zeros = pattern.matrix(a.new_zeros(pattern.nnz))
    return torch.sparse.sampled_addmm(zeros, a.contiguous(), b.t()).values()


class _CSRSDDMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, pattern: CSRPattern) -> Tensor:
        ctx.pattern = pattern
        ctx.save_for_backward(a, b)
        return _sddmm(pattern, a, b)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        a, b = ctx.saved_tensors
        pattern = ctx.pattern
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = pattern.matrix(grad_out) @ b
        if ctx.needs_input_grad[1]:
            grad_b = pattern.matrix_t(grad_out) @ a
        return grad_a, grad_b, None


def csr_spmm(pattern: CSRPattern, value: Tensor, x: Tensor) -> Tensor:
    r""":math:`A X` with :math:`A` the :math:`m \times n` matrix of
    :obj:`pattern` holding :obj:`value` (``[nnz]``, in CSR order) and
    :obj:`x` ``[n, d]``; differentiable in both :obj:`value` and
    :obj:`x`."""
    return _CSRSpMM.apply(value, x, pattern)


def csr_sddmm(pattern: CSRPattern, a: Tensor, b: Tensor) -> Tensor:
    r"""``[nnz]`` dot products :math:`\mathbf{a}_{\text{row}[k]} \cdot
    \mathbf{b}_{\text{col}[k]}` on the entries of :obj:`pattern`, for
    :obj:`a` ``[m, d]`` and :obj:`b` ``[n, d]``; differentiable in both,
    and never materialises ``[nnz, d]``."""
    return _CSRSDDMM.apply(a, b, pattern)


class DiagGATConv(torch.nn.Module):
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

    where :math:`\mathcal{N}(i)` are the senders to :math:`i` in the
    prepared graph (:class:`CSRAdjacency`: undirected, with self-loops,
    duplicates collapsed). Only the scores are per edge; the aggregation is
    one CSR product per head (:func:`csr_spmm`), never ``[E, H, d]``.

    Args:
        channels (int): Input and output size :math:`d`.
        heads (int): Number of attention heads :math:`H`, averaged.
            (default: :obj:`2`)
        diag (bool): Use a diagonal weight :math:`\mathbf{w}^k \in
            \mathbb{R}^d` instead of a full :math:`d \times d` matrix.
            (default: :obj:`True`)
        negative_slope (float): Slope of the LeakyReLU on the scores.
            (default: :obj:`0.2`)
        attn_dropout (float): Dropout probability on :math:`\alpha` in
            training. (default: :obj:`0.0`)

    Shapes:
        - **input:** ``x [N, d]``; a graph: :class:`CSRAdjacency`
          (used as it is), or ``edge_index [2, E]``,
          :class:`~torch_geometric.EdgeIndex`, ``torch.sparse`` or
          ``SparseTensor`` ``adj_t [N, N]``, each prepared per call by
          :meth:`CSRAdjacency.from_input`
        - **output:** ``[N, d]``
    """

    def __init__(self, channels: int, heads: int = 2, diag: bool = True,
                 negative_slope: float = 0.2, attn_dropout: float = 0.0):
        super().__init__()
        self.channels, self.heads, self.diag = channels, heads, diag
        self.negative_slope, self.attn_dropout = negative_slope, attn_dropout
        shape = (heads, channels) if diag else (heads, channels, channels)
        self.weight = torch.nn.Parameter(torch.empty(shape))
        self.att_src = torch.nn.Parameter(torch.empty(heads, channels))
        self.att_dst = torch.nn.Parameter(torch.empty(heads, channels))
        self.reset_parameters()

    def reset_parameters(self):
        if self.diag:
            torch.nn.init.ones_(self.weight)  # as MEAformer
        else:
            for w in self.weight:
                torch.nn.init.xavier_uniform_(w)
        bound = math.sqrt(6.0 / (self.channels + 1))
        torch.nn.init.uniform_(self.att_src, -bound, bound)
        torch.nn.init.uniform_(self.att_dst, -bound, bound)

    def forward(self, x: Tensor, graph: GraphInput) -> Tensor:
        """Runs the layer on :obj:`x` ``[N, d]`` over :obj:`graph`."""
        graph = CSRAdjacency.from_input(graph, x.size(0))
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
        score = F.leaky_relu(a_src[graph.col] + a_dst[graph.row],
                             self.negative_slope)
        alpha = softmax(score, graph.row, num_nodes=x.size(0))
        alpha = F.dropout(alpha, self.attn_dropout, self.training)
        out = 0
        for k, h in enumerate(hs):
            agg = csr_spmm(graph, alpha[:, k].contiguous(), h)
            out = out + (agg * self.weight[k] if self.diag else agg)
        return out / self.heads

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, '
                f'heads={self.heads}, diag={self.diag})')


class GATEncoder(torch.nn.Module):
    r"""MEAformer's structure encoder: :obj:`num_layers`
    :class:`DiagGATConv` layers with ELU between them, over learnable entity
    embeddings of both KGs (one disjoint graph, so the KGs share weights),
    from `"MEAformer" <https://arxiv.org/abs/2212.14454>`_:

    .. math::
        \mathbf{X}^{(0)} = \mathrm{Norm}(\mathbf{E}), \quad
        \mathbf{X}^{(l+1)} = \sigma_l\big(\mathrm{GAT}_l(\mathbf{X}^{(l)})
        \big), \quad \sigma_l = \mathrm{ELU}\ (l < L - 1),
        \ \mathrm{id}\ (l = L - 1)

    Args:
        channels (int): Input and output size :math:`d`.
            (default: :obj:`300`)
        num_layers (int): Number of layers :math:`L`. (default: :obj:`2`)
        heads (int): Attention heads per layer. (default: :obj:`2`)
        diag (bool): Diagonal weights (see :class:`DiagGATConv`).
            (default: :obj:`True`)
        dropout (float): Feature dropout before each layer but the first.
            (default: :obj:`0.0`)
        attn_dropout (float): Dropout on the attention weights.
            (default: :obj:`0.0`)
        input_norm (bool): Standardise each input feature over the nodes with
            a learnable affine map (MEAformer's instance norm).
            (default: :obj:`True`)

    Shapes:
        - **input:** ``x [N, d]``; a graph in any form
          :class:`DiagGATConv` takes (prepared once per call, so pass a
          :class:`CSRAdjacency` to reuse it across calls)
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

    def forward(self, x: Tensor, graph: GraphInput) -> Tensor:
        """Encodes :obj:`x` ``[N, d]`` over :obj:`graph`."""
        graph = CSRAdjacency.from_input(graph, x.size(0))
        if self.norm is not None and x.size(0) > 0:  # over nodes: [1, d, N]
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
