r"""A relation-aware structure encoder: relational reflection with
relation-conditioned attention, as in RREA and Dual-AMN.

The fast path never builds ``[E, d]`` messages. With :math:`\hat{\mathbf{r}}`
the unit relation vectors, a layer's sum splits into

.. math::
    \sum_j \alpha_{ij} \mathbf{h}_j \;-\; 2 \sum_{t} \Big(\sum_{j:\,
    \tau_{ij} = t} \alpha_{ij}\, \mathbf{h}_j \cdot \hat{\mathbf{r}}_t
    \Big) \hat{\mathbf{r}}_t,

a CSR product over entity pairs plus an ``[N, 2R]`` sparse matrix times the
``[2R, d]`` relation table; the dot products :math:`\mathbf{h}_j \cdot
\hat{\mathbf{r}}_t` are one sampled dense product over the distinct
(entity, relation) pairs. Only scalars are per edge.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter, softmax

from ricea_pyg.nn.structure import CSRAdjacency, CSRPattern, csr_sddmm, csr_spmm

__all__ = ['RelationalAdjacency', 'RelationalReflectionConv',
           'RelationAwareEncoder']


def check_triples(edge_index: Tensor, edge_type: Tensor, num_nodes: int,
                  num_relations: int) -> None:
    """Raises a ValueError that names the fix if ``[2, E]`` triples and
    their ``[E]`` relation ids do not fit :obj:`num_nodes` entities and
    :obj:`num_relations` relations."""
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f'edge_index must be [2, E] (got shape '
                         f'{tuple(edge_index.shape)})')
    if edge_type.shape != edge_index.shape[1:]:
        raise ValueError(f'edge_type must be [E] = [{edge_index.size(1)}] '
                         f'(got shape {tuple(edge_type.shape)})')
    if edge_index.numel() and (edge_index.min() < 0
                               or edge_index.max() >= num_nodes):
        raise ValueError(f'edge_index refers to nodes outside [0, '
                         f'{num_nodes}); pass the right num_nodes')
    if edge_type.numel() and (edge_type.min() < 0
                              or edge_type.max() >= num_relations):
        raise ValueError(f'edge_type has ids outside [0, {num_relations}); '
                         f'pass the right num_relations')


class RelationalAdjacency:
    r"""A KG's triples prepared once for :class:`RelationalReflectionConv`
    and :class:`RelationAwareEncoder`.

    Every triple :math:`(h, r, t)` becomes two directed edges, :math:`h \to
    t` of type :math:`r` and :math:`t \to h` of type :math:`r + R`;
    identical (sender, receiver, type) edges collapse into one. Several
    relations between two entities stay separate edges, each with its own
    relation vector (Dual-AMN instead merges them into one edge with the
    normalised mean of their vectors).

    Args:
        edge_index (Tensor): ``[2, E]`` (head, tail) of the directed triples.
        edge_type (Tensor): ``[E]`` relation ids in :math:`[0, R)`.
        num_nodes (int): Number of entities :math:`N`.
        num_relations (int): Number of relations :math:`R`.

    Attributes:
        edge_index (Tensor): ``[2, E']`` (sender, receiver) with reverses,
            sorted by receiver, then type, then sender.
        edge_type (Tensor): ``[E']`` types in :math:`[0, 2R)`.
        pair, src_type, dst_type (CSRPattern): The distinct (receiver,
            sender), (sender, type) and (receiver, type) pairs; the edges'
            positions in them are :obj:`edge_pair`, :obj:`edge_src_type`,
            :obj:`edge_dst_type`.
        neighbours (CSRAdjacency): The undirected graph with self-loops;
            :obj:`neighbour_weight` makes it the mean over an entity and its
            neighbours.
        relation_weight (Tensor): On :obj:`dst_type`: the mean over an
            entity's in-edges of their relation vectors.
    """

    def __init__(self, edge_index: Tensor, edge_type: Tensor, num_nodes: int,
                 num_relations: int):
        check_triples(edge_index, edge_type, num_nodes, num_relations)
        head, tail = edge_index.long()
        rel = edge_type.long()
        n, t = num_nodes, 2 * num_relations
        self.num_nodes, self.num_relations = n, num_relations
        src = torch.cat([head, tail])
        dst = torch.cat([tail, head])
        typ = torch.cat([rel, rel + num_relations])
        # One sort collapses duplicates and orders by (receiver, type, sender).
        key = torch.unique((dst * t + typ) * n + src)
        src, typ, dst = key % n, key // n % t, key // n // t
        self.edge_index = torch.stack([src, dst])
        self.edge_type = typ
        self.pair, self.edge_pair = CSRPattern.from_coo(dst, src, (n, n))
        self.src_type, self.edge_src_type = CSRPattern.from_coo(
            src, typ, (n, t))
        self.dst_type, self.edge_dst_type = CSRPattern.from_coo(
            dst, typ, (n, t))
        # Every edge has its reverse already: no need to symmetrise.
        self.neighbours = CSRAdjacency(self.edge_index, n, undirected=False)
        deg = torch.bincount(self.neighbours.row, minlength=n)
        self.neighbour_weight = 1.0 / deg[self.neighbours.row]
        count = torch.bincount(self.edge_dst_type,
                               minlength=self.dst_type.nnz)
        in_deg = torch.bincount(dst, minlength=n).clamp(min=1)
        self.relation_weight = count / in_deg[self.dst_type.row]

    @property
    def num_edges(self) -> int:
        return self.edge_type.numel()

    def to(self, device) -> RelationalAdjacency:
        out = object.__new__(RelationalAdjacency)
        out.__dict__ = {k: v.to(device) if isinstance(v, (Tensor, CSRPattern))
                        else v for k, v in self.__dict__.items()}
        return out

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_nodes={self.num_nodes}, '
                f'num_relations={self.num_relations}, '
                f'num_edges={self.num_edges})')


class RelationalReflectionConv(MessagePassing):
    r"""The relational reflection layer of `"Relational Reflection
    Entity Alignment" <https://arxiv.org/abs/2008.07962>`_ (RREA) with the
    relation-only attention of `"Boosting the Speed of Entity Alignment 10x:
    Dual Attention Matching Network with Normalized Hard Sample Mining"
    <https://arxiv.org/abs/2103.15452>`_ (Dual-AMN):

    .. math::
        \hat{\mathbf{r}}_{ij} = \frac{\mathbf{r}_{\tau_{ij}}}
        {\lVert \mathbf{r}_{\tau_{ij}} \rVert_2}, \qquad
        \alpha_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)}
        \big(\mathbf{a}^{\top} \hat{\mathbf{r}}_{ij}\big)

        \mathbf{x}'_i = \sum_{j \in \mathcal{N}(i)} \alpha_{ij}
        \big(\mathbf{x}_j - 2\, (\mathbf{x}_j \cdot \hat{\mathbf{r}}_{ij})\,
        \hat{\mathbf{r}}_{ij}\big)

    where :math:`\mathcal{N}(i)` are the senders of the edges into
    :math:`i` (one per edge, so an entity joined by two relations counts
    twice), :math:`\tau_{ij}` the edge's relation type, :math:`\mathbf{r}`
    rows of a relation table and :math:`\mathbf{a}` the layer's attention
    vector. The reflection is orthogonal, so it keeps norms; no weight
    matrix, no activation (the encoder applies :math:`\tanh`).

    Given a :class:`RelationalAdjacency` the sum is computed with sparse
    products and no ``[E, d]`` tensor (fast path); given ``edge_index`` and
    ``edge_type`` it is PyG's message passing over exactly those edges
    (reference path, equal up to float rounding on the same edges).

    Args:
        channels (int): Input and output size :math:`d`, also the size of
            the relation vectors.

    Shapes:
        - **input:** ``x [N, d]``; a :class:`RelationalAdjacency`, or
          ``edge_index [2, E]`` (sender, receiver) with ``edge_type [E]``;
          ``rel [T, d]`` (keyword), the relation table indexed by the types
        - **output:** ``[N, d]``
    """

    def __init__(self, channels: int):
        super().__init__(aggr='add', node_dim=0)
        self.channels = channels
        self.att = torch.nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        bound = math.sqrt(6.0 / (self.channels + 1))  # Glorot of [d, 1]
        torch.nn.init.uniform_(self.att, -bound, bound)

    def forward(self, x: Tensor,
                edge_index: Union[RelationalAdjacency, Tensor],
                edge_type: Optional[Tensor] = None, *, rel: Tensor
                ) -> Tensor:
        """Runs the layer on :obj:`x` with relation table :obj:`rel`."""
        r = F.normalize(rel, dim=-1)
        score = r @ self.att  # [T]: the attention sees the relation only
        if isinstance(edge_index, RelationalAdjacency):
            return self._forward_sparse(x, edge_index, r, score)
        if edge_type is None:
            raise ValueError('edge_type is required with a plain edge_index '
                             '(or pass a RelationalAdjacency)')
        alpha = softmax(score[edge_type], edge_index[1],
                        num_nodes=x.size(0))
        return self.propagate(edge_index, x=x, r=r[edge_type], alpha=alpha)

    def _forward_sparse(self, x: Tensor, graph: RelationalAdjacency,
                        r: Tensor, score: Tensor) -> Tensor:
        alpha = softmax(score[graph.edge_type], graph.edge_index[1],
                        num_nodes=x.size(0))
        # x_j . r_t once per distinct (sender, type), then per edge.
        dot = csr_sddmm(graph.src_type, x, r)[graph.edge_src_type]
        pair_w = scatter(alpha, graph.edge_pair, dim_size=graph.pair.nnz)
        # The -2 goes on the [nnz] coefficients, not on an [N, d] result.
        coef = scatter(-2 * alpha * dot, graph.edge_dst_type,
                       dim_size=graph.dst_type.nnz)
        return (csr_spmm(graph.pair, pair_w, x)
                + csr_spmm(graph.dst_type, coef, r))

    def message(self, x_j: Tensor, r: Tensor, alpha: Tensor) -> Tensor:
        n_j = x_j - 2 * (x_j * r).sum(-1, keepdim=True) * r
        return alpha.unsqueeze(-1) * n_j

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.channels})'


class RelationAwareEncoder(torch.nn.Module):
    r"""The relation-aware structure encoder of Dual-AMN (`"Boosting the
    Speed of Entity Alignment 10x" <https://arxiv.org/abs/2103.15452>`_):
    two views of every entity, each through its own stack of
    :class:`RelationalReflectionConv` layers, all layer outputs
    concatenated:

    .. math::
        \mathbf{h}^{(0)}_{\text{ent}, i} = \tanh\Big(\frac{1}{|\mathcal{N}(i)
        \cup \{i\}|} \sum_{j \in \mathcal{N}(i) \cup \{i\}} \mathbf{x}_j\Big),
        \qquad
        \mathbf{h}^{(0)}_{\text{rel}, i} = \tanh\Big(\frac{1}{|\mathcal{E}(i)|}
        \sum_{(j, i, \tau) \in \mathcal{E}(i)} \mathbf{r}_{\tau}\Big)

        \mathbf{h}^{(l+1)}_{v} = \tanh\big(\mathrm{Conv}^{(l)}_{v}
        (\mathbf{h}^{(l)}_{v})\big), \qquad
        \mathbf{z} = \big[\mathbf{h}^{(0)}_{\text{ent}} \,\|\, \cdots
        \,\|\, \mathbf{h}^{(L)}_{\text{ent}} \,\|\,
        \mathbf{h}^{(0)}_{\text{rel}} \,\|\, \cdots \,\|\,
        \mathbf{h}^{(L)}_{\text{rel}}\big]

    where :math:`\mathcal{N}(i)` are the neighbours of :math:`i` in the
    undirected graph, :math:`\mathcal{E}(i)` the edges into :math:`i`
    (triples in both directions, the reverse of relation :math:`r` typed
    :math:`r + R`) and :math:`\mathbf{r}` the encoder's relation table,
    which both views' layers also reflect with. Dropout acts on
    :math:`\mathbf{z}`; with :obj:`out_channels` a linear map follows. The
    entity table :math:`\mathbf{x}` belongs to the caller. Dual-AMN's
    proxy-matching gate is not part of this encoder.

    Args:
        num_relations (int): Number of relation types :math:`R` in the
            directed triples; the table holds :math:`2R` rows.
        channels (int): Entity and relation embedding size :math:`d`.
            (default: :obj:`128`)
        num_layers (int): Layers :math:`L` per view. (default: :obj:`2`)
        out_channels (int, optional): Width of a final linear map; without
            it the output is :math:`\mathbf{z}`, of width :math:`2 (L + 1)
            d`. (default: :obj:`None`)
        dropout (float): Dropout probability on :math:`\mathbf{z}` in
            training. (default: :obj:`0.0`)

    Shapes:
        - **input:** ``x [N, d]``; a :class:`RelationalAdjacency` (build it
          once and reuse it), or ``edge_index [2, E]`` (head, tail) with
          ``edge_type [E]`` of the directed triples, prepared per call
        - **output:** ``[N, out_channels]`` or ``[N, 2 (L + 1) d]``
    """

    def __init__(self, num_relations: int, channels: int = 128,
                 num_layers: int = 2, out_channels: Optional[int] = None,
                 dropout: float = 0.0):
        super().__init__()
        self.num_relations, self.channels = num_relations, channels
        self.num_layers, self.dropout = num_layers, dropout
        self.out_channels = out_channels
        self.rel_emb = torch.nn.Parameter(
            torch.empty(2 * num_relations, channels))
        self.entity_convs = torch.nn.ModuleList(
            [RelationalReflectionConv(channels) for _ in range(num_layers)])
        self.relation_convs = torch.nn.ModuleList(
            [RelationalReflectionConv(channels) for _ in range(num_layers)])
        width = 2 * (num_layers + 1) * channels
        self.lin = (torch.nn.Linear(width, out_channels)
                    if out_channels is not None else None)
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.xavier_uniform_(self.rel_emb)
        for conv in [*self.entity_convs, *self.relation_convs]:
            conv.reset_parameters()
        if self.lin is not None:
            self.lin.reset_parameters()

    def forward(self, x: Tensor,
                edge_index: Union[RelationalAdjacency, Tensor],
                edge_type: Optional[Tensor] = None) -> Tensor:
        """Encodes the entities :obj:`x` ``[N, d]`` over the triples."""
        if x.dim() != 2 or x.size(1) != self.channels:
            raise ValueError(f'x must be [N, {self.channels}] (got '
                             f'{list(x.shape)})')
        graph = edge_index
        if not isinstance(graph, RelationalAdjacency):
            if edge_type is None:
                raise ValueError('edge_type is required with a plain '
                                 'edge_index (or pass a RelationalAdjacency)')
            graph = RelationalAdjacency(edge_index, edge_type, x.size(0),
                                        self.num_relations)
        elif (graph.num_nodes, graph.num_relations) != (x.size(0),
                                                       self.num_relations):
            raise ValueError(f'the graph has {graph.num_nodes} entities and '
                             f'{graph.num_relations} relations; expected '
                             f'{x.size(0)} and {self.num_relations}')
        rel = self.rel_emb
        h_ent = csr_spmm(graph.neighbours,
                         graph.neighbour_weight.to(x.dtype), x)
        h_rel = csr_spmm(graph.dst_type,
                         graph.relation_weight.to(rel.dtype), rel)
        outs = []
        for h, convs in ((h_ent, self.entity_convs),
                         (h_rel, self.relation_convs)):
            h = torch.tanh(h)
            outs.append(h)
            for conv in convs:
                h = torch.tanh(conv(h, graph, rel=rel))
                outs.append(h)
        out = F.dropout(torch.cat(outs, dim=-1), self.dropout, self.training)
        return self.lin(out) if self.lin is not None else out

    def __repr__(self) -> str:
        extra = (f', out_channels={self.out_channels}'
                 if self.out_channels is not None else '')
        extra += f', dropout={self.dropout}' if self.dropout else ''
        return (f'{self.__class__.__name__}({self.num_relations}, '
                f'channels={self.channels}, num_layers={self.num_layers}'
                f'{extra})')
