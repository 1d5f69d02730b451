r"""Self-training (iterative mode): mutual nearest neighbours among the
unaligned entities that persist across rounds join the training pairs, as in
MEAformer's iterative protocol."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

from ricea_pyg.data.split import unaligned_entities
from ricea_pyg.search.csls import csls_search, mutual_nearest_neighbors

__all__ = ['unaligned_mutual_pairs', 'persisting_pairs', 'SelfTraining']


def unaligned_mutual_pairs(source: Tensor, target: Tensor, pairs: Tensor,
                           csls_k: int = 3, threshold: Optional[float] = None,
                           progress: bool = False, margin: bool = False
                           ) -> Tuple[Tensor, Optional[Tensor]]:
    r"""The candidate pseudo-pairs of a bootstrapping round: mutual nearest
    neighbours among the entities that no pair of :obj:`pairs` covers.

    Args:
        source (Tensor): ``[N_s, d]`` source embeddings.
        target (Tensor): ``[N_t, d]`` target embeddings.
        pairs (Tensor): ``[2, P]`` (source, target) pairs already known.
        csls_k (int): CSLS neighbourhood; 0 for cosine. (default: :obj:`3`)
        threshold (float, optional): Minimum score of a pair.
            (default: :obj:`None`)
        progress (bool): Progress bars in the search. (default:
            :obj:`False`)
        margin (bool): Also return each pair's margin: its score minus the
            source's second-best among the free targets. (default:
            :obj:`False`)

    Returns:
        ``(found [2, K], margin [K] or None)``, entity ids.
    """
    free_s, free_t = unaligned_entities(pairs, source.size(0), target.size(0))
    if not (free_s.numel() and free_t.numel()):  # one side fully aligned
        return torch.empty(2, 0, dtype=torch.long), (
            torch.empty(0) if margin else None)
    src = source[free_s.to(source.device)]
    tgt = target[free_t.to(target.device)]
    mnn = mutual_nearest_neighbors(src, tgt, csls_k, threshold,
                                   progress=progress).cpu()
    gap = None
    if margin:
        if tgt.size(0) > 1 and mnn.numel():
            # All free sources: CSLS's target term depends on them.
            top, _ = csls_search(src, tgt, 2, csls_k, progress=progress)
            gap = (top[:, 0] - top[:, 1]).cpu()[mnn[0]]
        else:
            gap = torch.full((mnn.size(1),), float('inf'))
    return torch.stack([free_s[mnn[0]], free_t[mnn[1]]]), gap


def persisting_pairs(found: Tensor, streak: Tensor, min_rounds: int,
                     margin: Optional[Tensor] = None,
                     min_margin: float = 0.0) -> Tuple[Tensor, Tensor]:
    r"""Decides which pseudo-pairs may be added: those found in at least
    :obj:`min_rounds` consecutive rounds, each time with a score margin of
    at least :obj:`min_margin` (a pair below it counts as not found).

    Args:
        found (Tensor): ``[2, P]`` (source, target) pairs found this round.
        streak (Tensor): ``[3, Q]`` (source, target, rounds) before this
            round: each pair and how many consecutive rounds found it.
        min_rounds (int): Consecutive rounds a pair needs.
        margin (Tensor, optional): ``[P]`` confidence of each found pair,
            e.g. its CSLS score minus the source's second-best score.
            (default: :obj:`None`, no margin test)
        min_margin (float): The least margin that counts.
            (default: :obj:`0.0`)

    Returns:
        ``(streak [3, P], eligible [2, K])``: the updated streak (pairs not
        found this round drop out) and the pairs that persisted long enough,
        sorted by (source, target).
    """
    if min_rounds < 1:
        raise ValueError(f'min_rounds must be at least 1 (got {min_rounds})')
    if margin is not None:
        if margin.shape != found.shape[1:]:
            raise ValueError(f'margin must be [P] = [{found.size(1)}] (got '
                             f'{list(margin.shape)})')
        found = found[:, margin.cpu() >= min_margin]
    before = {(s, t): n for s, t, n in streak.t().tolist()}
    pairs = sorted(set(map(tuple, found.t().tolist())))
    rows = [(s, t, before.get((s, t), 0) + 1) for s, t in pairs]
    new = (torch.tensor(rows, dtype=torch.long).t() if rows else
           torch.empty(3, 0, dtype=torch.long))
    return new, new[:2, new[2] >= min_rounds]


class SelfTraining:
    r"""The rounds of iterative mode and their state.

    Every :obj:`every` epochs of the second stage a round finds the mutual
    nearest neighbours among the entities no training pair covers; every
    :obj:`add_every` epochs the pairs that :func:`persisting_pairs` accepts
    join the training pairs.

    Args:
        every (int): Epochs between rounds. (default: :obj:`2`)
        add_every (int): Epochs between additions; a multiple of
            :obj:`every`. (default: :obj:`4`)
        min_rounds (int): Consecutive rounds a pair must be found in before
            it is added. (default: :obj:`2`)
        min_margin (float): A mutual pair counts only if its score beats the
            source's second-best target by this much (CSLS, or cosine with
            ``csls_k = 0``); 0 turns the test off. (default: :obj:`0.0`)
        csls_k (int): CSLS neighbourhood of the nearest-neighbour search; 0
            for cosine. (default: :obj:`3`)
        threshold (float, optional): Minimum score of a mutual pair.
            (default: :obj:`None`)
        progress (bool): Progress bars in the search. (default:
            :obj:`False`)
    """

    def __init__(self, every: int = 2, add_every: int = 4,
                 min_rounds: int = 2, csls_k: int = 3,
                 threshold: Optional[float] = None, progress: bool = False,
                 min_margin: float = 0.0):
        if every < 1 or add_every < 1:
            raise ValueError(f'every and add_every must be at least 1 (got '
                             f'{every}, {add_every})')
        if add_every % every:
            raise ValueError(
                f'add_every ({add_every}) must be a multiple of every '
                f'({every}): pairs are added only on a round, so otherwise '
                f'they would wait for the least common multiple')
        if min_rounds < 1:
            raise ValueError(f'min_rounds must be at least 1 (got '
                             f'{min_rounds})')
        self.every, self.add_every, self.min_rounds = every, add_every, \
            min_rounds
        self.csls_k, self.threshold, self.progress = csls_k, threshold, \
            progress
        self.min_margin = min_margin
        self.streak = torch.empty(3, 0, dtype=torch.long)

    @classmethod
    def from_config(cls, config) -> SelfTraining:
        return cls(config.iter_every, config.iter_add_every,
                   config.iter_persist, config.csls_k, config.iter_threshold,
                   config.progress, config.iter_min_margin)

    def is_round(self, stage_epoch: int) -> bool:
        """Whether a round runs after 0-based epoch :obj:`stage_epoch` of the
        second stage."""
        return (stage_epoch + 1) % self.every == 0

    def step(self, source: Tensor, target: Tensor, train_pairs: Tensor,
             stage_epoch: int, gold: Optional[Mapping[int, int]] = None
             ) -> Tuple[Tensor, Dict[str, int]]:
        """One round on the current embeddings.

        Args:
            source (Tensor): ``[N_s, d]`` source embeddings.
            target (Tensor): ``[N_t, d]`` target embeddings.
            train_pairs (Tensor): ``[2, P]`` current training pairs.
            stage_epoch (int): 0-based epoch within the second stage.
            gold (dict, optional): Source → true target, only to count how
                many added pairs are right (never used to choose them).

        Returns:
            ``(train_pairs, info)``: the pairs after this round, and counts
            for the log (``mnn``, ``persisting``, and on additions ``added``
            and, with :obj:`gold`, ``added_correct``).
        """
        found, margin = unaligned_mutual_pairs(
            source, target, train_pairs, self.csls_k, self.threshold,
            self.progress, margin=self.min_margin > 0)
        self.streak, eligible = persisting_pairs(
            found, self.streak, self.min_rounds, margin, self.min_margin)
        info = {'mnn': found.size(1), 'persisting': eligible.size(1)}
        if (stage_epoch + 1) % self.add_every == 0 and eligible.numel():
            train_pairs = torch.cat([train_pairs, eligible.to(
                train_pairs.device)], dim=1)
            added = set(map(tuple, eligible.t().tolist()))
            keep = [(s, t) not in added for s, t in
                    self.streak[:2].t().tolist()]
            self.streak = self.streak[:, torch.tensor(keep, dtype=torch.bool)]
            info['added'] = eligible.size(1)
            if gold is not None:
                info['added_correct'] = sum(gold.get(s) == t for s, t in
                                            eligible.t().tolist())
        return train_pairs, info

    def state_dict(self) -> Dict[str, Tensor]:
        return {'streak': self.streak}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        self.streak = state['streak']

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(every={self.every}, '
                f'add_every={self.add_every}, min_rounds={self.min_rounds}, '
                f'min_margin={self.min_margin})')
