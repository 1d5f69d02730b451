r"""Global one-to-one inference: every source gets at most one target and
every target at most one source.

Ranking each source on its own lets two sources take the same target;
solving the alignment of a whole block at once removes those collisions.
Two solvers:

* :func:`hungarian_assignment`: the exact maximum-score matching of a dense
  block (SciPy's :func:`~scipy.optimize.linear_sum_assignment`), for blocks
  up to about 20k × 20k (:data:`HUNGARIAN_MAX_CELLS`);
* :func:`sparse_sinkhorn`: log-domain Sinkhorn over the top-:math:`k`
  candidates of every entity (:func:`topk_candidates`, FAISS or torch), so
  memory grows with :math:`N k`, followed by a one-to-one decode
  (:func:`greedy_matching`).

:func:`one_to_one_assignment` runs either on embeddings and returns the
pairs with their scores (for export); :func:`one_to_one_hits` is Hits@1 of
the assignment on a test block; :func:`pair_precision_recall` scores
exported pairs against labelled ones.

Each takes a :class:`~ricea_pyg.search.QueryKey` where it takes embeddings;
the score of source :math:`i` and target :math:`j` is then
:math:`\langle q(s_i), k(t_j) \rangle` in place of the cosine.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ricea_pyg.search.embedding import Embeddings, query_key
from ricea_pyg.search.index import AlignmentIndex

__all__ = ['Assignment', 'dense_similarity', 'hungarian_assignment',
           'sinkhorn', 'sparse_sinkhorn', 'topk_candidates',
           'greedy_matching', 'one_to_one_assignment', 'one_to_one_hits',
           'pair_precision_recall', 'HUNGARIAN_MAX_CELLS']

#: Largest block (rows × columns) that ``method='auto'`` solves with the
#: Hungarian algorithm; larger blocks use sparse Sinkhorn. A 20k × 20k
#: block holds a float32 score matrix (1.6 GB) and SciPy's float64 copy
#: (3.2 GB).
HUNGARIAN_MAX_CELLS = 20_000 * 20_000

#: Default number of candidates per entity for Sinkhorn (LightEA's 500).
DEFAULT_CANDIDATES = 500

#: Most candidate pairs per direction by default (k shrinks past 100k).
CANDIDATE_BUDGET = 50_000_000


class Assignment(NamedTuple):
    r"""Pairs chosen by :func:`one_to_one_assignment`.

    Attributes:
        pairs (Tensor): ``[2, P]`` source and target ids (global ids when
            ``source_ids``/``target_ids`` were given), sorted by source.
        scores (Tensor): ``[P]`` similarity of each pair (cosine, or CSLS
            when ``csls_k > 0``).
        probability (Tensor, optional): ``[P]`` Sinkhorn probability of
            each pair (its row of the transport plan sums to 1); ``None``
            for the Hungarian solver.
    """
    pairs: Tensor
    scores: Tensor
    probability: Optional[Tensor]


def _check_embeddings(source: Embeddings, target: Embeddings) -> None:
    # Raw halves: a tensor is its own query and key.
    (source, source_key), (target, target_key) = (
        query_key(source, False), query_key(target, False))
    if source.dim() != 2 or target.dim() != 2:
        raise ValueError(f'embeddings must be [N, d] (got source '
                         f'{tuple(source.shape)}, target '
                         f'{tuple(target.shape)})')
    if source.size(1) != target.size(1):
        raise ValueError(f'source and target dims differ ({source.size(1)} '
                         f'vs {target.size(1)}): embed both sides in the '
                         'same space')
    if source.size(0) == 0 or target.size(0) == 0:
        raise ValueError(f'empty block ({source.size(0)} sources, '
                         f'{target.size(0)} targets): nothing to assign')
    for name, x, key in (('source', source, source_key),
                         ('target', target, target_key)):
        if not (torch.isfinite(x).all() and torch.isfinite(key).all()):
            raise ValueError(f'{name} embeddings contain NaN or inf')


def dense_similarity(source: Embeddings, target: Embeddings,
                     csls_k: int = 0, normalize: Optional[bool] = None
                     ) -> Tensor:
    r"""The dense ``[N_s, N_t]`` score block: cosine, or CSLS

    .. math::
        \mathrm{CSLS}(s_i, t_j) = 2 \cos(s_i, t_j) - r_s(s_i) - r_t(t_j)

    with :math:`r_s`, :math:`r_t` the mean cosine to the :obj:`csls_k`
    nearest entities of the other side *within the block*. With a
    :class:`~ricea_pyg.search.QueryKey` the cosine is
    :math:`\langle q(s_i), k(t_j) \rangle`, which is symmetric, so
    :math:`r_t` reads the block's columns.

    Args:
        source (Tensor or QueryKey): ``[N_s, d]`` embeddings (tensors are
            ℓ2-normalised here).
        target (Tensor or QueryKey): ``[N_t, d]`` embeddings.
        csls_k (int): CSLS neighbourhood; 0 for cosine. (default: :obj:`0`)
        normalize (bool, optional): Whether to ℓ2-normalise tensor inputs
            (False: use them raw as query and key). A
            :class:`~ricea_pyg.search.QueryKey` is always used raw, and
            ``True`` with one raises :class:`ValueError`.
            (default: :obj:`None`, meaning normalise tensors)
    """
    _check_embeddings(source, target)
    if csls_k < 0 or csls_k > min(source.size(0), target.size(0)):
        raise ValueError(f'csls_k={csls_k} must lie in [0, min(N_s, N_t) = '
                         f'{min(source.size(0), target.size(0))}]')
    sim = query_key(source, normalize)[0] @ query_key(target,
                                                      normalize)[1].t()
    if csls_k > 0:
        r_s = sim.topk(csls_k, dim=1).values.mean(1, keepdim=True)
        r_t = sim.topk(csls_k, dim=0).values.mean(0, keepdim=True)
        sim = sim.mul_(2).sub_(r_s).sub_(r_t)
    return sim


def _check_scores(scores: Tensor, allow_neg_inf: bool = False) -> None:
    if scores.dim() != 2:
        raise ValueError(f'scores must be a [N_s, N_t] block (got shape '
                         f'{tuple(scores.shape)})')
    if scores.numel() == 0:
        raise ValueError(f'empty score block {tuple(scores.shape)}: nothing '
                         'to assign')
    if torch.isnan(scores).any():
        raise ValueError('scores contain NaN: check the embeddings')
    bad = torch.isinf(scores)
    if allow_neg_inf:
        bad = bad & (scores > 0)
    if bad.any():
        raise ValueError('scores contain inf' + (
            '' if allow_neg_inf else
            ': the Hungarian solver needs finite scores (use a threshold '
            'to forbid weak pairs)'))


def hungarian_assignment(scores: Tensor, threshold: Optional[float] = None
                         ) -> Tuple[Tensor, Tensor]:
    r"""The one-to-one assignment of largest total score (Hungarian /
    Jonker–Volgenant algorithm, :func:`scipy.optimize.linear_sum_assignment`):

    .. math::
        \max_{\pi} \sum_{(i, j) \in \pi} S_{ij}

    over matchings :math:`\pi` of :math:`\min(N_s, N_t)` pairs
    (rectangular blocks leave the surplus rows or columns unmatched).

    With a :obj:`threshold` :math:`\theta`, entities may stay unmatched:
    the solver maximises :math:`\sum_{(i,j)\in\pi} (S_{ij} - \theta)` over
    all matchings, solved exactly as an assignment on
    :math:`\max(S - \theta, 0)` whose pairs below :math:`\theta` are then
    dropped. A source whose counterpart is missing then stays unmatched
    instead of taking a weak target another source needs.

    The solver runs on the CPU in float64 (a copy of the block:
    8 bytes × :math:`N_s N_t`); time grows roughly cubically (seconds at
    10k × 10k on well-separated embeddings, minutes on noisy ones).

    Args:
        scores (Tensor): ``[N_s, N_t]`` similarities, larger is better
            (cosine, CSLS, ...); finite.
        threshold (float, optional): Pairs scoring below it are never
            returned. (default: :obj:`None`)

    Returns:
        ``(pairs [2, P], values [P])``: row and column ids sorted by row,
        and their scores, on the device of :obj:`scores`.
    """
    _check_scores(scores)
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("the Hungarian solver needs SciPy: pip install "
                          "scipy (or use method='sinkhorn')") from e
    s = scores.detach().cpu()
    if s.dtype not in (torch.float32, torch.float64):
        s = s.float()
    s = s.numpy()
    # Minimise the negated scores on our own float64 copy: SciPy then works
    # on it in place of making two more (a cast and a negation).
    cost = np.empty(s.shape, dtype=np.float64)
    if threshold is None:
        np.negative(s, out=cost)
    else:
        np.subtract(threshold, s, out=cost)
        np.minimum(cost, 0.0, out=cost)
    rows, cols = linear_sum_assignment(cost)
    del cost
    rows = torch.from_numpy(rows).long().to(scores.device)
    cols = torch.from_numpy(cols).long().to(scores.device)
    values = scores.detach()[rows, cols]
    if threshold is not None:
        keep = values >= threshold
        rows, cols, values = rows[keep], cols[keep], values[keep]
    return torch.stack([rows, cols]), values


def _check_sinkhorn_args(temperature: float, iterations: int) -> None:
    if not temperature > 0:
        raise ValueError(f'temperature must be > 0 (got {temperature}); '
                         'LightEA uses 0.02')
    if iterations < 0:
        raise ValueError(f'iterations must be >= 0 (got {iterations})')


def sinkhorn(scores: Tensor, temperature: float = 0.02,
             iterations: int = 15) -> Tensor:
    r"""Dense log-domain Sinkhorn: the reference for :func:`sparse_sinkhorn`
    on small blocks.

    Starting from :math:`\log K_{ij} = S_{ij} / T`, each iteration
    normalises the columns, then the rows:

    .. math::
        \log K_{ij} \leftarrow \log K_{ij} - \log\sum_{i'} K_{i'j},
        \qquad
        \log K_{ij} \leftarrow \log K_{ij} - \log\sum_{j'} K_{ij'}

    so the result is row-stochastic: :math:`P_{ij}` reads as the
    probability that target :math:`j` is the counterpart of source
    :math:`i`. On rectangular blocks the columns converge to the equal mass
    :math:`N_s / N_t` (the rows' total spread evenly). ``-inf`` scores
    mark forbidden pairs.

    Args:
        scores (Tensor): ``[N_s, N_t]`` similarities.
        temperature (float): :math:`T`; LightEA uses 0.02 (i.e.
            :math:`e^{50 S}`). (default: :obj:`0.02`)
        iterations (int): Rounds of column and row normalisation.
            (default: :obj:`15`)

    Returns:
        ``[N_s, N_t]`` probabilities.
    """
    _check_scores(scores, allow_neg_inf=True)
    _check_sinkhorn_args(temperature, iterations)
    log_k = scores / temperature
    for _ in range(iterations):
        log_k = log_k - log_k.logsumexp(0, keepdim=True)
        log_k = log_k - log_k.logsumexp(1, keepdim=True)
    if iterations == 0:
        log_k = log_k - log_k.logsumexp(1, keepdim=True)
    return log_k.exp()


def _scatter_logsumexp(x: Tensor, index: Tensor, size: int) -> Tensor:
    """``log Σ exp(x)`` per group of :obj:`index` (``-inf`` for empty
    groups), in ``O(len(x) + size)`` memory."""
    mx = torch.full((size,), float('-inf'), dtype=x.dtype, device=x.device)
    mx = mx.scatter_reduce(0, index, x, 'amax')
    shift = mx[index]
    total = torch.zeros(size, dtype=x.dtype, device=x.device)
    total = total.scatter_add_(0, index, (x - shift).exp())
    return total.log() + mx


def _check_sparse(index: Tensor, values: Tensor, size: Tuple[int, int],
                  name: str = 'scores') -> None:
    if index.dim() != 2 or index.size(0) != 2:
        raise ValueError(f'index must be [2, E] (row, column) pairs (got '
                         f'shape {tuple(index.shape)})')
    if values.dim() != 1 or values.numel() != index.size(1):
        raise ValueError(f'{name} must be [E] with E = {index.size(1)} '
                         f'(got shape {tuple(values.shape)})')
    if index.size(1) == 0:
        raise ValueError('no candidate pairs (E = 0): nothing to assign')
    if index.dtype not in (torch.long, torch.int):
        raise ValueError(f'index must be an integer tensor (got '
                         f'{index.dtype})')
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f'size must be (N_s, N_t) >= 1 (got {size})')
    if int(index.min()) < 0 or int(index[0].max()) >= size[0] or \
            int(index[1].max()) >= size[1]:
        raise ValueError(f'index out of range for a {size[0]} x {size[1]} '
                         'block (drop missing candidates, id -1, first)')
    if not torch.isfinite(values).all():
        raise ValueError(f'{name} contain NaN or inf: check the embeddings '
                         'and drop missing candidates (score -inf) first')


def sparse_sinkhorn(index: Tensor, scores: Tensor, size: Tuple[int, int],
                    temperature: float = 0.02, iterations: int = 15
                    ) -> Tensor:
    r""":func:`sinkhorn` restricted to candidate pairs: the kernel is
    :math:`e^{S_{ij}/T}` on the :math:`E` given pairs and 0 elsewhere, so
    time and memory are :math:`O(E)` (:math:`E \le 2 N k` for the
    :func:`topk_candidates` of both sides). Column and row normalisations
    are scattered log-sum-exps; the result is row-stochastic over each
    row's candidates. Equal to the dense one when every pair is a
    candidate.

    Args:
        index (Tensor): ``[2, E]`` (row, column) of each candidate, unique.
        scores (Tensor): ``[E]`` finite similarities.
        size (Tuple[int, int]): ``(N_s, N_t)``.
        temperature (float): (default: :obj:`0.02`)
        iterations (int): (default: :obj:`15`)

    Returns:
        ``[E]`` probabilities, aligned with :obj:`index`.
    """
    _check_sparse(index, scores, size)
    _check_sinkhorn_args(temperature, iterations)
    index = index.long()
    rows, cols = index[0], index[1]
    log_k = scores / temperature
    for _ in range(iterations):
        log_k = log_k - _scatter_logsumexp(log_k, cols, size[1])[cols]
        log_k = log_k - _scatter_logsumexp(log_k, rows, size[0])[rows]
    if iterations == 0:
        log_k = log_k - _scatter_logsumexp(log_k, rows, size[0])[rows]
    return log_k.exp()


def topk_candidates(source: Embeddings, target: Embeddings, k: int,
                    csls_k: int = 0, symmetric: bool = True,
                    kind: str = 'auto', backend: str = 'auto',
                    normalize: Optional[bool] = None,
                    **index_kwargs) -> Tuple[Tensor, Tensor]:
    r"""Candidate pairs for :func:`sparse_sinkhorn`: the :obj:`k` nearest
    targets of every source by cosine (an :class:`AlignmentIndex`, FAISS
    when installed) and, with :obj:`symmetric`, the :obj:`k` nearest
    sources of every target, deduplicated. With ``csls_k > 0`` each pair is
    rescored by CSLS, :math:`2\cos - r_s - r_t`, with :math:`r_s, r_t`
    over the :obj:`csls_k` nearest of the other side (as
    :func:`dense_similarity`).

    Args:
        source (Tensor or QueryKey): ``[N_s, d]`` (tensors are
            ℓ2-normalised here; targets are searched by the sources'
            queries against their keys, and back).
        target (Tensor or QueryKey): ``[N_t, d]``.
        k (int): Candidates per entity, at most :math:`N_t` (and
            :math:`N_s` when symmetric).
        csls_k (int): 0 for cosine. (default: :obj:`0`)
        symmetric (bool): Add each target's :obj:`k` nearest sources, so no
            target is left without candidates. (default: :obj:`True`)
        normalize (bool, optional): Whether to ℓ2-normalise tensor inputs
            (False: use them raw as query and key). A
            :class:`~ricea_pyg.search.QueryKey` is always used raw, and
            ``True`` with one raises :class:`ValueError`.
            (default: :obj:`None`, meaning normalise tensors)
        kind, backend, index_kwargs: Passed to :class:`AlignmentIndex`
            (``'auto'`` is exact below 50k targets, IVF above).

    Returns:
        ``(index [2, E], scores [E])``, sorted by (row, column).
    """
    _check_embeddings(source, target)
    n_s, n_t = source.size(0), target.size(0)
    limit = min(n_s, n_t) if symmetric else n_t
    if k < 1 or k > limit:
        side = 'the smaller side' if symmetric else 'targets'
        raise ValueError(f'k={k} candidates per entity must lie in [1, '
                         f'{limit}] for a {n_s} x {n_t} block (the size of '
                         f'{side}): pass a smaller k')
    if csls_k < 0 or csls_k > k:
        raise ValueError(f'csls_k={csls_k} must lie in [0, k={k}]')
    qs, ks = query_key(source.detach(), normalize)
    qt, kt = query_key(target.detach(), normalize)
    fwd_s, fwd_i = AlignmentIndex(kind, backend=backend, **index_kwargs).add(
        kt).search(qs, k)
    back_k = k if symmetric else csls_k
    rows = torch.arange(n_s, device=source.device).repeat_interleave(k)
    cols, cos = fwd_i.reshape(-1), fwd_s.reshape(-1)
    if back_k > 0:
        back_s, back_i = AlignmentIndex(kind, backend=backend,
                                        **index_kwargs).add(ks).search(
            qt, back_k)
    if symmetric:
        rows = torch.cat([rows, back_i.reshape(-1)])
        cols = torch.cat([cols, torch.arange(
            n_t, device=source.device).repeat_interleave(k)])
        cos = torch.cat([cos, back_s.reshape(-1)])
    keep = (rows >= 0) & (cols >= 0)  # approximate indexes may miss slots
    rows, cols, cos = rows[keep], cols[keep], cos[keep]
    key, order = torch.sort(rows * n_t + cols, stable=True)
    first = torch.ones_like(key, dtype=torch.bool)
    first[1:] = key[1:] != key[:-1]  # forward search wins on duplicates
    order = order[first]
    rows, cols, cos = rows[order], cols[order], cos[order]
    if csls_k > 0:
        r_s = fwd_s[:, :csls_k].mean(1)
        r_t = back_s[:, :csls_k].mean(1)
        cos = 2 * cos - r_s[rows] - r_t[cols]
    return torch.stack([rows, cols]), cos


def greedy_matching(index: Tensor, values: Tensor, size: Tuple[int, int],
                    decode: str = 'greedy') -> Tensor:
    r"""A one-to-one decode of scored candidate pairs.

    * ``'greedy'``: take pairs from the highest value down, skipping any
      whose row or column is taken (ties: the earlier pair in
      :obj:`index`). Computed in rounds that each accept every pair that
      is the best remaining one of both its row and its column, which
      gives exactly the greedy matching in :math:`O(E)` per round.
    * ``'argmax'``: each row takes its best candidate; where several rows
      take the same column, the best of them keeps it and the others stay
      unmatched (one round of the above).

    Args:
        index (Tensor): ``[2, E]`` (row, column) pairs.
        values (Tensor): ``[E]`` finite values, larger is better.
        size (Tuple[int, int]): ``(N_s, N_t)``.
        decode (str): ``'greedy'`` or ``'argmax'``. (default: ``'greedy'``)

    Returns:
        ``[P]`` positions into :obj:`index` of the chosen pairs, sorted by
        row.
    """
    if decode not in ('greedy', 'argmax'):
        raise ValueError(f"decode must be 'greedy' or 'argmax' (got "
                         f'{decode!r})')
    _check_sparse(index, values, size, 'values')
    num = values.numel()
    # Distinct integer ranks make the "best of row and column" test exact.
    order = torch.argsort(values, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(num, device=values.device)
    pos = torch.arange(num, device=values.device)
    rows, cols = index[0].long(), index[1].long()
    chosen = []
    while pos.numel() > 0:
        r, c, k = rows[pos], cols[pos], rank[pos]
        row_best = torch.full((size[0],), num, dtype=k.dtype,
                              device=k.device).scatter_reduce(0, r, k, 'amin')
        best = k == row_best[r]
        # Greedy: best of its column among all remaining pairs; argmax:
        # best among the rows that chose that column.
        rival = best if decode == 'argmax' else torch.ones_like(best)
        col_best = torch.full((size[1],), num, dtype=k.dtype,
                              device=k.device).scatter_reduce(
            0, c[rival], k[rival], 'amin')
        win = best & (k == col_best[c])
        chosen.append(pos[win])
        if decode == 'argmax':
            break
        row_used = torch.zeros(size[0], dtype=torch.bool, device=k.device)
        col_used = torch.zeros(size[1], dtype=torch.bool, device=k.device)
        row_used[r[win]] = True
        col_used[c[win]] = True
        pos = pos[~(row_used[r] | col_used[c])]
    chosen = torch.cat(chosen)
    return chosen[torch.argsort(rows[chosen], stable=True)]


def _select(emb: Embeddings, ids: Optional[Tensor]) -> Embeddings:
    return emb if ids is None else emb[ids.to(emb.device)]


def one_to_one_assignment(source_emb: Embeddings, target_emb: Embeddings,
                          source_ids: Optional[Tensor] = None,
                          target_ids: Optional[Tensor] = None,
                          method: str = 'auto', csls_k: int = 0,
                          threshold: Optional[float] = None,
                          min_probability: Optional[float] = None,
                          k: Optional[int] = None,
                          temperature: float = 0.02, iterations: int = 15,
                          decode: str = 'greedy', symmetric: bool = True,
                          kind: str = 'auto', backend: str = 'auto',
                          normalize: Optional[bool] = None,
                          **index_kwargs) -> Assignment:
    r"""One-to-one alignment of a block of sources and targets, for export.

    * ``'hungarian'``: :func:`hungarian_assignment` on the dense
      :func:`dense_similarity` block (exact; memory :math:`12 N_s N_t`
      bytes);
    * ``'sinkhorn'``: :func:`topk_candidates`, :func:`sparse_sinkhorn` and
      :func:`greedy_matching` on the Sinkhorn probabilities (memory
      :math:`O(N k)`);
    * ``'auto'``: Hungarian up to :data:`HUNGARIAN_MAX_CELLS` cells,
      Sinkhorn above.

    Entities without a counterpart: :obj:`threshold` drops pairs whose
    score is below it (for Hungarian, the optimal matching among the pairs
    that reach it, see :func:`hungarian_assignment`); :obj:`min_probability`
    drops pairs whose Sinkhorn probability is below it (LightEA keeps
    pseudo-labels above 0.5). Measure the effect with
    :func:`pair_precision_recall`.

    Args:
        source_emb (Tensor or QueryKey): ``[N_s, d]`` embeddings.
        target_emb (Tensor or QueryKey): ``[N_t, d]`` embeddings.
        source_ids (Tensor, optional): Rows of :obj:`source_emb` forming the
            block (default: all). Returned pairs use these global ids.
        target_ids (Tensor, optional): Rows of :obj:`target_emb`
            (default: all).
        method (str): ``'auto'``, ``'hungarian'`` or ``'sinkhorn'``.
            (default: ``'auto'``)
        csls_k (int): CSLS neighbourhood within the block; 0 for cosine.
            (default: :obj:`0`)
        threshold (float, optional): Least score of a returned pair.
            (default: :obj:`None`)
        min_probability (float, optional): Least Sinkhorn probability of a
            returned pair (Sinkhorn only). (default: :obj:`None`)
        k (int, optional): Sinkhorn candidates per entity (default:
            :math:`\min(500, N_s, N_t, 5 \cdot 10^7 / \max(N_s, N_t))`:
            LightEA's 500, fewer from 100k entities so that the candidate
            lists stay about a gigabyte).
        temperature (float): Sinkhorn temperature. (default: :obj:`0.02`)
        iterations (int): Sinkhorn rounds. (default: :obj:`15`)
        decode (str): ``'greedy'`` or ``'argmax'`` (Sinkhorn only, see
            :func:`greedy_matching`). (default: ``'greedy'``)
        symmetric (bool): Candidates from both sides. (default: :obj:`True`)
        kind (str): :class:`AlignmentIndex` kind for the candidates.
            (default: ``'auto'``)
        backend (str): :class:`AlignmentIndex` backend. (default:
            ``'auto'``)
        index_kwargs: Passed to :class:`AlignmentIndex` for the candidates
            (``nlist``, ``nprobe``, ...).
        normalize (bool, optional): Whether to ℓ2-normalise tensor inputs
            (False: use them raw as query and key). A
            :class:`~ricea_pyg.search.QueryKey` is always used raw, and
            ``True`` with one raises :class:`ValueError`.
            (default: :obj:`None`, meaning normalise tensors)

    Returns:
        :class:`Assignment` ``(pairs [2, P], scores [P], probability)``.
    """
    if method not in ('auto', 'hungarian', 'sinkhorn'):
        raise ValueError(f"method must be 'auto', 'hungarian' or 'sinkhorn' "
                         f'(got {method!r})')
    source = _select(source_emb, source_ids).detach()
    target = _select(target_emb, target_ids).detach()
    _check_embeddings(source, target)
    n_s, n_t = source.size(0), target.size(0)
    if method == 'auto':
        method = 'hungarian' if n_s * n_t <= HUNGARIAN_MAX_CELLS else \
            'sinkhorn'
    if method == 'hungarian':
        if min_probability is not None:
            raise ValueError("min_probability applies to method='sinkhorn' "
                             'only; use threshold (on the score) instead')
        sim = dense_similarity(source, target, csls_k, normalize)
        pairs, scores = hungarian_assignment(sim, threshold)
        prob = None
    else:
        if k is None:  # bounded memory: at most CANDIDATE_BUDGET pairs
            k = max(1, min(DEFAULT_CANDIDATES, n_s, n_t,
                           CANDIDATE_BUDGET // max(n_s, n_t)))
        index, cand = topk_candidates(source, target, k, csls_k, symmetric,
                                      kind, backend, normalize,
                                      **index_kwargs)
        prob_all = sparse_sinkhorn(index, cand, (n_s, n_t), temperature,
                                   iterations)
        keep = torch.ones_like(cand, dtype=torch.bool)
        if threshold is not None:
            keep &= cand >= threshold
        if min_probability is not None:
            keep &= prob_all >= min_probability
        if not keep.any():
            empty = torch.empty(0, dtype=cand.dtype, device=cand.device)
            return Assignment(torch.empty(2, 0, dtype=torch.long,
                                          device=cand.device), empty, empty)
        index, cand, prob_all = index[:, keep], cand[keep], prob_all[keep]
        chosen = greedy_matching(index, prob_all, (n_s, n_t), decode)
        pairs, scores, prob = index[:, chosen], cand[chosen], prob_all[chosen]
    if source_ids is not None:
        pairs[0] = source_ids.to(pairs.device)[pairs[0]]
    if target_ids is not None:
        pairs[1] = target_ids.to(pairs.device)[pairs[1]]
    return Assignment(pairs, scores, prob)


def _pair_keys(pairs: Tensor, base: int) -> Tensor:
    return pairs[0].long() * base + pairs[1].long()


def pair_precision_recall(predicted: Tensor, gold: Tensor
                          ) -> Dict[str, float]:
    r"""Precision, recall and F1 of predicted pairs against labelled ones:

    .. math::
        P = \frac{|\hat A \cap A|}{|\hat A|}, \quad
        R = \frac{|\hat A \cap A|}{|A|}, \quad F_1 = \frac{2PR}{P + R}

    Every predicted pair missing from :obj:`gold` counts as wrong, so pass
    only predictions over labelled entities (e.g. the test block).
    Duplicate pairs count once. Precision is 0 when nothing is predicted.

    Args:
        predicted (Tensor): ``[2, P]`` (source id, target id).
        gold (Tensor): ``[2, G]`` labelled pairs, :math:`G \ge 1`.

    Returns:
        ``precision``, ``recall``, ``f1``, ``num_predicted``, ``num_gold``,
        ``num_correct``.
    """
    for name, x in (('predicted', predicted), ('gold', gold)):
        if x.dim() != 2 or x.size(0) != 2:
            raise ValueError(f'{name} must be [2, P] pairs (got shape '
                             f'{tuple(x.shape)})')
    if gold.size(1) == 0:
        raise ValueError('gold has no pairs: recall is undefined')
    gold = gold.to(predicted.device)
    base = int(max(predicted[1].max() if predicted.numel() else 0,
                   gold[1].max())) + 1
    pred_keys = torch.unique(_pair_keys(predicted, base))
    gold_keys = torch.unique(_pair_keys(gold, base))
    correct = int(torch.isin(pred_keys, gold_keys).sum())
    p = correct / pred_keys.numel() if pred_keys.numel() else 0.0
    r = correct / gold_keys.numel()
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return dict(precision=p, recall=r, f1=f1,
                num_predicted=float(pred_keys.numel()),
                num_gold=float(gold_keys.numel()), num_correct=float(correct))


def one_to_one_hits(source_emb: Embeddings, target_emb: Embeddings,
                    pairs: Tensor, method: str = 'auto', csls_k: int = 0,
                    k: Optional[int] = None, temperature: float = 0.02,
                    iterations: int = 15, decode: str = 'greedy',
                    backend: str = 'auto',
                    normalize: Optional[bool] = None) -> float:
    r"""Hits@1 of the one-to-one assignment on the test block: the sources
    ``pairs[0]`` are assigned among the targets ``pairs[1]`` (the
    test-candidate protocol of
    :func:`~ricea_pyg.metrics.alignment_metrics`), and Hits@1 is the
    fraction of gold pairs the assignment contains (its recall).

    Args:
        source_emb (Tensor or QueryKey): ``[N_s, d]`` embeddings.
        target_emb (Tensor or QueryKey): ``[N_t, d]`` embeddings.
        pairs (Tensor): ``[2, P]`` gold pairs (source row, target row).
        method, csls_k, k, temperature, iterations, decode, backend: As in
            :func:`one_to_one_assignment`.
        normalize (bool, optional): As in :func:`one_to_one_assignment`.
            (default: :obj:`None`)
    """
    if pairs.dim() != 2 or pairs.size(0) != 2 or pairs.size(1) == 0:
        raise ValueError(f'pairs must be [2, P] with P >= 1 (got shape '
                         f'{tuple(pairs.shape)})')
    result = one_to_one_assignment(
        source_emb, target_emb, torch.unique(pairs[0]),
        torch.unique(pairs[1]), method=method, csls_k=csls_k, k=k,
        temperature=temperature, iterations=iterations, decode=decode,
        backend=backend, normalize=normalize)
    return pair_precision_recall(result.pairs, pairs)['recall']
