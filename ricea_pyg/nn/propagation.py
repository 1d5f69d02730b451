r"""Parameter-free propagation over the relation graph of a KG pair.

Two operators that need no training, for the features an aligner reads:

* :class:`FeaturePropagation` smooths entity features (names, character
  n-grams) over the graph, as SEU and LightEA do with names: a name that is
  ambiguous alone becomes distinctive with its neighbours' names.
* :class:`SeedLabelPropagation` gives both entities of a seed pair the same
  random label and spreads the labels over LightEA's three views (entity,
  relation, relation-weighted edges): a structure embedding with no
  parameters.

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
    with relation :math:`r + R`. Four patterns come out of it:

    * :obj:`weighted` (:math:`N \times N`): the row-normalised adjacency
      with self-loops in which a triple of relation :math:`r` weighs
      :math:`\log(|\mathcal{T}| / |\mathcal{T}_r|)`, so that rare
      relations count more than ubiquitous ones (SEU),

      .. math::
          \hat{\mathbf{A}}_{ij} = \frac{\mathbb{1}[i = j] + \sum_{(i, r, j)}
          \log(|\mathcal{T}| / |\mathcal{T}_r|)}{\sum_{j'} (\cdots)};

    * :obj:`neighbours` (:math:`N \times N`): neighbour counts
      (:obj:`neighbour_count`), no self-loops;
    * :obj:`neighbour_relations` (:math:`\text{nnz} \times 2R`): the
      relations of each entry of :obj:`neighbours`, the reverse ones as
      :math:`r + R`;
    * :obj:`incidence` (:math:`N \times 2R`): the relations each entity is
      the head of, the reverse ones (it is the tail) as :math:`r + R`.

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
        self.neighbour_relations, _ = CSRPattern.from_coo(
            inverse, rel, (self.neighbours.nnz, 2 * num_relations))
        self.incidence, _ = CSRPattern.from_coo(
            row, rel, (num_nodes, 2 * num_relations))

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
    r"""A structure embedding without parameters: LightEA's three-view label
    propagation, from `"LightEA: A Scalable, Robust, and Interpretable
    Entity Alignment Framework via Three-view Label Propagation"
    <https://arxiv.org/abs/2210.10436>`_.

    Both entities of each seed pair get one shared random unit label
    :math:`\mathbf{y}_p \in \mathbb{R}^d`; the labels spread over the
    entity and relation views,

    .. math::
        \mathbf{E}^{(0)}_i = \mathbf{y}_p \ \text{if } i \in \text{pair } p,
        \ \text{else } \mathbf{0}, \qquad \mathbf{R}^{(0)} = \mathbf{0},

        \mathbf{E}^{(k)} = \overline{(\mathbf{A} + 2\mathbf{D})\,
        \mathbf{E}^{(k-1)} + \mathbf{B}\mathbf{S}\,\mathbf{R}^{(k-1)}},
        \qquad
        \mathbf{R}^{(k)} = \overline{\mathbf{B}^\top \mathbf{E}^{(k-1)}},

    with :math:`\overline{\,\cdot\,}` the row-wise :math:`\ell_2`
    normalisation, :math:`\mathbf{A}` the neighbour counts of
    :class:`PropagationGraph`, :math:`\mathbf{D}` their row sums (each
    triple counts once per direction on the diagonal, as in LightEA),
    :math:`\mathbf{B} \in \{0, 1\}^{N \times 2R}` the entity-relation
    incidence (an entity is the head of relation :math:`r` or of its
    reverse :math:`r + R`) and :math:`\mathbf{S}` the swap
    :math:`r \leftrightarrow r + R`, so that an entity reads the relations
    that point at it. The third view weighs each edge by its relations and
    reads the neighbours through :math:`H` random heads:

    .. math::
        \mathbf{e}_i = \overline{[\mathbf{E}^{(0)}_i \| \cdots \|
        \mathbf{E}^{(K)}_i]}, \quad
        \mathbf{r}_r = \overline{[\mathbf{R}^{(0)}_r \| \cdots \|
        \mathbf{R}^{(K)}_r]}, \quad
        a^h_{ij} = \sum_{r \in \mathcal{R}(i, j)} \mathbf{r}_r^\top
        \mathbf{u}_h,

        \mathbf{X}_i = \overline{\Big[\sum_{j \in \mathcal{N}(i)}
        a^h_{ij}\, \mathbf{V}_h^\top \mathbf{e}_j\Big]_{h = 1}^{H}},

    with :math:`\mathcal{R}(i, j)` the relations of the triples from
    :math:`i` to :math:`j` (reverses included) and random
    :math:`\mathbf{u}_h \in \mathbb{R}^{(K+1) d}`,
    :math:`\mathbf{V}_h \in \mathbb{R}^{(K+1) d \times m}`. Two entities
    get similar rows when they reach the same seeds *through the same
    relations*. The output is the third view alone, as in LightEA.

    :math:`\mathbf{e}\mathbf{V}` is computed without forming it: row
    normalisation commutes with a right product, so the projected labels
    :math:`\mathbf{y}_p \mathbf{V}` are propagated with the row norms of
    the :math:`d`-wide views. That costs :math:`P \cdot d \cdot Hm`
    instead of :math:`N \cdot (K+1) d \cdot Hm`, for :math:`P` seed pairs.

    Args:
        channels (int): Label dimension :math:`d`. Random labels are close
            to orthogonal when :math:`d` is large. (default: :obj:`1024`)
        hops (int): :math:`K \geq 1`. (default: :obj:`2`)
        heads (int): :math:`H`, relation projections of the third view.
            (default: :obj:`512`)
        head_channels (int): :math:`m`, width of each head.
            (default: :obj:`16`)

    Shapes:
        - **input:** seed pairs :math:`(2, P)` in rows of the graph, a
          :class:`PropagationGraph` of :math:`N` entities
        - **output:** :math:`(N, H m)`
    """

    def __init__(self, channels: int = 1024, hops: int = 2, heads: int = 512,
                 head_channels: int = 16):
        super().__init__()
        for name, value in (('channels', channels), ('hops', hops),
                            ('heads', heads),
                            ('head_channels', head_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or \
                    value < 1:
                raise ValueError(f'{name} must be an int >= 1 (got '
                                 f'{value!r})')
        self.channels, self.hops = channels, hops
        self.heads, self.head_channels = heads, head_channels
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """No parameters: kept for PyG's interface."""

    @property
    def out_channels(self) -> int:
        return self.heads * self.head_channels

    @torch.no_grad()
    def forward(self, seed_pairs: Tensor, graph: PropagationGraph,
                generator: Optional[torch.Generator] = None,
                dtype: Optional[torch.dtype] = None) -> Tensor:
        r"""Runs the forward pass of the module.

        Args:
            seed_pairs (Tensor): ``[2, P]`` rows of the graph, one seed pair
                per column.
            graph (PropagationGraph): The graph of the pair.
            generator (torch.Generator, optional): Draws the labels and the
                heads. (default: :obj:`None`)
            dtype (torch.dtype, optional): The output's type, one of
                float32, float64, float16 and bfloat16. A half type is
                built in place, without a float32 copy of the output (each
                entry rounded once before and once after its row's
                normalisation). (default: :obj:`None`, meaning float32)
        """
        if seed_pairs.dim() != 2 or seed_pairs.size(0) != 2 or \
                seed_pairs.size(1) == 0:
            raise ValueError(f'seed_pairs must be [2, P] with P >= 1 (got '
                             f'shape {tuple(seed_pairs.shape)})')
        if seed_pairs.min() < 0 or seed_pairs.max() >= graph.num_nodes:
            raise ValueError(f'seed_pairs refer to entities outside [0, '
                             f'{graph.num_nodes})')
        dtype = torch.float32 if dtype is None else dtype
        if dtype not in _OUTPUT_DTYPES:
            raise ValueError(f'dtype must be one of {list(_OUTPUT_DTYPES)} '
                             f'(got {dtype})')
        d, hops, m = self.channels, self.hops, self.head_channels
        width = (hops + 1) * d
        dev = graph.neighbours.row.device
        seeds = seed_pairs.to(dev)
        # Drawn on the CPU so that a seed gives the same labels on any device.
        labels = F.normalize(torch.randn(seeds.size(1), d,
                                         generator=generator), dim=1).to(dev)
        rel_heads = F.normalize(torch.randn(width, self.heads,
                                            generator=generator), dim=1)
        ent_heads = F.normalize(torch.randn(width, self.heads, m,
                                            generator=generator), dim=2)
        views = _LabelViews(graph)

        # The d-wide views: the relation features, and the row norms that
        # the projected labels reuse.
        ent, rel = views.seed(labels, seeds)
        rel_hops, ent_norms, rel_norms = [rel], [], []
        for _ in range(hops):
            ent, rel, ent_norm, rel_norm = views.hop(ent, rel)
            ent_norms.append(ent_norm)
            rel_norms.append(rel_norm)
            rel_hops.append(rel)
        # [e_0 .. e_K] normalised: every hop is a unit or a zero row.
        ent_scale = views.concat_scale(seeds, ent_norms)
        rel = F.normalize(torch.cat(rel_hops, dim=1), dim=1)
        # [2R, H]: each relation's weight under each head; the [H, E] edge
        # weights are built one block of heads at a time.
        rel_weight = rel @ rel_heads.to(dev)
        del rel, rel_hops, ent

        out = torch.empty(graph.num_nodes, self.out_channels, device=dev,
                          dtype=dtype)
        # A half-type output is stored scaled by 1 / (an estimate of each
        # row's norm), so that its entries stay far from the type's
        # limits; the norms themselves are summed in float32.
        half = dtype in (torch.float16, torch.bfloat16)
        sq_norm = torch.zeros(graph.num_nodes, device=dev) if half else None
        row_scale = None
        block = max(1, _BLOCK_COLUMNS // m)
        for h0 in range(0, self.heads, block):
            h1 = min(h0 + block, self.heads)
            edge_weight = (views.edge_relations @ rel_weight[:, h0:h1]
                           .contiguous()).t().contiguous()
            # e V for this block of heads, hop by hop.
            proj = None
            for k in range(hops + 1):
                v = ent_heads[k * d:(k + 1) * d, h0:h1].reshape(d, -1)
                hop, hop_rel = views.seed(labels @ v.to(dev), seeds)
                for j in range(k):
                    hop, hop_rel, _, _ = views.hop(hop, hop_rel,
                                                   ent_norms[j], rel_norms[j])
                proj = hop if proj is None else proj.add_(hop)
            del hop, hop_rel
            proj.mul_(ent_scale.unsqueeze(1))
            # Head-major, so that each head's product reads contiguous
            # memory (3x faster than a strided slice).
            proj = proj.view(-1, h1 - h0, m).transpose(0, 1).contiguous()
            first = []  # the first block's heads, until the scale is known
            for h in range(h0, h1):
                y = csr_spmm(graph.neighbours, edge_weight[h - h0],
                             proj[h - h0])
                if half:
                    sq_norm += y.square().sum(dim=1)
                    if row_scale is None:
                        first.append(y)
                        continue
                    y = y * row_scale.unsqueeze(1)
                out[:, h * m:(h + 1) * m] = y
            if first:  # scaled by the first block's share of the heads
                # A new tensor: sq_norm must stay the sum of squares.
                estimate = (sq_norm * (self.heads / (h1 - h0))).sqrt_()
                row_scale = torch.where(estimate > 0, 1 / estimate,
                                        torch.ones_like(estimate))
                for h, y in zip(range(h0, h1), first):
                    out[:, h * m:(h + 1) * m] = y * row_scale.unsqueeze(1)
            del first, proj, edge_weight
        if not half:
            # F.normalize in place: a copy would double the largest buffer.
            return out.div_(out.norm(dim=1, keepdim=True).clamp_min_(1e-12))
        # stored = y / estimate, so y / ||y|| = stored * estimate / ||y||.
        factor = row_scale.reciprocal_().div_(
            sq_norm.sqrt_().clamp_min_(1e-12))
        for r0 in range(0, out.size(0), _BLOCK_ROWS):
            rows = out[r0:r0 + _BLOCK_ROWS]
            rows.copy_(rows.float() * factor[r0:r0 + _BLOCK_ROWS, None])
        return out

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, '
                f'hops={self.hops}, heads={self.heads}, '
                f'head_channels={self.head_channels})')


#: Columns of the projected labels propagated at once in
#: :class:`SeedLabelPropagation` (caps its working memory at a few
#: :math:`N \times 512` buffers). On DBP15K 512 is also faster than 2048
#: (17.7 against 24.6 s, benchmarks/seed_labels.py).
_BLOCK_COLUMNS = 512
_BLOCK_ROWS = 8192  # rows normalised at a time in a half-type output
_OUTPUT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class _LabelViews:
    """The entity and relation views of :class:`SeedLabelPropagation`."""

    def __init__(self, graph: PropagationGraph):
        self.graph = graph
        ones = torch.ones(graph.incidence.nnz, device=graph.incidence.row.device)
        self.incidence = graph.incidence.matrix(ones)
        self.incidence_t = graph.incidence.matrix_t(ones)
        self.loop = 2 * torch.zeros(graph.num_nodes, device=ones.device
                                    ).index_add_(0, graph.neighbours.row,
                                                 graph.neighbour_count)
        r = graph.num_relations
        self.swap = torch.cat([torch.arange(r, 2 * r), torch.arange(r)]).to(
            ones.device)
        self.edge_relations = graph.neighbour_relations.matrix(torch.ones(
            graph.neighbour_relations.nnz, device=ones.device))

    def seed(self, labels: Tensor, seeds: Tensor):
        """Hop 0: each seed pair's label on both its entities; no
        relation features yet."""
        width = labels.size(1)
        ent = labels.new_zeros(self.graph.num_nodes, width)
        ent[seeds[0]] = labels
        ent[seeds[1]] = labels
        return ent, labels.new_zeros(2 * self.graph.num_relations, width)

    def hop(self, ent: Tensor, rel: Tensor, ent_norm: Tensor = None,
            rel_norm: Tensor = None):
        """One hop; with norms given, divides by them instead of
        normalising (the projected labels)."""
        g = self.graph
        new_rel = self.incidence_t @ ent
        new_ent = csr_spmm(g.neighbours, g.neighbour_count, ent) \
            + self.loop.unsqueeze(1) * ent + self.incidence @ rel[self.swap]
        if ent_norm is None:
            ent_norm = new_ent.norm(dim=1).clamp_min(_EPS)
            rel_norm = new_rel.norm(dim=1).clamp_min(_EPS)
        return (new_ent.div_(ent_norm.unsqueeze(1)),
                new_rel.div_(rel_norm.unsqueeze(1)), ent_norm, rel_norm)

    def concat_scale(self, seeds: Tensor, ent_norms) -> Tensor:
        """``1 / ||[E^(0) .. E^(K)]||`` per row: hop 0 is a unit row on
        seeds, and hop k a unit row where its norm was not zero."""
        count = torch.zeros(self.graph.num_nodes, device=seeds.device)
        count[seeds.reshape(-1)] = 1
        for norm in ent_norms:
            count += (norm > _EPS).float()
        return count.clamp_min(1).rsqrt()


_EPS = 1e-12
