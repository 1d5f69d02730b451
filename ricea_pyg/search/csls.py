r"""CSLS, exact ranks and mutual nearest neighbours without an N×N matrix.

CSLS (Lample et al., 2018) with neighbourhood size :math:`k`:

.. math::
    \mathrm{CSLS}(s_i, t_j) = 2 \cos(s_i, t_j) - r_t(t_j) - r_s(s_i)

where :math:`r_t(t_j)` is the mean cosine of :math:`t_j` to its :math:`k`
nearest sources and :math:`r_s(s_i)` that of :math:`s_i` to its :math:`k`
nearest targets. For a fixed query the ranking only needs
:math:`2 \langle s_i, t_j\rangle - r_t(t_j) = \langle [2 s_i, -1], [t_j,
r_t(t_j)] \rangle`, an inner product, so exact CSLS top-k is a MIPS over
augmented vectors.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ricea_pyg.search.index import AlignmentIndex, query_chunk_rows

__all__ = ['mean_topk_similarity', 'csls_search', 'sparse_csls_search',
           'true_ranks', 'top1_both_directions', 'mutual_nearest_neighbors']


def mean_topk_similarity(x: Tensor, y: Tensor, k: int,
                         backend: str = 'auto', kind: str = 'flat') -> Tensor:
    """:math:`r(x_i)`: mean of the :obj:`k` largest inner products of each
    row of :obj:`x` with the rows of :obj:`y` (exact with ``kind='flat'``)."""
    index = AlignmentIndex(kind, backend=backend).add(y)
    scores, _ = index.search(x, k)
    return scores[:, :min(k, y.size(0))].mean(dim=1)


def _augment(source: Tensor, target: Tensor, r_t: Tensor
             ) -> Tuple[Tensor, Tensor]:
    q = torch.cat([2 * source, -torch.ones(source.size(0), 1,
                                           dtype=source.dtype,
                                           device=source.device)], 1)
    t = torch.cat([target, r_t.view(-1, 1).to(target.dtype)], 1)
    return q, t


def _top_by_csls(source: Tensor, target: Tensor, r_s: Tensor, r_t: Tensor,
                 k: int, kind: str, backend: str,
                 exclude: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    q, t = _augment(source, target, r_t)
    scores, ids = AlignmentIndex(kind, backend=backend).add(t).search(
        q, k, exclude)
    return scores - r_s.view(-1, 1), ids


def csls_search(source: Tensor, target: Tensor, k: int, csls_k: int = 3,
                kind: str = 'flat', backend: str = 'auto',
                exclude: Optional[Tensor] = None
                ) -> Tuple[Tensor, Tensor]:
    r"""Top-:obj:`k` targets of every source by CSLS (plain cosine when
    ``csls_k = 0``). Inputs are ℓ2-normalised here.

    Returns:
        ``(scores [Q, k], ids [Q, k])`` with CSLS scores.
    """
    source = F.normalize(source, dim=-1)
    target = F.normalize(target, dim=-1)
    if csls_k <= 0:
        return AlignmentIndex(kind, backend=backend).add(target).search(
            source, k, exclude)
    r_s = mean_topk_similarity(source, target, csls_k, backend, kind)
    r_t = mean_topk_similarity(target, source, csls_k, backend, kind)
    return _top_by_csls(source, target, r_s, r_t, k, kind, backend, exclude)


def sparse_csls_search(source: Tensor, target: Tensor, k: int = 1,
                       csls_k: int = 3, candidates: int = 10,
                       kind: str = 'auto', backend: str = 'auto',
                       return_knn: bool = False, **index_kwargs):
    r"""CSLS on candidate pairs only: the scalable pipeline.

    One index over the targets gives each source its :obj:`candidates`
    nearest targets by cosine (and :math:`r_s` from the first
    :obj:`csls_k`); one index over the sources gives :math:`r_t`. CSLS is
    then computed for the ``Q × candidates`` candidate pairs only and
    re-ranked. Two index builds and two searches, against three each for
    :func:`csls_search`; equal to it when the CSLS top-:obj:`k` lies among
    the cosine candidates (always, when :obj:`candidates` = N).

    Args:
        index_kwargs: Passed to both :class:`AlignmentIndex` (``nlist``,
            ``nprobe``, ``progress``, ...).

    Returns:
        ``(scores [Q, k], ids [Q, k])``, and with :obj:`return_knn` also the
        cosine ``(scores, ids)`` ``[Q, candidates]``.
    """
    if csls_k < 1 or candidates < max(k, csls_k):
        raise ValueError('need csls_k >= 1 and candidates >= max(k, csls_k)')
    source = F.normalize(source, dim=-1)
    target = F.normalize(target, dim=-1)
    cos, ids = AlignmentIndex(kind, backend=backend, **index_kwargs).add(
        target).search(source, candidates)
    r_s = cos[:, :csls_k].mean(dim=1)
    back, _ = AlignmentIndex(kind, backend=backend, **index_kwargs).add(
        source).search(target, csls_k)
    r_t = back.mean(dim=1)
    valid = ids >= 0
    csls = 2 * cos - r_s.view(-1, 1) - r_t[ids.clamp_min(0)]
    csls = csls.masked_fill(~valid, float('-inf'))
    top, order = csls.topk(k, dim=1)
    out = (top, ids.gather(1, order).masked_fill(top == float('-inf'), -1))
    return (out, (cos, ids)) if return_knn else out


def true_ranks(source: Tensor, target: Tensor, truth: Tensor,
               csls_k: int = 0, batch_size: int = 4096,
               neighbors: Optional[Tensor] = None) -> Tensor:
    r"""1-based rank of the true target of every source row.

    ``rank = 1 + #{j ≠ truth: score(i, j) >= score(i, truth)}``: ties count
    against the query, and the rank is exact (never truncated at some k).
    Computed in chunks of at most :obj:`batch_size` queries and
    :data:`~ricea_pyg.search.index.SCORE_CHUNK_BYTES` of scores.

    Args:
        source: ``[Q, d]`` queries. target: ``[N, d]`` candidates.
        truth: ``[Q]`` row of ``target`` that is the true counterpart.
        csls_k: CSLS neighbourhood (0 = cosine).
        neighbors: The source-side set :math:`r_t` is computed against
            (default: :obj:`source`).
    """
    source = F.normalize(source, dim=-1)
    target = F.normalize(target, dim=-1)
    if csls_k > 0:  # rank by <[2s, -1], [t, r_t]> = 2<s, t> - r_t
        ref = source if neighbors is None else F.normalize(neighbors, dim=-1)
        source, target = _augment(source, target,
                                  mean_topk_similarity(target, ref, csls_k))
    ranks = torch.empty(source.size(0), dtype=torch.long,
                        device=source.device)
    batch_size = query_chunk_rows(batch_size, target.size(0),
                                  source.element_size())
    for s in range(0, source.size(0), batch_size):
        q = source[s:s + batch_size]
        scores = q @ target.t()
        rows = torch.arange(q.size(0), device=q.device)
        true = scores[rows, truth[s:s + q.size(0)]]
        ranks[s:s + q.size(0)] = (scores >= true.view(-1, 1)).sum(1)
    return ranks


def top1_both_directions(source: Tensor, target: Tensor, csls_k: int = 0,
                         backend: str = 'auto'
                         ) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Exact best match of every source among the targets and of every
    target among the sources, by CSLS (cosine when ``csls_k = 0``); the
    neighbourhood terms :math:`r_s`, :math:`r_t` are computed once for both
    directions.

    Returns:
        ``(scores [Q_s, 1], source_to_target [Q_s, 1],
        target_to_source [Q_t, 1])``.
    """
    if csls_k <= 0:
        s_score, s2t = csls_search(source, target, 1, 0, backend=backend)
        _, t2s = csls_search(target, source, 1, 0, backend=backend)
        return s_score, s2t, t2s
    source = F.normalize(source, dim=-1)
    target = F.normalize(target, dim=-1)
    r_s = mean_topk_similarity(source, target, csls_k, backend)
    r_t = mean_topk_similarity(target, source, csls_k, backend)
    s_score, s2t = _top_by_csls(source, target, r_s, r_t, 1, 'flat', backend)
    _, t2s = _top_by_csls(target, source, r_t, r_s, 1, 'flat', backend)
    return s_score, s2t, t2s


def mutual_nearest_neighbors(source: Tensor, target: Tensor,
                             csls_k: int = 0,
                             threshold: Optional[float] = None,
                             backend: str = 'auto') -> Tensor:
    r"""Pairs ``(i, j)`` where ``j`` is the best target of source ``i`` and
    ``i`` the best source of target ``j`` (iterative-training helper; pass
    only the unaligned entities). With :obj:`threshold`, only pairs whose
    score reaches it.

    Returns:
        ``[2, P]`` row indices into :obj:`source` and :obj:`target`.
    """
    s_score, s2t, t2s = top1_both_directions(source, target, csls_k,
                                             backend)
    i = torch.arange(source.size(0), device=source.device)
    j = s2t[:, 0]
    keep = (j >= 0) & (t2s[j.clamp_min(0), 0] == i)
    if threshold is not None:
        keep &= s_score[:, 0] >= threshold
    return torch.stack([i[keep], j[keep]])
