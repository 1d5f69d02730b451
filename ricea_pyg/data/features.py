"""Feature builders for the non-graph modalities.

Vocabularies are built over *both* KGs together so that the two sides share
columns; ties in frequency are broken by key, so the result never depends on
file or id order.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

__all__ = ['top_k_vocabulary', 'bag_of_relations', 'bag_of_attributes',
           'char_bigrams', 'bigram_vocabulary', 'row_mask']


def top_k_vocabulary(counts: Counter, k: int) -> Dict[object, int]:
    """Maps the :obj:`k` most frequent keys to columns ``0..k-1``."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return {key: i for i, (key, _) in enumerate(ranked[:k])}


def row_mask(x: torch.Tensor) -> torch.Tensor:
    """True where a feature row has any non-zero entry."""
    return (x != 0).any(dim=-1)


def bag_of_relations(edge_index: torch.Tensor, edge_key: torch.Tensor,
                     num_nodes: int, vocab: Dict[int, int]) -> torch.Tensor:
    r"""Counts, per entity, the relation types it takes part in (as head or
    tail), over the columns of :obj:`vocab`.

    Args:
        edge_index (Tensor): ``[2, E]`` local entity indices.
        edge_key (Tensor): ``[E]`` relation key of each edge.
        num_nodes (int): ``N``.
        vocab (dict): Relation key → column.

    Returns:
        ``[N, len(vocab)]`` float counts.
    """
    x = torch.zeros(num_nodes, len(vocab))
    if edge_key.numel() == 0 or not vocab:
        return x
    lut = torch.full((int(edge_key.max()) + 1,), -1, dtype=torch.long)
    for key, col in vocab.items():
        if 0 <= key < lut.numel():
            lut[key] = col
    col = lut[edge_key]
    keep = col >= 0
    ones = torch.ones(int(keep.sum()))
    for row in (edge_index[0], edge_index[1]):
        x.index_put_((row[keep], col[keep]), ones, accumulate=True)
    return x


def bag_of_attributes(pairs: Iterable[Tuple[int, str]], num_nodes: int,
                      vocab: Dict[str, int]) -> torch.Tensor:
    """Multi-hot ``[N, len(vocab)]`` over attribute types."""
    x = torch.zeros(num_nodes, len(vocab))
    rows, cols = [], []
    for ent, attr in pairs:
        c = vocab.get(attr)
        if c is not None:
            rows.append(ent)
            cols.append(c)
    if rows:
        x[torch.tensor(rows), torch.tensor(cols)] = 1.0
    return x


def _bigrams(text: str) -> List[str]:
    text = ' '.join(text.lower().split())
    return [text[i:i + 2] for i in range(len(text) - 1)]


def bigram_vocabulary(names: Sequence[Optional[str]], k: int
                      ) -> Dict[str, int]:
    counts: Counter = Counter()
    for n in names:
        if n:
            counts.update(_bigrams(n))
    return top_k_vocabulary(counts, k)


def char_bigrams(names: Sequence[Optional[str]], vocab: Dict[str, int]
                 ) -> torch.Tensor:
    """Character-bigram counts ``[N, len(vocab)]`` of lower-cased names."""
    x = torch.zeros(len(names), len(vocab))
    rows, cols = [], []
    for i, n in enumerate(names):
        if not n:
            continue
        for b in _bigrams(n):
            c = vocab.get(b)
            if c is not None:
                rows.append(i)
                cols.append(c)
    if rows:
        x.index_put_((torch.tensor(rows), torch.tensor(cols)),
                     torch.ones(len(rows)), accumulate=True)
    return x
