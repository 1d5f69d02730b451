"""The RICEA alignment model: encoders per modality, then a fusion layer."""
from __future__ import annotations

import math
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ricea_pyg.data.inputs import PairInputs
from ricea_pyg.data.sampling import SampledSubgraph
from ricea_pyg.nn.fusion import FusionAuxiliary, fusion_resolver
from ricea_pyg.nn.projection import ModalityProjection
from ricea_pyg.nn.relational import RelationalAdjacency, RelationAwareEncoder
from ricea_pyg.nn.structure import CSRAdjacency, GATEncoder
from ricea_pyg.search.embedding import Embeddings, QueryKey

__all__ = ['ModelOutput', 'RICEA', 'relational_blocks']


def relational_blocks(num_layers: int) -> int:
    """How many equal blocks the relational encoder's graph embedding
    concatenates: two views of :obj:`num_layers` + 1 layers each."""
    return 2 * (num_layers + 1)


class ModelOutput(NamedTuple):
    """What :class:`RICEA` computes for a set of rows."""
    fused: Tensor                   # [n, D]     joint embedding
    x: Tensor                       # [n, M, d]  per-modality embeddings
    mask: Tensor                    # [n, M]
    weights: Tensor                 # [n, M]
    uncertainty: Optional[Tensor]   # [n, M] (ADC) or None
    aux: Optional[FusionAuxiliary]  # the fusion's loss terms (z, c, ...)
    query: Optional[Tensor] = None  # [n, D'] with scoring='pair_mean'
    key: Optional[Tensor] = None    # [n, D']

    @property
    def embeddings(self) -> Embeddings:
        """What search and the alignment loss compare: a
        :class:`~ricea_pyg.search.QueryKey` with ``scoring='pair_mean'``,
        else :attr:`fused`."""
        if self.query is None:
            return self.fused
        return QueryKey(self.query, self.key)

    @property
    def extras(self) -> Dict[str, Tensor]:
        """The non-empty terms of :attr:`aux` by name (read-only view)."""
        return {} if self.aux is None else self.aux.terms()

    def select(self, index) -> ModelOutput:
        """The same output for the rows :obj:`index`."""
        def part(t):
            return None if t is None else t[index]
        return ModelOutput(self.fused[index], self.x[index],
                           self.mask[index], self.weights[index],
                           part(self.uncertainty),
                           None if self.aux is None else
                           self.aux.select(index),
                           part(self.query), part(self.key))


def _checked_score_weights(weights: Optional[Dict[str, float]],
                           modalities: Sequence[str]) -> Dict[str, float]:
    """:obj:`weights` checked, without the ones equal to 1."""
    weights = dict(weights or {})
    unknown = sorted(m for m in weights if m not in modalities)
    if unknown:
        raise ValueError(f'score_weights names {unknown}, which are not '
                         f'fused modalities of this model ({list(modalities)})')
    bad = {m: w for m, w in weights.items()
           if isinstance(w, bool) or not isinstance(w, (int, float))
           or not math.isfinite(w) or w <= 0}
    if bad:
        raise ValueError(f'score_weights must be finite numbers > 0 (got '
                         f'{bad}); leave a modality out of the model to drop '
                         'it')
    return {m: float(w) for m, w in weights.items() if w != 1}


class RICEA(torch.nn.Module):
    r"""The multi-modal entity alignment model of `"Probing Relative
    Interaction and Dynamic Calibration in Multi-modal Entity Alignment"
    <https://aclanthology.org/2025.acl-long.1384/>`_ (RICEA, ACL 2025), on
    MEAformer's backbone:

    .. math::
        \mathbf{x}^{\text{graph}} = \mathrm{GAT}(\mathbf{E}), \quad
        \mathbf{x}^{m} = \mathbf{W}_m \mathbf{f}^{m} + \mathbf{b}_m, \quad
        \mathbf{h} = \mathrm{Fusion}\big(\mathbf{x}^{1}, \dots,
        \mathbf{x}^{M}; \mu\big)

    The fusion is :class:`~ricea_pyg.nn.ADCFusion` by default; any name of
    :func:`~ricea_pyg.nn.fusion_resolver` (``'meaformer'``, ``'global'``
    (EVA-style), ``'concat'``) gives the matching baseline with the same
    encoders.

    Args:
        num_entities (int): :math:`N_s + N_t` rows of the entity table.
        in_channels (dict): Input size per feature modality.
        modalities (list): Modality order, e.g.
            ``['graph', 'rel', 'name', 'char']``.
        channels (int): :math:`d`. (default: :obj:`300`)
        fusion (str or ModalityFusion): (default: ``'adc'``)
        fusion_kwargs (dict, optional): Passed to the fusion.
        gat_layers (int): (default: :obj:`2`)
        gat_heads (int): (default: :obj:`2`)
        gat_diag (bool): Diagonal GAT weights. (default: :obj:`True`)
        dropout (float): Structure-encoder feature dropout.
            (default: :obj:`0.0`)
        structure_encoder (str): ``'gat'`` (MEAformer's
            :class:`~ricea_pyg.nn.GATEncoder`) or ``'relational'``
            (Dual-AMN's relation-aware
            :class:`~ricea_pyg.nn.RelationAwareEncoder`, with
            :obj:`gat_layers` layers per view; its :math:`2 (L + 1)` blocks
            of :math:`d / (2 (L + 1))` channels, concatenated, are the
            graph embedding, with no linear map after them, and the entity
            table is Xavier-initialised, as in Dual-AMN: a linear map to
            :math:`d` held validation Hits@1 at 0.19 against 0.79 after
            five epochs of Dual-AMN's loss on DBP15K zh_en).
            (default: ``'gat'``)
        num_relations (int): Relation types of the union graph; needed by
            ``'relational'``. (default: :obj:`0`)
        sparse_grad (bool): Sparse gradients for the entity table (for
            mini-batch training with :class:`torch.optim.SparseAdam`: only
            the rows a batch touches are updated). (default: :obj:`False`)
        checkpoint_fusion (bool): In training, keep none of the fusion's
            activations and recompute them in the backward pass
            (:func:`torch.utils.checkpoint.checkpoint`): the same
            gradients, for a second fusion forward per step. ADC's keeps
            about 12 times its input (0.4 GiB for a batch of 3,500 pairs at
            :math:`M = 4, d = 300`). (default: :obj:`True`)
        beside (list, optional): Modalities scored *beside* the fusion
            instead of through it: neither projected nor fused, their
            ℓ2-normalised input rows :math:`\mathbf{l}` are appended to the
            ℓ2-normalised fused vector, :math:`[\sqrt{1-g}\,\mathbf{h};
            \sqrt{g}\,\mathbf{l}]`, so that the cosine is
            :math:`(1-g)\cos(\mathbf{h}) + g\cos(\mathbf{l})` (with
            ``scoring='pair_mean'`` the query and key get the same block).
            Meant for wide training-free features such as the seed labels
            of :class:`~ricea_pyg.nn.SeedLabelPropagation`, which a linear
            map to :math:`d` learnt on a few thousand pairs loses. They are
            scored, not trained: the trainer's losses read
            ``forward(..., beside=False)``, the fused part alone, because
            trained beside seed labels the fused part fits the training
            pairs that the labels already get right (``docs/results.md``).
            (default: none)
        beside_weight (float): :math:`g \in (0, 1)`. (default: :obj:`0.5`)
        score_weights (dict, optional): A weight :math:`s_m > 0` per fused
            modality for the score alone: block :math:`m` of the fused
            output (and of ``query`` and ``key``) is multiplied by
            :math:`\sqrt{s_m}` before the output is normalised, so that
            modality :math:`m`'s cosine counts :math:`s_m` times. Training
            never sees them (the trainer's losses read
            ``forward(..., beside=False)``); the trainer chooses the name
            modalities' weight on validation
            (``TrainConfig.name_weight``). Needs a fusion whose output is
            the modality blocks side by side (``mode='concat'``).
            (default: all 1)

    Shapes:
        - **input:** :class:`PairInputs`, optional row index ``[n]``
        - **output:** :class:`ModelOutput` with ``fused [n, M d]`` (concat
          fusions; ``[n, M d + W]`` with :obj:`beside` rows of total width
          ``W``, ``M`` then counting the fused modalities only) and
          ``x [n, M, d]``
    """

    def __init__(self, num_entities: int, in_channels: Dict[str, int],
                 modalities: Sequence[str], channels: int = 300,
                 fusion: Any = 'adc',
                 fusion_kwargs: Optional[Dict[str, Any]] = None,
                 gat_layers: int = 2, gat_heads: int = 2,
                 gat_diag: bool = True, dropout: float = 0.0,
                 structure_encoder: str = 'gat', num_relations: int = 0,
                 sparse_grad: bool = False, checkpoint_fusion: bool = True,
                 beside: Sequence[str] = (), beside_weight: float = 0.5,
                 score_weights: Optional[Dict[str, float]] = None):
        super().__init__()
        self.checkpoint_fusion = checkpoint_fusion
        unknown = [m for m in beside if m not in modalities or m == 'graph']
        if unknown:
            raise ValueError(f'beside names {unknown}, which are not feature '
                             f'modalities of this model ({list(modalities)})')
        if not 0 < beside_weight < 1:
            raise ValueError(f'beside_weight must be in (0, 1) (got '
                             f'{beside_weight})')
        self.beside = [m for m in modalities if m in beside]
        self.beside_weight = beside_weight
        self.modalities = [m for m in modalities if m not in beside]
        if not self.modalities:
            raise ValueError('every modality is beside the fusion; at least '
                             'one must be fused')
        self.num_entities, self.channels = num_entities, channels
        missing = [m for m in modalities
                   if m != 'graph' and m not in in_channels]
        if missing:
            raise ValueError(f'no input size for modalities {missing}')
        self.beside_width = sum(in_channels[m] for m in self.beside)
        if structure_encoder not in ('gat', 'relational'):
            raise ValueError(f"structure_encoder must be 'gat' or "
                             f"'relational' (got {structure_encoder!r})")
        self.structure_kind = structure_encoder
        self.entity = self.structure = None
        if 'graph' in self.modalities:
            if structure_encoder == 'gat':
                width = channels
                self.structure = GATEncoder(channels, gat_layers, gat_heads,
                                            gat_diag, dropout)
            else:
                if num_relations < 1:
                    raise ValueError("structure_encoder='relational' needs "
                                     'num_relations >= 1 (got '
                                     f'{num_relations}); build the model '
                                     'with RICEA.from_inputs')
                blocks = relational_blocks(gat_layers)
                if channels % blocks:
                    raise ValueError(
                        f"structure_encoder='relational' concatenates "
                        f'{blocks} blocks (2 views x {gat_layers + 1} '
                        f'layers) into the graph embedding, so channels '
                        f'({channels}) must be a multiple of {blocks}, '
                        f'e.g. {128 * blocks}')
                width = channels // blocks
                self.structure = RelationAwareEncoder(
                    num_relations, width, gat_layers, dropout=dropout)
            self.entity = torch.nn.Embedding(num_entities, width,
                                             sparse=sparse_grad)
        self.projection = ModalityProjection(
            {m: in_channels[m] for m in self.modalities if m != 'graph'},
            channels)
        self.fusion = fusion_resolver(fusion,
                                      num_modalities=len(self.modalities),
                                      channels=channels,
                                      **(fusion_kwargs or {}))
        self.score_weights = score_weights
        self.reset_parameters()

    @property
    def score_weights(self) -> Dict[str, float]:
        """The weights of the modalities' cosines in the score that are
        not 1 (see :obj:`score_weights` above); assign a dict to change
        them."""
        return dict(self._score_weights)

    @score_weights.setter
    def score_weights(self, weights: Optional[Dict[str, float]]) -> None:
        self._score_weights = _checked_score_weights(weights,
                                                     self.modalities)

    def _block_scale(self, x: Tensor, weights: Dict[str, float]
                     ) -> Optional[Tensor]:
        r"""``[W]``: :math:`\sqrt{s_m}` over the columns of modality
        :math:`m`'s blocks in an output of width ``x.size(1)`` (the fused
        vector, or a query/key of two such halves); None if all are 1."""
        if not weights:
            return None
        M, d = len(self.modalities), self.channels
        if x.size(1) % (M * d):
            raise ValueError(
                f'score_weights need the {M} modality blocks of {d} columns '
                f'side by side in the fused output, which has '
                f'{x.size(1)} columns: use a fusion with mode=\'concat\'')
        s = torch.tensor([math.sqrt(weights.get(m, 1.0))
                          for m in self.modalities], dtype=x.dtype,
                         device=x.device)
        return s.repeat_interleave(d).repeat(x.size(1) // (M * d))

    @classmethod
    def from_inputs(cls, inputs: PairInputs, **kwargs) -> RICEA:
        return cls(inputs.num_entities, inputs.in_channels(),
                   inputs.modalities, num_relations=inputs.num_relations,
                   **kwargs)

    def reset_parameters(self):
        if self.entity is not None:
            if self.structure_kind == 'gat':  # as MEAformer
                torch.nn.init.normal_(self.entity.weight,
                                      std=1.0 / math.sqrt(self.num_entities))
            else:  # as Dual-AMN
                torch.nn.init.xavier_uniform_(self.entity.weight)
            self.structure.reset_parameters()
        self.projection.reset_parameters()
        self.fusion.reset_parameters()

    def load_state_dict(self, state_dict, *args, **kwargs):
        if self.structure_kind == 'relational' and \
                'structure.lin.weight' in state_dict:
            raise ValueError(
                "this checkpoint's relational encoder ends in a linear map, "
                'which RICEA dropped in 0.2.0 (its blocks are now the graph '
                'embedding); it cannot be loaded: retrain it with this '
                'version')
        return super().load_state_dict(state_dict, *args, **kwargs)

    def adjacency(self, inputs: PairInputs
                  ) -> Union[CSRAdjacency, RelationalAdjacency]:
        """The structure encoder's prepared graph, built once per
        :class:`PairInputs` and kept with it."""
        if self.structure_kind == 'relational':
            return inputs.cached('relational_adjacency', lambda:
                                 RelationalAdjacency(
                                     inputs.edge_index, inputs.edge_type,
                                     inputs.num_entities,
                                     inputs.num_relations))
        return inputs.cached('csr_adjacency', lambda: CSRAdjacency(
            inputs.edge_index, inputs.num_entities))

    def graph_embeddings(self, inputs: PairInputs) -> Optional[Tensor]:
        """The structure encoder on the whole graph, ``[N, d]`` (or None
        without a ``graph`` modality)."""
        if self.structure is None:
            return None
        return self.structure(self.entity.weight, self.adjacency(inputs))

    def sampled_graph_embeddings(self, subgraph: SampledSubgraph
                                 ) -> Tensor:
        """The structure encoder on a sampled neighbourhood
        (:class:`~ricea_pyg.data.sampling.NeighborSampler`): ``[S, d]`` for
        its seeds, in the order they were given. Only the entity rows of the
        sample are read, so with ``sparse_grad`` only they get a gradient."""
        if self.structure is None:
            raise ValueError("this model has no 'graph' modality to sample "
                             'for')
        if self.structure_kind != 'gat':
            raise ValueError("mini-batch (sampled) training supports "
                             "structure_encoder='gat' only; the relational "
                             'encoder trains on the full graph (set '
                             'sampled=false)')
        x = self.entity(subgraph.nodes)
        return self.structure(x, subgraph.adjacency())[subgraph.seed_index]

    def modality_embeddings(self, inputs: PairInputs,
                            index: Optional[Tensor] = None,
                            graph: Optional[Tensor] = None,
                            graph_rows: bool = False) -> Tensor:
        """``[n, M, d]``: the graph encoder runs on the whole graph (or
        :obj:`graph` is its precomputed output: for all rows, or with
        :obj:`graph_rows` for the rows of :obj:`index` only), the projections
        on the asked rows only."""
        feats = inputs.features
        if self.beside:
            feats = {m: f for m, f in feats.items() if m not in self.beside}
        projected = self.projection(feats, index)
        xs = []
        for m in self.modalities:
            if m == 'graph':
                g = self.graph_embeddings(inputs) if graph is None else graph
                xs.append(g if index is None or graph_rows else g[index])
            else:
                xs.append(projected[m])
        return torch.stack(xs, dim=1)

    def forward(self, inputs: PairInputs, index: Optional[Tensor] = None,
                graph: Optional[Tensor] = None,
                graph_rows: bool = False, beside: bool = True
                ) -> ModelOutput:
        """The rows :obj:`index` (all without it); with :obj:`beside`
        False the :obj:`beside` modalities are left out of ``fused``,
        ``query`` and ``key``, and :attr:`score_weights` are not applied
        (what training optimises)."""
        x = self.modality_embeddings(inputs, index, graph, graph_rows)
        mask = inputs.mask
        if self.beside:  # the fused modalities' columns only
            mask = mask[:, [inputs.modalities.index(m)
                            for m in self.modalities]]
        mask = mask if index is None else mask[index]
        if self.checkpoint_fusion and self.training and \
                torch.is_grad_enabled():
            out = checkpoint(self.fusion.forward_full, x, mask,
                             use_reentrant=False)
        else:
            out = self.fusion.forward_full(x, mask)
        fused, query, key = out.fused, out.query, out.key
        scale = self._block_scale(fused, self._score_weights) if beside \
            else None
        if scale is not None:
            fused = fused * scale
            if query is not None:
                scale = self._block_scale(query, self._score_weights)
                query, key = query * scale, key * scale
        if self.beside and beside:
            rows = self.beside_rows(inputs, index)
            a, b = self._beside_scales(self.beside_weight)
            fused = torch.cat([F.normalize(fused, dim=1) * a, rows * b], 1)
            if query is not None:
                query = torch.cat([query * a, rows * b], 1)
                key = torch.cat([key * a, rows * b], 1)
            else:
                # Scored as they are, never re-normalised: a zero beside
                # row (an entity no seed reaches) leaves its vector at norm
                # sqrt(1 - g), and re-normalising would lift its scores
                # above (1 - g) cos(h) and favour it as a candidate.
                query = key = fused
        return ModelOutput(fused, x, mask, out.weights, out.uncertainty,
                           out.aux, query, key)

    @staticmethod
    def _beside_scales(weight: float) -> Tuple[float, float]:
        """The scales of the fused and the beside block for :math:`g`."""
        return math.sqrt(1 - weight), math.sqrt(weight)

    def reweigh(self, embeddings: Embeddings, weight: float) -> Embeddings:
        """:obj:`embeddings` (``fused``, ``query``/``key`` or
        :attr:`ModelOutput.embeddings`, made at :attr:`beside_weight`) as
        they are at :math:`g` = :obj:`weight`, without running the model:
        the fused block and the :obj:`beside` rows (the last
        :attr:`beside_width` columns) rescaled. The trainer chooses
        :math:`g` on validation with it."""
        if not self.beside:
            raise ValueError('reweigh needs beside modalities; this model '
                             'has none')
        if not 0 < weight < 1:
            raise ValueError(f'weight must be in (0, 1) (got {weight})')
        if isinstance(embeddings, QueryKey):
            query = self.reweigh(embeddings.query, weight)
            key = (query if embeddings.key is embeddings.query else
                   self.reweigh(embeddings.key, weight))
            return QueryKey(query, key)
        (a0, b0), (a, b) = (self._beside_scales(self.beside_weight),
                            self._beside_scales(weight))
        cut = embeddings.size(1) - self.beside_width
        if cut <= 0:
            raise ValueError(f'{embeddings.size(1)} columns hold no fused '
                             f'block before the {self.beside_width} beside '
                             'columns: not this model\'s embeddings')
        return torch.cat([embeddings[:, :cut] * (a / a0),
                          embeddings[:, cut:] * (b / b0)], 1)

    def rescore(self, embeddings: Embeddings, weights: Dict[str, float]
                ) -> Embeddings:
        """:obj:`embeddings` (``fused``, ``query``/``key`` or
        :attr:`ModelOutput.embeddings`, from :meth:`embed`, made at
        :attr:`score_weights`) as they are with :obj:`weights` instead,
        without running the model: each modality's blocks rescaled, and the
        fused part normalised again where :meth:`embed` normalises it. The
        trainer chooses the name modalities' weight on validation with
        it."""
        old = self._score_weights
        new = _checked_score_weights(weights, self.modalities)
        ratio = {m: new.get(m, 1.0) / old.get(m, 1.0)
                 for m in self.modalities}
        # The fused part is unit-norm (scaled by the beside weight) unless
        # the fusion gives a query and a key (pair_mean), scored as is.
        unit = self.fusion.scoring != 'pair_mean'

        def part(x: Tensor) -> Tensor:
            cut = x.size(1) - self.beside_width
            fused = x[:, :cut]
            scaled = fused * self._block_scale(fused, ratio)
            if unit:
                scaled = F.normalize(scaled, dim=1) * fused.norm(
                    dim=1, keepdim=True)
            return torch.cat([scaled, x[:, cut:]], 1) if self.beside \
                else scaled

        if isinstance(embeddings, QueryKey):
            query = part(embeddings.query)
            key = (query if embeddings.key is embeddings.query else
                   part(embeddings.key))
            return QueryKey(query, key)
        return part(embeddings)

    def beside_rows(self, inputs: PairInputs,
                    index: Optional[Tensor] = None) -> Tensor:
        """``[n, W]``: the :obj:`beside` modalities' input rows, each
        ℓ2-normalised, side by side and scaled to unit norm together."""
        parts = []
        for m in self.beside:
            f = inputs.features[m]
            f = f if index is None else f[index]
            parts.append(F.normalize(f.float(), dim=1))
        rows = torch.cat(parts, 1)
        return rows / math.sqrt(len(parts)) if len(parts) > 1 else rows

    @torch.no_grad()
    def embed(self, inputs: PairInputs, batch_size: int = 8192,
              search_only: bool = False) -> ModelOutput:
        """All rows in eval mode, ``fused`` ℓ2-normalised and ``query`` /
        ``key`` as they are (for search, see :attr:`ModelOutput.embeddings`;
        with :obj:`beside` modalities ``fused`` is kept as it is and is
        also the query and key).
        The graph encoder runs once; projections and fusion run in chunks
        of :obj:`batch_size` rows written into preallocated outputs, which
        bounds memory. ``aux`` is left empty; with :obj:`search_only` so are
        ``x``, ``weights`` and ``uncertainty`` (None), which saves
        ``[N, M, d]`` on large graphs."""
        was_training = self.training
        self.eval()
        n = inputs.num_entities
        keep = (('fused', 'mask', 'query', 'key') if search_only else
                ('fused', 'x', 'mask', 'weights', 'uncertainty', 'query',
                 'key'))
        full = {}
        try:
            graph = self.graph_embeddings(inputs)
            for start in range(0, n, batch_size):
                end = min(start + batch_size, n)
                idx = torch.arange(start, end, device=inputs.mask.device)
                out = self(inputs, idx, graph)
                for name in keep:
                    part = getattr(out, name)
                    if part is None or (name != 'fused' and
                                        part is out.fused):
                        continue  # the query/key that are `fused` itself
                    if name == 'fused' and not self.beside:
                        part = F.normalize(part, dim=-1)
                    if name not in full:
                        full[name] = part.new_empty((n,) + part.shape[1:])
                    full[name][start:end] = part
        finally:
            self.train(was_training)
        if 'query' in keep and 'query' not in full and self.beside:
            full['query'] = full['key'] = full['fused']
        return ModelOutput(full['fused'], full.get('x'), full['mask'],
                           full.get('weights'), full.get('uncertainty'),
                           None, full.get('query'), full.get('key'))

    def __repr__(self) -> str:
        extra = ('' if self.structure_kind == 'gat' else
                 f', structure_encoder={self.structure_kind!r}')
        if self.beside:
            extra += f', beside={self.beside}, g={self.beside_weight:g}'
        if self._score_weights:
            extra += f', score_weights={self._score_weights}'
        return (f'{self.__class__.__name__}({self.modalities}, '
                f'channels={self.channels}{extra}, fusion={self.fusion})')

