"""Alignment metrics: Hits@k, MRR and MR in both directions, exact ranks."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ricea_pyg.search.assignment import (
    one_to_one_assignment,
    one_to_one_hits,
    pair_precision_recall,
)
from ricea_pyg.search.csls import true_ranks
from ricea_pyg.search.embedding import Embeddings, query_key
from ricea_pyg.search.index import SCALE_NPROBE, AlignmentIndex

__all__ = ['alignment_metrics', 'evaluate_embeddings', 'rank_metrics',
           'approximate_alignment_metrics', 'auroc',
           'CANDIDATE_PROTOCOLS']

#: How candidates are chosen. The standard protocol ranks against the
#: counterparts of the evaluated pairs only; ``'all'`` against every entity.
CANDIDATE_PROTOCOLS = ('test', 'all')


def rank_metrics(ranks: Tensor, hits: Sequence[int] = (1, 10)
                 ) -> Dict[str, float]:
    """Hits@k, MRR and MR from 1-based ranks."""
    r = ranks.double()
    out = {f'hits@{k}': (r <= k).double().mean().item() for k in hits}
    out['mrr'] = (1.0 / r).mean().item()
    out['mr'] = r.mean().item()
    return out


def _candidate_positions(num: int, cand: Tensor, gold: Tensor) -> Tensor:
    """Position of each :obj:`gold` row among the candidate rows
    :obj:`cand` (of :obj:`num`); raises if one is not a candidate."""
    pos = torch.full((num,), -1, dtype=torch.long, device=cand.device)
    pos[cand] = torch.arange(cand.numel(), device=cand.device)
    truth = pos[gold.to(cand.device)]
    if (truth < 0).any():
        raise ValueError('a gold counterpart is not among the candidates')
    return truth


def alignment_metrics(source_emb: Embeddings, target_emb: Embeddings,
                      pairs: Tensor, csls_k: int = 0,
                      candidates: Optional[Tuple[Tensor, Tensor]] = None,
                      hits: Sequence[int] = (1, 10),
                      batch_size: int = 4096,
                      normalize: Optional[bool] = None,
                      progress: Optional[bool] = None) -> Dict[str, float]:
    r"""Left-to-right and right-to-left alignment metrics.

    Each source of :obj:`pairs` is ranked against all target rows (or the
    candidate subset), and each target against all source rows, with exact
    ranks (ties count against the query).

    Args:
        source_emb, target_emb: ``[N_s, d]``, ``[N_t, d]`` tensors or
            :class:`~ricea_pyg.search.QueryKey` embeddings.
        pairs: ``[2, P]`` gold pairs (source row, target row).
        csls_k: 0 for cosine, else CSLS with this neighbourhood, computed
            over the candidate sets. (default: :obj:`0`)
        candidates: Optional ``(source_ids, target_ids)`` restricting the
            candidates; each must contain the gold rows of :obj:`pairs`. The
            usual protocol passes ``(pairs[0], pairs[1])`` of the test split.
        normalize (bool, optional): Whether to ℓ2-normalise tensor inputs
            (False: use them raw as query and key). A
            :class:`~ricea_pyg.search.QueryKey` is always used raw, and
            ``True`` with one raises :class:`ValueError`.
        progress (bool, optional): tqdm bars of the rank counting: True
            always, False never, None for long runs only.
            (default: :obj:`None`, meaning normalise tensors)

    Returns:
        ``hits@1``, ``hits@10``, ``mrr``, ``mr``, and the same keys prefixed
        ``r2l_``.
    """
    if pairs.dim() != 2 or pairs.size(0) != 2:
        raise ValueError('pairs must be [2, P]')
    if candidates is None:
        s_cand = torch.arange(source_emb.size(0), device=pairs.device)
        t_cand = torch.arange(target_emb.size(0), device=pairs.device)
    else:
        s_cand, t_cand = candidates
    out = {}
    for prefix, (q_emb, c_emb, q_ids, t_ids, cand, q_cand) in {
            '': (source_emb, target_emb, pairs[0], pairs[1], t_cand, s_cand),
            'r2l_': (target_emb, source_emb, pairs[1], pairs[0], s_cand,
                     t_cand),
    }.items():
        truth = _candidate_positions(c_emb.size(0), cand, t_ids)
        ranks = true_ranks(q_emb[q_ids], c_emb[cand], truth, csls_k,
                           batch_size, neighbors=q_emb[q_cand],
                           normalize=normalize, progress=progress)
        out.update({prefix + k: v for k, v in rank_metrics(ranks,
                                                           hits).items()})
    return out


def _approximate_direction(q_query: Tensor, c_key: Tensor, c_query: Tensor,
                           cand: Tensor, q_key: Tensor, q_cand: Tensor,
                           truth: Tensor, csls_k: int, depth: int,
                           index_kwargs) -> Tensor:
    """1-based ranks of :obj:`truth` among the :obj:`depth` best candidates
    (rows :obj:`cand` of :obj:`c_key`) of each query (``depth + 1`` where it
    is not among them). Candidate rows are gathered one table at a time and
    dropped once indexed: at a million entities each is a gigabyte."""
    def search(base: Tensor, queries: Tensor, k: int):
        index = AlignmentIndex(**index_kwargs).add(base)
        del base
        return index.search(queries, k)

    def mean_found(s: Tensor) -> Tensor:  # an IVF may return < k slots
        ok = torch.isfinite(s)
        return s.masked_fill(~ok, 0).sum(1) / ok.sum(1).clamp_min(1)
    scores, ids = search(c_key[cand], q_query, depth)
    if csls_k > 0:  # r_t for the retrieved candidates only
        r_s = mean_found(scores[:, :csls_k]).view(-1, 1)
        found = ids[ids >= 0].unique()
        back, _ = search(q_key[q_cand], c_query[cand[found]], csls_k)
        r_t = scores.new_zeros(cand.numel())
        r_t[found] = mean_found(back)
        scores = torch.where(ids >= 0, 2 * scores - r_s - r_t[
            ids.clamp_min(0)], scores)
        scores, order = scores.sort(1, descending=True)
        ids = ids.gather(1, order)
    hit = ids == truth.to(ids.device).view(-1, 1)
    first = hit.float().argmax(1) + 1
    return torch.where(hit.any(1), first, torch.full_like(first, depth + 1))


def approximate_alignment_metrics(source_emb: Embeddings,
                                  target_emb: Embeddings, pairs: Tensor,
                                  num_queries: int = 10_000, csls_k: int = 0,
                                  candidates: Optional[Tuple[Tensor, Tensor]]
                                  = None, depth: int = 20, seed: int = 0,
                                  kind: str = 'auto',
                                  normalize: Optional[bool] = None,
                                  **index_kwargs) -> Dict[str, float]:
    r"""Hits@1/10 and MRR of a fixed, seeded sample of :obj:`num_queries`
    pairs, by approximate search: for graphs too large for exact ranks.

    Each sampled query retrieves its :obj:`depth` nearest candidates from a
    :class:`~ricea_pyg.search.AlignmentIndex` (``kind='auto'``: exact below
    50k candidates, IVF above). With CSLS, :math:`r_s` comes from the
    query's own top :obj:`csls_k` and :math:`r_t` from a second index over
    the other side's candidates, for the retrieved candidates only; the
    :obj:`depth` candidates are then re-ranked. A counterpart that is not
    retrieved counts as rank ``depth + 1``, so ``mrr`` is a lower bound
    and ``hits@k`` (k ≤ depth) are exact up to the index's recall. The
    result says so: ``approx_queries`` is the sample size.

    Args:
        source_emb, target_emb: As in :func:`alignment_metrics`.
        pairs (Tensor): ``[2, P]`` gold pairs; the sample is drawn from them.
        num_queries (int): Sample size (all pairs if fewer).
            (default: :obj:`10_000`)
        csls_k (int): 0 for cosine, else CSLS. (default: :obj:`0`)
        candidates (tuple, optional): ``(source_ids, target_ids)`` as in
            :func:`alignment_metrics`; the neighbourhoods of CSLS are taken
            over them. (default: every row)
        depth (int): Candidates retrieved per query (at least
            :obj:`csls_k`). (default: :obj:`20`)
        seed (int): Seed of the sample. (default: :obj:`0`)
        kind (str): Index kind. (default: ``'auto'``)
        normalize (bool, optional): As in :func:`alignment_metrics`.
        index_kwargs: Passed to :class:`~ricea_pyg.search.AlignmentIndex`
            (``nlist``, ``nprobe`` (default:
            :data:`~ricea_pyg.search.index.SCALE_NPROBE`), ``backend``,
            ``progress``).

    Returns:
        The keys of :func:`alignment_metrics` but ``mr``, plus
        ``approx_queries``.
    """
    if pairs.dim() != 2 or pairs.size(0) != 2 or pairs.size(1) == 0:
        raise ValueError('pairs must be a non-empty [2, P]')
    depth = max(depth, csls_k)
    if num_queries < 1 or depth < 10:
        raise ValueError(f'need num_queries >= 1 and depth >= 10 (got '
                         f'{num_queries}, {depth})')
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(pairs.size(1), generator=gen)[:num_queries]
    sample = pairs[:, pick.to(pairs.device)]
    sq, sk = query_key(source_emb, normalize)
    tq, tk = query_key(target_emb, normalize)
    if candidates is None:
        s_cand = torch.arange(sq.size(0), device=pairs.device)
        t_cand = torch.arange(tq.size(0), device=pairs.device)
    else:
        s_cand, t_cand = candidates
    kwargs = dict(index_kwargs, kind=kind)
    kwargs.setdefault('nprobe', SCALE_NPROBE)
    out: Dict[str, float] = {}
    for prefix, (qq, qk, cq, ck, q_ids, t_ids, cand, q_cand) in {
            '': (sq, sk, tq, tk, sample[0], sample[1], t_cand, s_cand),
            'r2l_': (tq, tk, sq, sk, sample[1], sample[0], s_cand, t_cand),
    }.items():
        cand = cand.unique()  # a repeated candidate would tie with itself
        truth = _candidate_positions(ck.size(0), cand, t_ids)
        ranks = _approximate_direction(qq[q_ids], ck, cq, cand, qk,
                                       q_cand.unique(), truth, csls_k,
                                       depth, kwargs).double()
        ranks = ranks.cpu()
        found = ranks <= depth
        out.update({prefix + k: v for k, v in rank_metrics(ranks).items()
                    if k.startswith('hits@')})
        out[prefix + 'mrr'] = float(torch.where(found, 1.0 / ranks, 0.0)
                                    .mean())
    out['approx_queries'] = int(sample.size(1))
    return out


def evaluate_embeddings(source: Embeddings, target: Embeddings,
                        pairs: Tensor, csls_k: int = 3,
                        candidates: str = 'test', one_to_one: bool = False,
                        normalize: Optional[bool] = None,
                        progress: Optional[bool] = None,
                        num_queries: int = 0, seed: int = 0
                        ) -> Dict[str, float]:
    r"""Hits@1/10, MRR and MR in both directions for :obj:`pairs`, under a
    named candidate protocol.

    Args:
        source (Tensor or QueryKey): ``[N_s, d]`` source embeddings.
        target (Tensor or QueryKey): ``[N_t, d]`` target embeddings.
        pairs (Tensor): ``[2, P]`` gold (source, target) pairs, e.g. the
            test split.
        csls_k (int): 0 for cosine, else CSLS with this neighbourhood.
            (default: :obj:`3`)
        candidates (str): ``'test'`` ranks against the targets (sources) of
            :obj:`pairs` only, the standard protocol of MEAformer and its
            peers; ``'all'`` ranks against every entity of the other KG.
            (default: ``'test'``)
        one_to_one (bool): Also report ``one_to_one_hits@1``: the share of
            :obj:`pairs` that a global one-to-one assignment of the
            candidate block (by the same scores) recovers; see
            :func:`~ricea_pyg.search.one_to_one_assignment`.
            (default: :obj:`False`)
        normalize (bool, optional): As in :func:`alignment_metrics`.
            (default: :obj:`None`, meaning normalise tensors)
        progress (bool, optional): As in :func:`alignment_metrics`.
            (default: :obj:`None`)
        num_queries (int): 0 for exact ranks of every pair; else
            :func:`approximate_alignment_metrics` on a sample of this many
            pairs drawn with :obj:`seed` (for large graphs; no one-to-one
            Hits@1 then). (default: :obj:`0`)
        seed (int): Seed of that sample. (default: :obj:`0`)
    """
    if candidates == 'test':
        cand = (pairs[0], pairs[1])
    elif candidates == 'all':
        cand = None
    else:
        raise ValueError(f'candidates must be one of {CANDIDATE_PROTOCOLS} '
                         f'(got {candidates!r})')
    if num_queries > 0:
        return approximate_alignment_metrics(
            source, target, pairs, num_queries, csls_k, cand, seed=seed,
            normalize=normalize, progress=progress)
    out = alignment_metrics(source, target, pairs, csls_k=csls_k,
                            candidates=cand, normalize=normalize,
                            progress=progress)
    if one_to_one and cand is None:  # whole KGs: sparse Sinkhorn scales
        result = one_to_one_assignment(source, target, method='sinkhorn',
                                       csls_k=csls_k, normalize=normalize)
        out['one_to_one_hits@1'] = pair_precision_recall(result.pairs,
                                                         pairs)['recall']
    elif one_to_one:
        out['one_to_one_hits@1'] = one_to_one_hits(source, target, pairs,
                                                   csls_k=csls_k,
                                                   normalize=normalize)
    return out


def auroc(scores: Tensor, labels: Tensor) -> float:
    r"""Area under the ROC curve of :obj:`scores` for telling the positive
    :obj:`labels` from the negative ones: the probability that a random
    positive scores above a random negative, ties counting one half (the
    Mann–Whitney :math:`U` over :math:`n_+ n_-`, with average ranks).

    Args:
        scores (Tensor): ``[n]`` finite scores, higher meaning positive.
        labels (Tensor): ``[n]`` bool.

    Raises:
        ValueError: If a score is not finite or either class is empty.
    """
    from scipy.stats import rankdata
    scores = scores.detach().reshape(-1).double().cpu()
    labels = labels.reshape(-1).bool().cpu()
    if scores.numel() != labels.numel():
        raise ValueError(f'scores and labels differ in size ({scores.numel()}'
                         f' vs {labels.numel()})')
    if not torch.isfinite(scores).all():
        raise ValueError('auroc needs finite scores')
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f'auroc needs both classes (got {n_pos} positive, '
                         f'{n_neg} negative)')
    ranks = torch.from_numpy(rankdata(scores.numpy(), method='average'))
    u = ranks[labels].sum().item() - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)
