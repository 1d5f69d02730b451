"""The RICEA alignment model: encoders per modality, then a fusion layer."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from ricea_pyg.nn.fusion import fusion_resolver
from ricea_pyg.nn.projection import ModalityProjection
from ricea_pyg.nn.structure import CSRAdjacency, GATEncoder

__all__ = ['PairInputs', 'ModelOutput', 'RICEA']


@dataclass
class PairInputs:
    r"""Both KGs of a pair as one entity table: source rows
    ``0..N_s-1``, then target rows ``N_s..N_s+N_t-1``.

    Attributes:
        modalities: Modality order (``graph`` first where used).
        features: ``{modality: [N_s + N_t, F_m]}`` for the feature
            modalities.
        mask: ``[N_s + N_t, M]`` bool, True = present.
        graph: The disjoint union of both relation graphs.
        num_source, num_target: :math:`N_s`, :math:`N_t`.
    """
    modalities: List[str]
    features: Dict[str, Tensor]
    mask: Tensor
    graph: CSRAdjacency
    num_source: int
    num_target: int

    @classmethod
    def from_data(cls, data: HeteroData,
                  modalities: Optional[Sequence[str]] = None) -> PairInputs:
        """From the library's :class:`HeteroData` schema (``docs/data.md``)."""
        avail = list(data.modalities)
        mods = list(modalities) if modalities is not None else avail
        for m in mods:
            if m not in avail:
                raise ValueError(f'modality {m!r} is not in this data '
                                 f'(has {avail})')
        src, tgt = data['source'], data['target']
        n_s, n_t = src.num_nodes, tgt.num_nodes
        feats = {m: torch.cat([src[f'x_{m}'], tgt[f'x_{m}']]).float()
                 for m in mods if m != 'graph'}
        mask = torch.stack([torch.cat([src[f'mask_{m}'], tgt[f'mask_{m}']])
                            for m in mods], dim=1).bool()
        edges = torch.cat([data['source', 'rel', 'source'].edge_index,
                           data['target', 'rel', 'target'].edge_index + n_s],
                          dim=1)
        return cls(mods, feats, mask, CSRAdjacency(edges, n_s + n_t), n_s,
                   n_t)

    @property
    def num_entities(self) -> int:
        return self.num_source + self.num_target

    def in_channels(self) -> Dict[str, int]:
        return {m: x.size(1) for m, x in self.features.items()}

    def rows(self, pairs: Tensor) -> Tensor:
        """``[2, P]`` (source, target) local ids to table rows."""
        return torch.stack([pairs[0], pairs[1] + self.num_source])

    def to(self, device) -> PairInputs:
        return PairInputs(self.modalities,
                          {m: x.to(device) for m, x in self.features.items()},
                          self.mask.to(device), self.graph.to(device),
                          self.num_source, self.num_target)


class ModelOutput(NamedTuple):
    """What :class:`RICEA` computes for a set of rows."""
    fused: Tensor                  # [n, D]     joint embedding
    x: Tensor                      # [n, M, d]  per-modality embeddings
    mask: Tensor                   # [n, M]
    weights: Tensor                # [n, M]
    uncertainty: Optional[Tensor]  # [n, M] (ADC) or None
    extras: Dict[str, Tensor]      # fusion-specific (z, confidence, ...)


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
        dropout (float): GAT feature dropout. (default: :obj:`0.0`)

    Shapes:
        - **input:** :class:`PairInputs`, optional row index ``[n]``
        - **output:** :class:`ModelOutput` with ``fused [n, M d]`` (concat
          fusions) and ``x [n, M, d]``
    """

    def __init__(self, num_entities: int, in_channels: Dict[str, int],
                 modalities: Sequence[str], channels: int = 300,
                 fusion: Any = 'adc',
                 fusion_kwargs: Optional[Dict[str, Any]] = None,
                 gat_layers: int = 2, gat_heads: int = 2,
                 gat_diag: bool = True, dropout: float = 0.0):
        super().__init__()
        self.modalities = list(modalities)
        self.num_entities, self.channels = num_entities, channels
        missing = [m for m in self.modalities
                   if m != 'graph' and m not in in_channels]
        if missing:
            raise ValueError(f'no input size for modalities {missing}')
        if 'graph' in self.modalities:
            self.entity = torch.nn.Embedding(num_entities, channels)
            self.gat = GATEncoder(channels, gat_layers, gat_heads, gat_diag,
                                  dropout)
        else:
            self.entity = self.gat = None
        self.projection = ModalityProjection(
            {m: in_channels[m] for m in self.modalities if m != 'graph'},
            channels)
        self.fusion = fusion_resolver(fusion,
                                      num_modalities=len(self.modalities),
                                      channels=channels,
                                      **(fusion_kwargs or {}))
        self.reset_parameters()

    @classmethod
    def from_inputs(cls, inputs: PairInputs, **kwargs) -> RICEA:
        return cls(inputs.num_entities, inputs.in_channels(),
                   inputs.modalities, **kwargs)

    def reset_parameters(self):
        if self.entity is not None:  # as MEAformer
            torch.nn.init.normal_(self.entity.weight,
                                  std=1.0 / math.sqrt(self.num_entities))
            self.gat.reset_parameters()
        self.projection.reset_parameters()
        self.fusion.reset_parameters()

    def graph_embeddings(self, inputs: PairInputs) -> Optional[Tensor]:
        """The structure encoder on the whole graph, ``[N, d]`` (or None
        without a ``graph`` modality)."""
        if self.gat is None:
            return None
        return self.gat(self.entity.weight, inputs.graph)

    def modality_embeddings(self, inputs: PairInputs,
                            index: Optional[Tensor] = None,
                            graph: Optional[Tensor] = None) -> Tensor:
        """``[n, M, d]``: the graph encoder runs on the whole graph (or
        :obj:`graph` is its precomputed output), the projections on the
        asked rows only."""
        projected = self.projection(inputs.features, index)
        xs = []
        for m in self.modalities:
            if m == 'graph':
                g = self.graph_embeddings(inputs) if graph is None else graph
                xs.append(g if index is None else g[index])
            else:
                xs.append(projected[m])
        return torch.stack(xs, dim=1)

    def forward(self, inputs: PairInputs, index: Optional[Tensor] = None,
                graph: Optional[Tensor] = None) -> ModelOutput:
        x = self.modality_embeddings(inputs, index, graph)
        mask = inputs.mask if index is None else inputs.mask[index]
        out = self.fusion.forward_full(x, mask)
        return ModelOutput(out.fused, x, mask, out.weights, out.uncertainty,
                           out.extras or {})

    @torch.no_grad()
    def embed(self, inputs: PairInputs, batch_size: int = 8192
              ) -> ModelOutput:
        """All rows in eval mode, ``fused`` ℓ2-normalised (for search).
        The graph encoder runs once; projections and fusion run in chunks
        of :obj:`batch_size` rows, which bounds memory. ``extras`` is left
        empty."""
        was_training = self.training
        self.eval()
        try:
            graph = self.graph_embeddings(inputs)
            parts = []
            for start in range(0, inputs.num_entities, batch_size):
                idx = torch.arange(start, min(start + batch_size,
                                              inputs.num_entities),
                                   device=inputs.mask.device)
                out = self(inputs, idx, graph)
                parts.append(out._replace(extras={}))
        finally:
            self.train(was_training)
        unc = (None if parts[0].uncertainty is None else
               torch.cat([p.uncertainty for p in parts]))
        return ModelOutput(F.normalize(torch.cat([p.fused for p in parts]),
                                       dim=-1),
                           torch.cat([p.x for p in parts]),
                           torch.cat([p.mask for p in parts]),
                           torch.cat([p.weights for p in parts]), unc, {})

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.modalities}, '
                f'channels={self.channels}, fusion={self.fusion})')
