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

Every entry point also takes a :class:`~ricea_pyg.search.QueryKey`, whose
score :math:`\langle q(a), k(b) \rangle` then replaces the cosine
throughout: source-to-target scores are :math:`\langle q(s_i), k(t_j)
\rangle`, :math:`r_s` reads the sources' queries against the targets' keys
and :math:`r_t` the targets' queries against the sources' keys.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from ricea_pyg.search.embedding import Embeddings, query_key
from ricea_pyg.search.index import AlignmentIndex, _bar, query_chunk_rows

__all__ = ['mean_topk_similarity', 'csls_search', 'sparse_csls_search',
           'rank_counts', 'rank_chunk_rows', 'true_ranks',
           'top1_both_directions', 'mutual_nearest_neighbors']


def mean_topk_similarity(x: Tensor, y: Tensor, k: int,
                         backend: str = 'auto', kind: str = 'flat',
                         progress: Optional[bool] = None) -> Tensor:
    """:math:`r(x_i)`: mean of the :obj:`k` largest inner products of each
    row of :obj:`x` with the rows of :obj:`y` (exact with ``kind='flat'``).
    :obj:`progress` as in :class:`AlignmentIndex`."""
    index = AlignmentIndex(kind, backend=backend, progress=progress).add(y)
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
                 exclude: Optional[Tensor] = None,
                 progress: Optional[bool] = None) -> Tuple[Tensor, Tensor]:
    q, t = _augment(source, target, r_t)
    scores, ids = AlignmentIndex(kind, backend=backend,
                                 progress=progress).add(t).search(
        q, k, exclude)
    return scores - r_s.view(-1, 1), ids


def csls_search(source: Embeddings, target: Embeddings, k: int,
                csls_k: int = 3, kind: str = 'flat', backend: str = 'auto',
                exclude: Optional[Tensor] = None,
                progress: Optional[bool] = None,
                normalize: Optional[bool] = None
                ) -> Tuple[Tensor, Tensor]:
    r"""Top-:obj:`k` targets of every source by CSLS (plain cosine when
    ``csls_k = 0``). Tensor inputs are ℓ2-normalised here; a
    :class:`~ricea_pyg.search.QueryKey` scores by
    :math:`\langle q(s_i), k(t_j) \rangle`.

    Args:
        progress (bool, optional): tqdm bars for the index builds and
            searches: True always, False never, None for long ones only.
            (default: :obj:`None`)
        normalize (bool, optional): Whether to ℓ2-normalise tensor inputs
            (False: use them raw as query and key). A
            :class:`~ricea_pyg.search.QueryKey` is always used raw, and
            ``True`` with one raises :class:`ValueError`.
            (default: :obj:`None`, meaning normalise tensors)

    Returns:
        ``(scores [Q, k], ids [Q, k])`` with CSLS scores.
    """
    qs, ks = query_key(source, normalize)
    qt, kt = query_key(target, normalize)
    if csls_k <= 0:
        return AlignmentIndex(kind, backend=backend,
                              progress=progress).add(kt).search(
            qs, k, exclude)
    r_s = mean_topk_similarity(qs, kt, csls_k, backend, kind, progress)
    r_t = mean_topk_similarity(qt, ks, csls_k, backend, kind, progress)
    return _top_by_csls(qs, kt, r_s, r_t, k, kind, backend, exclude,
                        progress)


def sparse_csls_search(source: Embeddings, target: Embeddings, k: int = 1,
                       csls_k: int = 3, candidates: int = 10,
                       kind: str = 'auto', backend: str = 'auto',
                       return_knn: bool = False,
                       progress: Optional[bool] = None,
                       normalize: Optional[bool] = None, **index_kwargs):
    r"""CSLS on candidate pairs only: the scalable pipeline.

    One index over the targets gives each source its :obj:`candidates`
    nearest targets by cosine (and :math:`r_s` from the first
    :obj:`csls_k`); one index over the sources gives :math:`r_t`. CSLS is
    then computed for the ``Q × candidates`` candidate pairs only and
    re-ranked. Two index builds and two searches, against three each for
    :func:`csls_search`; equal to it when the CSLS top-:obj:`k` lies among
    the cosine candidates (always, when :obj:`candidates` = N).

    Args:
        progress (bool, optional): tqdm bars for both indexes: True always,
            False never, None for long builds and searches only.
            (default: :obj:`None`)
        normalize (bool, optional): Whether to ℓ2-normalise tensor inputs
            (False: use them raw as query and key). A
            :class:`~ricea_pyg.search.QueryKey` is always used raw, and
            ``True`` with one raises :class:`ValueError`.
            (default: :obj:`None`, meaning normalise tensors)
        index_kwargs: Passed to both :class:`AlignmentIndex` (``nlist``,
            ``nprobe``, ...).

    Returns:
        ``(scores [Q, k], ids [Q, k])``, and with :obj:`return_knn` also the
        cosine ``(scores, ids)`` ``[Q, candidates]``.
    """
    if csls_k < 1 or candidates < max(k, csls_k):
        raise ValueError('need csls_k >= 1 and candidates >= max(k, csls_k)')
    qs, ks = query_key(source, normalize)
    qt, kt = query_key(target, normalize)
    cos, ids = AlignmentIndex(kind, backend=backend, progress=progress,
                              **index_kwargs).add(kt).search(qs, candidates)
    r_s = cos[:, :csls_k].mean(dim=1)
    back, _ = AlignmentIndex(kind, backend=backend, progress=progress,
                             **index_kwargs).add(ks).search(qt, csls_k)
    r_t = back.mean(dim=1)
    valid = ids >= 0
    csls = 2 * cos - r_s.view(-1, 1) - r_t[ids.clamp_min(0)]
    csls = csls.masked_fill(~valid, float('-inf'))
    top, order = csls.topk(k, dim=1)
    out = (top, ids.gather(1, order).masked_fill(top == float('-inf'), -1))
    return (out, (cos, ids)) if return_knn else out


#: Most columns summed by one float matrix-vector product in
#: :func:`rank_counts`: its partial sums are integers of at most this
#: size, all exact in float32 (24-bit significand).
_EXACT_SUM_COLUMNS = 2**24


def _count_dtype(queries: Tensor, base: Tensor) -> torch.dtype:
    # Counting sums +-1 as floats: exact in float32 and float64 only.
    dtype = torch.promote_types(queries.dtype, base.dtype)
    return dtype if dtype in (torch.float32, torch.float64) else \
        torch.float32


def rank_chunk_rows(batch_size: int, num_base: int,
                    dtype: torch.dtype = torch.float32,
                    max_bytes: Optional[int] = None) -> int:
    """Query rows per chunk of :func:`rank_counts` against :obj:`num_base`
    candidates: a chunk holds ``rows × num_base`` scores (float32, or
    float64 for float64 inputs) within :obj:`max_bytes` (default:
    :data:`~ricea_pyg.search.index.SCORE_CHUNK_BYTES`), and nothing else
    of that size."""
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32
    size = torch.empty((), dtype=dtype).element_size()
    return query_chunk_rows(batch_size, num_base, size, max_bytes)


def _row_sums(x: Tensor, ones: Tensor) -> Tensor:
    # Exact row sums of a matrix of -1, 0, 1 by matrix-vector products (far
    # faster than summing a bool mask), in column blocks that keep every
    # partial sum an exactly representable integer.
    out = torch.zeros(x.size(0), dtype=torch.long, device=x.device)
    if x.size(1) == 0:  # an empty shard: nothing above, nothing tied
        return out
    for c in range(0, x.size(1), ones.numel()):
        block = x[:, c:c + ones.numel()]
        out += (block @ ones[:block.size(1)]).long()
    return out


def rank_counts(queries: Tensor, base: Tensor, truth: Tensor,
                base_bias: Optional[Tensor] = None, batch_size: int = 4096,
                max_bytes: Optional[int] = None,
                reduce_true: Optional[Callable[[Tensor], Tensor]] = None,
                progress: Optional[bool] = None) -> Tuple[Tensor, Tensor]:
    r"""How many candidates score strictly above, and how many tie with, the
    true candidate of every query: the memory-bounded kernel behind
    :func:`true_ranks` and :func:`~ricea_pyg.search.sharded_true_ranks`.

    The score is :math:`\langle q_i, b_j \rangle`, or with
    :obj:`base_bias` the CSLS ranking score
    :math:`2 \langle q_i, b_j \rangle - \beta_j`, computed as
    :math:`\langle [2 q_i, -1], [b_j, \beta_j] \rangle` (the form
    :func:`csls_search` searches). Queries go in chunks of at most
    :func:`rank_chunk_rows` rows, so the one ``[rows, N]`` score buffer,
    reused by every chunk, stays within :obj:`max_bytes`. Each query's
    true score is read from the same matrix product it is compared with,
    so the truth always ties with itself (and is not counted).

    Args:
        queries (torch.Tensor): Query vectors (used as given: normalise
            them first for cosine).
        base (torch.Tensor): Candidate vectors.
        truth (torch.Tensor): Row of :obj:`base` holding each query's true
            candidate, or :obj:`-1` (any row outside ``[0, N)``) where it
            lies elsewhere; its score must then come from
            :obj:`reduce_true`.
        base_bias (torch.Tensor, optional): :math:`\beta`, e.g. CSLS's
            :math:`r_t`. (default: :obj:`None`)
        batch_size (int, optional): Most query rows per chunk.
            (default: :obj:`4096`)
        max_bytes (int, optional): Most bytes of one chunk's scores.
            (default: :data:`~ricea_pyg.search.index.SCORE_CHUNK_BYTES`)
        reduce_true (callable, optional): Applied to each chunk's true
            scores (``-inf`` where the truth is not in :obj:`base`) before
            counting. The sharded path all-reduces them with MAX; every
            rank must then run the same chunks (pass the smallest
            :func:`rank_chunk_rows` of all ranks as :obj:`batch_size`).
            (default: :obj:`None`)
        progress (bool, optional): A tqdm bar over the queries: True always,
            False never, None for long runs only. (default: :obj:`None`)

    Returns:
        ``(higher, ties)``: per query, the candidates other than the truth
        that score strictly above it, and those that score equal. The
        1-based rank with ties against the query is ``1 + higher + ties``.
        Half-precision inputs are scored in float32.

    Shapes:
        - **input:** queries :math:`(Q, d)`, base :math:`(N, d)`,
          truth :math:`(Q,)`, base_bias :math:`(N,)`
        - **output:** two :math:`(Q,)` long tensors
    """
    if queries.dim() != 2 or base.dim() != 2 or \
            queries.size(1) != base.size(1):
        raise ValueError(f'queries and base must be [Q, d] and [N, d] '
                         f'(got {list(queries.shape)} and '
                         f'{list(base.shape)})')
    if truth.shape != (queries.size(0),):
        raise ValueError(f'truth needs one row per query (got shape '
                         f'{list(truth.shape)} for {queries.size(0)} '
                         'queries)')
    if not (torch.isfinite(queries).all() and torch.isfinite(base).all()):
        raise ValueError('queries or base contain NaN or inf: ranks would '
                         'be meaningless; fix the embeddings first')
    dtype = _count_dtype(queries, base)
    queries, base = queries.to(dtype), base.to(dtype)
    if base_bias is not None:
        queries, base = _augment(queries, base, base_bias)
    num_q, n = queries.size(0), base.size(0)
    truth = truth.to(queries.device)
    owned = (truth >= 0) & (truth < n)
    col = truth.clamp(0, max(n - 1, 0)).view(-1, 1)
    higher = torch.empty(num_q, dtype=torch.long, device=queries.device)
    ties = torch.empty_like(higher)
    rows = rank_chunk_rows(batch_size, n, dtype, max_bytes)
    # One buffer for all chunks: a fresh allocation of this size costs a
    # page fault per page every time.
    buf = queries.new_empty(min(rows, num_q), n)
    ones = queries.new_ones(min(n, _EXACT_SUM_COLUMNS))
    bar = _bar(num_q, num_q * n * queries.size(1), progress, 'ranks')
    for s in range(0, num_q, rows):
        e = min(s + rows, num_q)
        scores = torch.matmul(queries[s:e], base.t(), out=buf[:e - s])
        mine = owned[s:e]
        true = torch.full((e - s,), float('-inf'), dtype=dtype,
                          device=queries.device)
        if n > 0:
            true = torch.where(mine, scores.gather(1, col[s:e]).view(-1),
                               true)
        if reduce_true is not None:
            true = reduce_true(true)
        if not torch.isfinite(true).all():
            raise ValueError('no score for some true candidate: every truth '
                             'row must lie in base (in one shard when '
                             'sharded)')
        # sign(score - true) in place: +1 above, 0 tie, -1 below; exact,
        # since x - y == 0 only when x == y.
        sign = scores.sub_(true.view(-1, 1)).sign_()
        above_minus_below = _row_sums(sign, ones)
        not_tied = _row_sums(sign.abs_(), ones)
        higher[s:e] = (above_minus_below + not_tied) // 2
        ties[s:e] = n - not_tied - mine.long()  # the truth ties with itself
        bar.update(e - s)
    bar.close()
    return higher, ties


def true_ranks(source: Embeddings, target: Embeddings, truth: Tensor,
               csls_k: int = 0, batch_size: int = 4096,
               neighbors: Optional[Embeddings] = None,
               max_bytes: Optional[int] = None,
               progress: Optional[bool] = None,
               normalize: Optional[bool] = None) -> Tensor:
    r"""1-based rank of the true target of every source row.

    ``rank = 1 + #{j ≠ truth: score(i, j) >= score(i, truth)}``: ties count
    against the query, and the rank is exact (never truncated at some k).
    Counted by :func:`rank_counts` in chunks of at most :obj:`batch_size`
    queries and :obj:`max_bytes` of scores.

    Args:
        source (torch.Tensor or QueryKey): Queries.
        target (torch.Tensor or QueryKey): Candidates.
        truth (torch.Tensor): Row of :obj:`target` that is each query's
            true counterpart.
        csls_k (int, optional): CSLS neighbourhood (0 = cosine).
            (default: :obj:`0`)
        batch_size (int, optional): Most queries per chunk.
            (default: :obj:`4096`)
        neighbors (torch.Tensor or QueryKey, optional): The source-side
            set :math:`r_t` is computed against (its keys).
            (default: :obj:`source`)
        max_bytes (int, optional): Most bytes of one chunk's scores.
            (default: :data:`~ricea_pyg.search.index.SCORE_CHUNK_BYTES`)
        progress (bool, optional): tqdm bars (the :math:`r_t` search and the
            counting): True always, False never, None for long runs only.
            (default: :obj:`None`)
        normalize (bool, optional): Whether to ℓ2-normalise tensor inputs
            (False: use them raw as query and key). A
            :class:`~ricea_pyg.search.QueryKey` is always used raw, and
            ``True`` with one raises :class:`ValueError`.
            (default: :obj:`None`, meaning normalise tensors)

    Shapes:
        - **input:** source :math:`(Q, d)`, target :math:`(N, d)`,
          truth :math:`(Q,)`
        - **output:** :math:`(Q,)` long
    """
    if truth.numel() and (truth.min() < 0 or truth.max() >= target.size(0)):
        raise ValueError(f'truth rows must lie in [0, {target.size(0)}) '
                         f'(got {int(truth.min())}..{int(truth.max())}); '
                         'pass row indices into target')
    qs, ks = query_key(source, normalize)
    qt, kt = query_key(target, normalize)
    r_t = None
    if csls_k > 0:  # rank by <[2s, -1], [t, r_t]> = 2<s, t> - r_t
        if neighbors is not None:
            ks = query_key(neighbors, normalize)[1]
        r_t = mean_topk_similarity(qt, ks, csls_k, progress=progress)
    higher, ties = rank_counts(qs, kt, truth, r_t, batch_size, max_bytes,
                               progress=progress)
    return 1 + higher + ties


def top1_both_directions(source: Embeddings, target: Embeddings,
                         csls_k: int = 0, backend: str = 'auto',
                         progress: Optional[bool] = None,
                         normalize: Optional[bool] = None,
                         kind: str = 'flat', candidates: int = 10,
                         **index_kwargs) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Best match of every source among the targets and of every target
    among the sources, by CSLS (cosine when ``csls_k = 0``).

    With ``kind='flat'`` (and ``'auto'`` below 50k entities) it is exact:
    :math:`r_s`, :math:`r_t` are computed once for both directions. Above,
    ``'auto'`` (or ``'ivf'``/``'hnsw'``) runs one approximate search per
    direction for the :obj:`candidates` nearest by cosine, takes
    :math:`r_s`, :math:`r_t` from them and re-ranks them by CSLS, as
    :func:`sparse_csls_search`: two searches instead of four, for graphs of
    millions of entities. :obj:`progress` and :obj:`normalize` as in
    :func:`csls_search`; :obj:`index_kwargs` go to
    :class:`AlignmentIndex`.

    Returns:
        ``(scores [Q_s, 1], source_to_target [Q_s, 1],
        target_to_source [Q_t, 1])``.
    """
    qs, ks = query_key(source, normalize)
    qt, kt = query_key(target, normalize)
    largest = max(qs.size(0), qt.size(0))
    exact = kind == 'flat' or (kind == 'auto' and (
        backend == 'torch' or largest < index_kwargs.get('auto_exact_below',
                                                         50_000)))
    if not exact:
        if candidates < max(1, csls_k):
            raise ValueError(f'candidates ({candidates}) must be >= csls_k '
                             f'({csls_k})')

        def search(base, queries):
            return AlignmentIndex(kind, backend=backend, progress=progress,
                                  **index_kwargs).add(base).search(
                queries, candidates)
        (s_cos, s_ids), (t_cos, t_ids) = search(kt, qs), search(ks, qt)
        if csls_k > 0:  # means over the slots found (IVF may leave -inf)
            r_s, r_t = (torch.nan_to_num(c[:, :csls_k], neginf=float('nan'))
                        .nanmean(1).nan_to_num(0.0) for c in (s_cos, t_cos))
            s_cos = 2 * s_cos - r_s.view(-1, 1) - r_t[s_ids.clamp_min(0)]
            t_cos = 2 * t_cos - r_t.view(-1, 1) - r_s[t_ids.clamp_min(0)]
            s_cos = s_cos.masked_fill(s_ids < 0, float('-inf'))
            t_cos = t_cos.masked_fill(t_ids < 0, float('-inf'))
        s_best, s_at = s_cos.max(1, keepdim=True)
        t_at = t_cos.argmax(1, keepdim=True)
        return s_best, s_ids.gather(1, s_at), t_ids.gather(1, t_at)
    if csls_k <= 0:
        s_score, s2t = AlignmentIndex('flat', backend=backend,
                                      progress=progress).add(kt).search(qs, 1)
        _, t2s = AlignmentIndex('flat', backend=backend,
                                progress=progress).add(ks).search(qt, 1)
        return s_score, s2t, t2s
    r_s = mean_topk_similarity(qs, kt, csls_k, backend, progress=progress)
    r_t = mean_topk_similarity(qt, ks, csls_k, backend, progress=progress)
    s_score, s2t = _top_by_csls(qs, kt, r_s, r_t, 1, 'flat', backend,
                                progress=progress)
    _, t2s = _top_by_csls(qt, ks, r_t, r_s, 1, 'flat', backend,
                          progress=progress)
    return s_score, s2t, t2s


def mutual_nearest_neighbors(source: Embeddings, target: Embeddings,
                             csls_k: int = 0,
                             threshold: Optional[float] = None,
                             backend: str = 'auto',
                             progress: Optional[bool] = None,
                             normalize: Optional[bool] = None) -> Tensor:
    r"""Pairs ``(i, j)`` where ``j`` is the best target of source ``i`` and
    ``i`` the best source of target ``j`` (iterative-training helper; pass
    only the unaligned entities). With :obj:`threshold`, only pairs whose
    score reaches it. :obj:`progress` as in :func:`csls_search` (the trainer
    passes its own setting, so ``False`` keeps training logs bar-free), and
    :obj:`normalize` too.

    Returns:
        ``[2, P]`` row indices into :obj:`source` and :obj:`target`.
    """
    s_score, s2t, t2s = top1_both_directions(source, target, csls_k,
                                             backend, progress, normalize)
    i = torch.arange(source.size(0), device=source.device)
    j = s2t[:, 0]
    keep = (j >= 0) & (t2s[j.clamp_min(0), 0] == i)
    if threshold is not None:
        keep &= s_score[:, 0] >= threshold
    return torch.stack([i[keep], j[keep]])
