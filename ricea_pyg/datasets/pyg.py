"""Conversion from PyG's own :class:`torch_geometric.datasets.DBP15K`."""
from __future__ import annotations

from typing import Dict

import torch
from torch_geometric.data import Data, HeteroData

from ricea_pyg.data.features import row_mask
from ricea_pyg.data.pair import KGSide, MultiModalKGPair, build_hetero_data
from ricea_pyg.data.split import split_alignment

__all__ = ['from_pyg_dbp15k']


def _word_mean(x: torch.Tensor) -> torch.Tensor:
    """``[N, L, F]`` zero-padded word vectors → ``[N, F]`` mean over the
    non-padding words (a ``[N, F]`` input is returned as is)."""
    if x.dim() == 2:
        return x.float()
    if x.dim() != 3:
        raise ValueError(f'x must be [N, F] or [N, L, F] (got shape '
                         f'{tuple(x.shape)})')
    words = (x != 0).any(-1, keepdim=True).float()
    return (x.float() * words).sum(1) / words.sum(1).clamp(min=1)


def from_pyg_dbp15k(data: Data, val_ratio: float = 0.1, seed: int = 0,
                    rel_top_k: int = 1000) -> HeteroData:
    r"""Converts a :class:`torch_geometric.datasets.DBP15K` (DGMC) graph pair
    to the library's :class:`~torch_geometric.data.HeteroData` schema.

    PyG's ``Data`` holds ``x1`` / ``x2`` (``[N, L, 300]`` zero-padded word
    vectors of each entity name), ``edge_index1`` / ``edge_index2``,
    ``rel1`` / ``rel2`` (relation ids; absent in older PyG versions) and
    ``train_y`` / ``test_y`` (``[2, P]`` aligned pairs). The word vectors
    are averaged into the ``name`` modality, relation ids give ``rel`` (bag
    of relations), and validation pairs are carved from the test pairs
    (:func:`~ricea_pyg.data.split_alignment` with the train pairs fixed), so
    ``val_ratio`` is a share of all pairs.

    Args:
        data (Data): ``dataset[0]`` of PyG's ``DBP15K``.
        val_ratio (float): Share of all pairs moved from test to validation.
            (default: :obj:`0.1`)
        seed (int): Seed of that carving. (default: :obj:`0`)
        rel_top_k (int): Relation vocabulary size. (default: :obj:`1000`)
    """
    need = ('x1', 'x2', 'edge_index1', 'edge_index2', 'train_y', 'test_y')
    missing = [k for k in need if getattr(data, k, None) is None]
    if missing:
        raise ValueError(f'not a PyG DBP15K graph pair: no {missing}; pass '
                         'torch_geometric.datasets.DBP15K(root, pair)[0]')
    has_rel = (getattr(data, 'rel1', None) is not None
               and getattr(data, 'rel2', None) is not None)
    sides = {}
    kg = []
    for k, name in ((1, 'source'), (2, 'target')):
        x = _word_mean(data[f'x{k}'])
        edge_index = data[f'edge_index{k}'].long()
        edge_type = (data[f'rel{k}'].long().view(-1) if has_rel else
                     torch.zeros(edge_index.size(1), dtype=torch.long))
        kg.append((KGSide(uris=[f'{name}:{i}' for i in range(x.size(0))],
                          edge_index=edge_index, edge_type=edge_type), x))
        sides[name] = dict(num_nodes=x.size(0), edge_index=edge_index,
                           edge_type=edge_type)
    train, test = data.train_y.long(), data.test_y.long()
    pairs = torch.cat([train, test], 1)
    mask = torch.arange(pairs.size(1)) < train.size(1)
    share = train.size(1) / max(pairs.size(1), 1)
    parts = split_alignment(pairs, train_ratio=min(max(share, 1e-6), 0.5),
                            val_ratio=val_ratio, seed=seed, train_mask=mask)
    pair = MultiModalKGPair(kg[0][0], kg[1][0], pairs)
    feats: Dict[str, Dict] = (pair.build_features(['rel'],
                                                  rel_top_k=rel_top_k)
                              if has_rel else {'source': {}, 'target': {}})
    for (_, x), name in zip(kg, ('source', 'target')):
        feats[name]['name'] = (x, row_mask(x))
    return build_hetero_data(sides, feats, parts)
