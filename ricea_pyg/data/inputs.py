"""The model-facing view of a pair: both KGs as one entity table."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ricea_pyg.data.schema import (
    SIDES,
    feature_key,
    mask_key,
    relation_edge,
)

__all__ = ['PairInputs']


def _num_types(edge_type: Tensor) -> int:
    return int(edge_type.max()) + 1 if edge_type.numel() else 0


@dataclass
class PairInputs:
    r"""Both KGs of a pair as one entity table: source rows
    ``0..N_s-1``, then target rows ``N_s..N_s+N_t-1``. This is the one
    adapter from the library's :class:`HeteroData` schema to tensors a
    model reads.

    Attributes:
        modalities (list): Modality order (``graph`` first where used).
        features (dict): ``{modality: [N_s + N_t, F_m]}`` for the feature
            modalities (``graph`` has no input feature).
        mask (Tensor): ``[N_s + N_t, M]`` bool, True = present.
        edge_index (Tensor): ``[2, E]`` (head, tail) relation triples of
            both KGs in table rows, as given (directed, duplicates kept).
        edge_type (Tensor): ``[E]`` relation ids; the target KG's ids are
            shifted past the source's, so the two KGs never share one.
        num_relations (int): Relation ids in :obj:`edge_type`.
        num_source, num_target (int): :math:`N_s`, :math:`N_t`.
    """
    modalities: List[str]
    features: Dict[str, Tensor]
    mask: Tensor
    edge_index: Tensor
    edge_type: Tensor
    num_relations: int
    num_source: int
    num_target: int
    _cache: Dict[str, Any] = field(default_factory=dict, repr=False,
                                   compare=False)

    @classmethod
    def from_data(cls, data: HeteroData,
                  modalities: Optional[Sequence[str]] = None) -> PairInputs:
        """From the library's :class:`HeteroData` schema (``docs/data.md``).

        Args:
            data (HeteroData): A pair in the library's schema.
            modalities (list, optional): Which modalities, in which order.
                (default: all of ``data.modalities``)
        """
        avail = list(data.modalities)
        mods = list(modalities) if modalities is not None else avail
        for m in mods:
            if m not in avail:
                raise ValueError(f'modality {m!r} is not in this data '
                                 f'(has {avail})')
        src, tgt = (data[s] for s in SIDES)
        n_s = src.num_nodes
        feats = {m: torch.cat([src[feature_key(m)],
                               tgt[feature_key(m)]]).float()
                 for m in mods if m != 'graph'}
        mask = torch.stack([torch.cat([src[mask_key(m)], tgt[mask_key(m)]])
                            for m in mods], dim=1).bool()
        rel_s, rel_t = (data[relation_edge(s)] for s in SIDES)
        types_s = _num_types(rel_s.edge_type)
        edge_index = torch.cat([rel_s.edge_index, rel_t.edge_index + n_s],
                               dim=1)
        edge_type = torch.cat([rel_s.edge_type, rel_t.edge_type + types_s])
        return cls(mods, feats, mask, edge_index, edge_type,
                   types_s + _num_types(rel_t.edge_type), n_s, tgt.num_nodes)

    @property
    def num_entities(self) -> int:
        return self.num_source + self.num_target

    def in_channels(self) -> Dict[str, int]:
        return {m: x.size(1) for m, x in self.features.items()}

    def rows(self, pairs: Tensor) -> Tensor:
        """``[2, P]`` (source, target) local ids to table rows."""
        return torch.stack([pairs[0], pairs[1] + self.num_source])

    def side(self, side: str) -> Tuple[Dict[str, Tensor], Tensor]:
        """Features and the ``[N, M]`` mask of one KG (``'source'`` or
        ``'target'``), in modality order."""
        if side not in SIDES:
            raise ValueError(f'side must be one of {SIDES} (got {side!r})')
        rows = (slice(0, self.num_source) if side == 'source' else
                slice(self.num_source, self.num_entities))
        return ({m: x[rows] for m, x in self.features.items()},
                self.mask[rows])

    def cached(self, key: str, build: Callable[[], Any]) -> Any:
        """A value derived from these inputs (e.g. a model's prepared
        adjacency), built once and kept with them; :meth:`to` drops it."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def to(self, device) -> PairInputs:
        return PairInputs(self.modalities,
                          {m: x.to(device) for m, x in self.features.items()},
                          self.mask.to(device), self.edge_index.to(device),
                          self.edge_type.to(device), self.num_relations,
                          self.num_source, self.num_target)
