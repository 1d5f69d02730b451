"""Seeded alignment splits. Nothing here reads raw entity ids."""
from __future__ import annotations

from typing import Dict, Tuple

import torch

__all__ = ['split_alignment', 'unaligned_entities']


def split_alignment(pairs: torch.Tensor, train_ratio: float = 0.3,
                    val_ratio: float = 0.1, seed: int = 0,
                    train_mask: torch.Tensor = None
                    ) -> Dict[str, torch.Tensor]:
    r"""Splits aligned pairs ``[2, P]`` into train / val / test.

    The pairs are shuffled with a seeded generator first (DBP15K's id order
    leaks the alignment). :obj:`val_ratio` is a share of *all* pairs, carved
    from the non-train pairs.

    Args:
        pairs (Tensor): ``[2, P]`` local ids.
        train_ratio (float): Share of pairs used for training.
            (default: :obj:`0.3`)
        val_ratio (float): Share of all pairs used for validation.
            (default: :obj:`0.1`)
        seed (int): Shuffle seed. (default: :obj:`0`)
        train_mask (Tensor, optional): ``[P]`` bool fixing the train pairs
            (an official split); :obj:`train_ratio` is then ignored.

    Returns:
        dict with ``train_index``, ``val_index`` and ``test_index``, each
        ``[2, *]``; disjoint and covering all pairs.
    """
    num = pairs.size(1)
    if not (0 <= val_ratio < 1 and 0 < train_ratio < 1
            and train_ratio + val_ratio < 1):
        raise ValueError(f'need 0 < train_ratio, 0 <= val_ratio and '
                         f'train_ratio + val_ratio < 1 (got {train_ratio}, '
                         f'{val_ratio})')
    if pairs.dim() != 2 or pairs.size(0) != 2:
        raise ValueError(f'pairs must have shape [2, P] (got '
                         f'{list(pairs.shape)})')
    # train, val (when asked for) and test each need at least one pair.
    need = 3 if val_ratio > 0 else 2
    if num < need:
        raise ValueError(f'split_alignment needs at least {need} aligned '
                         f'pairs (one each for train, '
                         f'{"val, " if need == 3 else ""}test), got {num}; '
                         'add reference pairs or use a larger dataset')
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(num, generator=gen)
    if train_mask is not None:
        if train_mask.shape != (num,):
            raise ValueError(f'train_mask must have shape [{num}]')
        is_train = train_mask[perm]
        train, rest = perm[is_train], perm[~is_train]
    else:
        # At least one pair each, whatever the rounding.
        num_train = min(max(int(round(train_ratio * num)), 1),
                        num - need + 1)
        train, rest = perm[:num_train], perm[num_train:]
    num_val = min(int(round(val_ratio * num)), rest.numel())
    if val_ratio > 0 and rest.numel() >= 2:
        num_val = min(max(num_val, 1), rest.numel() - 1)
    val, test = rest[:num_val], rest[num_val:]
    sizes = {'train': train.numel(), 'val': val.numel(),
             'test': test.numel()}
    empty = [k for k, n in sizes.items() if n == 0 and (
        k != 'val' or val_ratio > 0)]
    if empty:
        raise ValueError(f'split_alignment left {"/".join(empty)} without '
                         f'pairs (sizes {sizes} of {num} pairs); each needs '
                         f'at least one: add reference pairs or change the '
                         f'train_mask')
    return {'train_index': pairs[:, train], 'val_index': pairs[:, val],
            'test_index': pairs[:, test]}


def unaligned_entities(pairs: torch.Tensor, num_source: int,
                       num_target: int
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Ids of the source and of the target entities that no pair of
    :obj:`pairs` ``[2, P]`` covers (e.g. those still to align after
    training on the seed pairs)."""
    free_s = torch.ones(num_source, dtype=torch.bool)
    free_t = torch.ones(num_target, dtype=torch.bool)
    free_s[pairs[0].cpu()] = False
    free_t[pairs[1].cpu()] = False
    return free_s.nonzero().view(-1), free_t.nonzero().view(-1)
