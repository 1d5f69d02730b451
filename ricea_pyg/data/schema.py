"""Names of the library's :class:`~torch_geometric.data.HeteroData` schema
(``docs/data.md``), defined once for every reader and writer."""
from __future__ import annotations

from typing import Tuple

__all__ = ['MODALITIES', 'SIDES', 'ALIGN', 'relation_edge', 'feature_key',
           'mask_key']

#: All modality names, in the order used for stacking.
MODALITIES = ('graph', 'rel', 'attr', 'img', 'name', 'char')
#: The two node types, KG1 and KG2.
SIDES = ('source', 'target')
#: The edge type that holds the train/val/test alignment.
ALIGN = ('source', 'aligned_with', 'target')


def relation_edge(side: str) -> Tuple[str, str, str]:
    """The edge type of one KG's relation triples."""
    return (side, 'rel', side)


def feature_key(modality: str) -> str:
    """The node attribute holding a modality's features ``[N, F]``."""
    return f'x_{modality}'


def mask_key(modality: str) -> str:
    """The node attribute holding a modality's presence mask ``[N]``."""
    return f'mask_{modality}'
