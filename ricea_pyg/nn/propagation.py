r"""Parameter-free propagation over the relation graph of a KG pair.

Two operators that need no training, for the features an aligner reads:

* :class:`FeaturePropagation` smooths entity features (names, character
  n-grams) over the graph, as SEU and LightEA do with names: a name that is
  ambiguous alone becomes distinctive with its neighbours' names.
* :class:`SeedLabelPropagation` gives both entities of a seed pair the same
  random label and spreads the labels over the entity and relation views
  (LightEA's label propagation): a structure embedding with no parameters.

Both read a :class:`PropagationGraph`, built once per pair.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ricea_pyg.nn.relational import check_triples
from ricea_pyg.nn.structure import CSRPattern, csr_spmm

__all__ = ['PropagationGraph', 'FeaturePropagation', 'SeedLabelPropagation']


class PropagationGraph:
    r"""The triples of a KG pair prepared once for :class:`FeaturePropagation`
    and :class:`SeedLabelPropagation`.

    Every triple :math:`(h, r, t)` is used in both directions, the reverse
    with relation :math:`r + R`. Three matrices come out of it:

    * :obj:`weighted` (:math:`N \times N`): the row-normalised adjacency
      with self-loops in which a triple of relation :math:`r` weighs
      :math:`\log(|\mathcal{T}| / |\mathcal{T}_r|)`, so that rare
      relations count more than ubiquitous ones (SEU),

      .. math::
          \hat{\mathbf{A}}_{ij} = \frac{\mathbb{1}[i = j] + \sum_{(i, r, j)}
          \log(|\mathcal{T}| / |\mathcal{T}_r|)}{\sum_{j'} (\cdots)};

    * :obj:`neighbours` (:math:`N \times N`): neighbour counts, no
      self-loops;
    * :obj:`incidence` (:math:`N \times 2R`): how often each entity takes
      part in each (directed) relation.

    Args:
        edge_index (Tensor): ``[2, E]`` (head, tail) of the triples of both
            KGs, in rows of one entity table.
        edge_type (Tensor): ``[E]`` relation ids in :math:`[0, R)`.
        num_nodes (int): Entities :math:`N` of both KGs.
        num_relations (int): :math:`R`.
    """

    def __init__(self, edge_index: Tensor, edge_type: Tensor, num_nodes: int,
                 num_relations: int):
        edge_index, edge_type = edge_index.long(), edge_type.long()
        check_triples(edge_index, edge_type, num_nodes, num_relations)
        self.num_nodes, self.num_relations = int(num_nodes), int(num_relations)
        head, tail = edge_index
        dev = edge_index.device
        count = torch.bincount(edge_type, minlength=num_relations).double()
        rarity = torch.log(max(edge_type.numel(), 1) / count.clamp_min(1))
        weight = rarity[edge_type].float()
        loop = torch.arange(num_nodes, device=dev)
        row = torch.cat([head, tail, loop])
        col = torch.cat([tail, head, loop])
        value = torch.cat([weight, weight, torch.ones(num_nodes, device=dev)])
        self.weighted, inverse = CSRPattern.from_coo(row, col,
                                                     (num_nodes, num_nodes))
        summed = torch.zeros(self.weighted.nnz, device=dev).index_add_(
            0, inverse, value)
        degree = torch.zeros(num_nodes, device=dev).index_add_(
            0, self.weighted.row, summed)
        self.weighted_value = summed / degree[self.weighted.row]

        row, col = torch.cat([head, tail]), torch.cat([tail, head])
        self.neighbours, inverse = CSRPattern.from_coo(
            row, col, (num_nodes, num_nodes))
        self.neighbour_count = torch.zeros(
            self.neighbours.nnz, device=dev).index_add_(
                0, inverse, torch.ones(row.numel(), device=dev))
        rel = torch.cat([edge_type, edge_type + num_relations])
        self.incidence, inverse = CSRPattern.from_coo(
            row, rel, (num_nodes, 2 * num_relations))
        self.incidence_count = torch.zeros(
            self.incidence.nnz, device=dev).index_add_(
                0, inverse, torch.ones(row.numel(), device=dev))

    def smooth(self, x: Tensor) -> Tensor:
        r""":math:`\hat{\mathbf{A}} \mathbf{X}`."""
        return csr_spmm(self.weighted, self.weighted_value, x)

    def to(self, device) -> PropagationGraph:
        out = object.__new__(type(self))
        out.__dict__ = {k: v.to(device) if hasattr(v, 'to') else v
                        for k, v in self.__dict__.items()}
        return out

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_nodes={self.num_nodes}, '
                f'num_relations={self.num_relations}, '
                f'nnz={self.neighbours.nnz})')


class FeaturePropagation(torch.nn.Module):
    r"""Entity features smoothed over the relation graph, every hop kept,
    from `"From Alignment to Assignment: Frustratingly Simple Unsupervised
    Entity Alignment" <https://arxiv.org/abs/2109.02363>`_ (SEU):

    .. math::
        \mathbf{X}^{(0)} = \overline{\mathbf{X}}, \qquad
        \mathbf{X}^{(k)} = \overline{\hat{\mathbf{A}}\mathbf{X}^{(k-1)}},
        \qquad
        \mathbf{X}' = \tfrac{1}{\sqrt{K + 1}}\,\big[\mathbf{X}^{(0)} \,\|\,
        \cdots \,\|\, \mathbf{X}^{(K)}\big],

    with :math:`\overline{\,\cdot\,}` the row-wise :math:`\ell_2`
    normalisation and :math:`\hat{\mathbf{A}}` the rarity-weighted
    adjacency of :class:`PropagationGraph`. Rows of :math:`\mathbf{X}'`
    have unit norm, so the cosine of two entities is the mean of their
    cosines at hops :math:`0 \ldots K`. All-zero rows (a missing feature)
    stay zero at hop 0 and take their neighbours' features from hop 1.

    Args:
        hops (int): :math:`K`. (default: :obj:`2`)

    Shapes:
        - **input:** features :math:`(N, F)`, a :class:`PropagationGraph`
          of :math:`N` entities
        - **output:** :math:`(N, (K + 1) F)`
    """

    def __init__(self, hops: int = 2):
        super().__init__()
        if isinstance(hops, bool) or not isinstance(hops, int) or hops < 0:
            raise ValueError(f'hops must be an int >= 0 (got {hops!r})')
        self.hops = hops
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """No parameters: kept for PyG's interface."""

    def forward(self, x: Tensor, graph: PropagationGraph) -> Tensor:
        if x.dim() != 2 or x.size(0) != graph.num_nodes:
            raise ValueError(f'x must be [N, F] with N = {graph.num_nodes} '
                             f'(got shape {tuple(x.shape)})')
        if not bool(torch.isfinite(x).all()):
            raise ValueError('x has NaN or infinite entries; fill or mask '
                             'them before propagating')
        # Hops written into one preallocated output: peak memory is the
        # output plus one hop, not twice the output.
        width = x.size(1)
        out = x.new_empty(x.size(0), (self.hops + 1) * width,
                          dtype=torch.float32)
        h = F.normalize(x.float(), dim=1)
        out[:, :width] = h
        for k in range(1, self.hops + 1):
            h = F.normalize(graph.smooth(h), dim=1)
            out[:, k * width:(k + 1) * width] = h
        return out.div_(math.sqrt(self.hops + 1))

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(hops={self.hops})'


class SeedLabelPropagation(torch.nn.Module):
    r"""A structure embedding without parameters: both entities of each seed
    pair get one shared random unit label, which then spreads over the
    entity and relation views, after `"LightEA: A Scalable, Robust, and
    Interpretable Entity Alignment Framework via Three-view Label
    Propagation" <https://arxiv.org/abs/2210.10436>`_:

    .. math::
        \mathbf{E}^{(0)}_i = \mathbf{y}_p \ \text{if } i \in \text{pair } p,
        \ \text{else } \mathbf{0}, \qquad \mathbf{R}^{(0)} = \mathbf{0},

        \mathbf{E}^{(k)} = \overline{\mathbf{A}\,\mathbf{E}^{(k-1)} +
        \mathbf{B}\,\mathbf{R}^{(k-1)}}, \qquad
        \mathbf{R}^{(k)} = \overline{\mathbf{B}^\top \mathbf{E}^{(k-1)}},

        \mathbf{X} = \tfrac{1}{\sqrt{K}}\,\big[\mathbf{E}^{(1)} \,\|\,
        \cdots \,\|\, \mathbf{E}^{(K)}\big],

    with :math:`\mathbf{y}_p \in \mathbb{R}^d` random unit vectors,
    :math:`\mathbf{A}` the neighbour counts and :math:`\mathbf{B}` the
    entity–relation incidence of :class:`PropagationGraph`. Two entities
    whose neighbourhoods reach the same seed pairs get similar rows; the
    relation view lets a relation of each KG carry the labels of the
    seeds around it, so that relations that link the same seeds match.
    Hop 0 is left out: it holds only the seeds' own labels, which the pairs
    to be found do not have. LightEA's third view (relation-weighted edges)
    is not included.

    Args:
        channels (int): Label dimension :math:`d`. Random labels are close
            to orthogonal when :math:`d` is large. (default: :obj:`1024`)
        hops (int): :math:`K \geq 1`. (default: :obj:`2`)

    Shapes:
        - **input:** seed pairs :math:`(2, P)` in rows of the graph, a
          :class:`PropagationGraph` of :math:`N` entities
        - **output:** :math:`(N, K d)`
    """

    def __init__(self, channels: int = 1024, hops: int = 2):
        super().__init__()
        for name, value, low in (('channels', channels, 1), ('hops', hops, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or \
                    value < low:
                raise ValueError(f'{name} must be an int >= {low} (got '
                                 f'{value!r})')
        self.channels, self.hops = channels, hops
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """No parameters: kept for PyG's interface."""

    def forward(self, seed_pairs: Tensor, graph: PropagationGraph,
                generator: Optional[torch.Generator] = None) -> Tensor:
        if seed_pairs.dim() != 2 or seed_pairs.size(0) != 2 or \
                seed_pairs.size(1) == 0:
            raise ValueError(f'seed_pairs must be [2, P] with P >= 1 (got '
                             f'shape {tuple(seed_pairs.shape)})')
        if seed_pairs.min() < 0 or seed_pairs.max() >= graph.num_nodes:
            raise ValueError(f'seed_pairs refer to entities outside [0, '
                             f'{graph.num_nodes})')
        dev = graph.neighbours.row.device
        # Drawn on the CPU so that a seed gives the same labels on any device.
        labels = torch.randn(seed_pairs.size(1), self.channels,
                             generator=generator).to(dev)
        labels = F.normalize(labels, dim=1)
        ent = torch.zeros(graph.num_nodes, self.channels, device=dev)
        ent[seed_pairs[0].to(dev)] = labels
        ent[seed_pairs[1].to(dev)] = labels
        rel = torch.zeros(2 * graph.num_relations, self.channels, device=dev)
        out = []
        for _ in range(self.hops):
            new_rel = graph.incidence.matrix_t(graph.incidence_count) @ ent
            ent = (csr_spmm(graph.neighbours, graph.neighbour_count, ent)
                   + csr_spmm(graph.incidence, graph.incidence_count, rel))
            ent, rel = F.normalize(ent, dim=1), F.normalize(new_rel, dim=1)
            out.append(ent)
        return torch.cat(out, dim=1) / math.sqrt(self.hops)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, '
                f'hops={self.hops})')
