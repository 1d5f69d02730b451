"""Sharded exact search over ``torch.distributed`` (gloo on CPU, nccl on
GPU). Run under ``torchrun``; every rank holds a shard of the targets.
Sources and shards may be :class:`~ricea_pyg.search.QueryKey` embeddings,
scored as in :func:`~ricea_pyg.search.csls_search`."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from ricea_pyg.search.csls import (
    _augment,
    mean_topk_similarity,
    rank_chunk_rows,
    rank_counts,
)
from ricea_pyg.search.embedding import Embeddings, QueryKey, query_key
from ricea_pyg.search.index import AlignmentIndex

__all__ = ['ShardedIndex', 'merge_topk', 'shard_range',
           'sharded_csls_search', 'sharded_true_ranks']


def shard_range(n: int, rank: int, world_size: int) -> Tuple[int, int]:
    """Contiguous ``[start, end)`` of rank's shard (sizes differ by ≤ 1)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def merge_topk(scores: Tensor, ids: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """Exact global top-k from concatenated per-shard candidates
    ``[Q, S·k]``; ties broken by the smaller global id, so the result does
    not depend on the shard layout."""
    order = torch.argsort(ids, dim=1, stable=True)
    scores, ids = scores.gather(1, order), ids.gather(1, order)
    top = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, top), ids.gather(1, top)


class ShardedIndex:
    r"""An :class:`AlignmentIndex` per rank over its shard of the targets,
    with exact global top-k.

    Every rank calls :meth:`add` with its own shard and the shard's global
    offset, then :meth:`search` with the same queries (broadcast from
    :obj:`src` first). Per-rank top-k lists carry global ids and are
    all-gathered and merged, so every rank gets the global result.

    Args:
        kind, metric, backend: As :class:`AlignmentIndex`.
        group: Process group (default: the world).
        progress (bool, optional): Each rank's tqdm bars, as in
            :class:`AlignmentIndex`. (default: :obj:`None`)
    """

    def __init__(self, kind: str = 'flat', metric: str = 'ip',
                 backend: str = 'auto', group=None,
                 progress: Optional[bool] = None):
        self.local = AlignmentIndex(kind, metric, backend, progress=progress)
        self.group = group
        self.offset = 0

    def add(self, shard: Tensor, offset: int) -> ShardedIndex:
        self.offset = offset
        if shard.size(0) > 0:
            self.local.add(shard)
        return self

    def search(self, queries: Tensor, k: int, src: Optional[int] = 0
               ) -> Tuple[Tensor, Tensor]:
        if src is not None:
            dist.broadcast(queries, src=src, group=self.group)
        q = queries.size(0)
        if self.local.ntotal > 0:
            scores, ids = self.local.search(queries, k)
            ids = torch.where(ids >= 0, ids + self.offset, ids)
        else:
            scores = torch.full((q, k), float('-inf'), device=queries.device)
            ids = torch.full((q, k), -1, dtype=torch.long,
                             device=queries.device)
        world = dist.get_world_size(self.group)
        all_s = [torch.empty_like(scores) for _ in range(world)]
        all_i = [torch.empty_like(ids) for _ in range(world)]
        dist.all_gather(all_s, scores.contiguous(), group=self.group)
        dist.all_gather(all_i, ids.contiguous(), group=self.group)
        return merge_topk(torch.cat(all_s, 1), torch.cat(all_i, 1), k)


def _broadcast(x: Embeddings, src: Optional[int], group) -> Embeddings:
    # In place: a QueryKey sends its query and its key.
    if src is not None:
        for part in (x.query, x.key) if isinstance(x, QueryKey) else (x,):
            dist.broadcast(part, src=src, group=group)
    return x


def _shard_r_t(shard: Tensor, reference: Tensor, csls_k: int,
               progress: Optional[bool] = None) -> Tensor:
    # r_t of this rank's targets: every rank holds all sources, so this is
    # local and needs no communication.
    if shard.size(0) == 0:
        return shard.new_empty(0)
    return mean_topk_similarity(shard, reference, csls_k, progress=progress)


def sharded_csls_search(source: Embeddings, target_shard: Embeddings,
                        offset: int, k: int, csls_k: int = 3,
                        src: Optional[int] = 0, group=None,
                        progress: Optional[bool] = None,
                        normalize: Optional[bool] = None
                        ) -> Tuple[Tensor, Tensor]:
    r""":func:`~ricea_pyg.search.csls_search` with the targets sharded over
    the ranks (each passes its shard and the shard's global offset).

    :math:`r_t` is computed on each rank for its own targets, :math:`r_s`
    from the exact global top-:math:`k` (:class:`ShardedIndex`), and the
    CSLS top-:obj:`k` is an exact sharded MIPS over the augmented vectors.
    Every rank returns the global ``(scores [Q, k], ids [Q, k])``.
    :obj:`progress` sets each rank's tqdm bars (False: none).

    Args:
        normalize (bool, optional): Whether to ℓ2-normalise tensor inputs
            (False: use them raw as query and key). A
            :class:`~ricea_pyg.search.QueryKey` is always used raw, and
            ``True`` with one raises :class:`ValueError`.
            (default: :obj:`None`, meaning normalise tensors)
    """
    qs, ks = query_key(_broadcast(source, src, group), normalize)
    qt, kt = query_key(target_shard, normalize)
    if csls_k <= 0:
        return ShardedIndex(group=group, progress=progress).add(
            kt, offset).search(qs, k, src=None)
    r_s = ShardedIndex(group=group, progress=progress).add(
        kt, offset).search(qs, csls_k, src=None)[0].mean(dim=1)
    q, t = _augment(qs, kt, _shard_r_t(qt, ks, csls_k, progress))
    scores, ids = ShardedIndex(group=group, progress=progress).add(
        t, offset).search(q, k, src=None)
    return scores - r_s.view(-1, 1), ids


def sharded_true_ranks(source: Embeddings, target_shard: Embeddings,
                       offset: int, truth: Tensor, csls_k: int = 0,
                       neighbors: Optional[Embeddings] = None,
                       batch_size: int = 4096, src: Optional[int] = 0,
                       group=None, max_bytes: Optional[int] = None,
                       progress: Optional[bool] = None,
                       normalize: Optional[bool] = None) -> Tensor:
    r""":func:`~ricea_pyg.search.true_ranks` with the targets sharded over
    the ranks: exact, untruncated 1-based ranks (ties against the query),
    equal to the single-process result.

    Every rank runs the same kernel as :func:`~ricea_pyg.search.true_ranks`
    (:func:`~ricea_pyg.search.csls.rank_counts`) on its shard, with the same
    memory bound per chunk. Per query chunk, the rank holding the true
    target contributes its score (an all-reduce MAX); the counts of
    targets scoring above or equal are summed once at the end (an
    all-reduce SUM).

    Args:
        source (torch.Tensor or QueryKey): ``[Q, d]`` queries (broadcast
            from :obj:`src`, both halves of a :class:`QueryKey`).
        target_shard (torch.Tensor or QueryKey): This rank's ``[N_r, d]`` targets,
            global rows ``offset .. offset + N_r - 1``.
        offset (int): Global row of the shard's first target.
        truth (torch.Tensor): ``[Q]`` global target row of each query's
            counterpart (broadcast from :obj:`src`).
        csls_k (int, optional): CSLS neighbourhood (0 = cosine).
            (default: :obj:`0`)
        neighbors (torch.Tensor or QueryKey, optional): The source-side
            set of :math:`r_t` (its keys). (default: :obj:`source`)
        batch_size (int, optional): Most queries per chunk.
            (default: :obj:`4096`)
        src (int, optional): Rank to broadcast :obj:`source` and
            :obj:`truth` from; None when every rank already holds them.
            (default: :obj:`0`)
        group (optional): Process group. (default: the world)
        max_bytes (int, optional): Most bytes of one chunk's scores on each
            rank. (default: :data:`~ricea_pyg.search.index.SCORE_CHUNK_BYTES`)
        progress (bool, optional): Each rank's tqdm bars: True always,
            False never, None for long runs only. (default: :obj:`None`)
        normalize (bool, optional): Whether to ℓ2-normalise tensor inputs
            (False: use them raw as query and key). A
            :class:`~ricea_pyg.search.QueryKey` is always used raw, and
            ``True`` with one raises :class:`ValueError`.
            (default: :obj:`None`, meaning normalise tensors)
    """
    qs, ks = query_key(_broadcast(source, src, group), normalize)
    truth = _broadcast(truth, src, group)
    qt, kt = query_key(target_shard, normalize)
    r_t = None
    if csls_k > 0:
        if neighbors is not None:
            ks = query_key(neighbors, normalize)[1]
        r_t = _shard_r_t(qt, ks, csls_k, progress)
    local = truth - offset
    local = torch.where((local >= 0) & (local < kt.size(0)), local, -1)
    # Every rank must run the same chunks (one all-reduce each): take the
    # fewest rows any rank's budget allows, so each stays within its own.
    rows = torch.tensor([rank_chunk_rows(batch_size, kt.size(0),
                                         qs.dtype, max_bytes)],
                        device=qs.device)
    dist.all_reduce(rows, op=dist.ReduceOp.MIN, group=group)

    def reduce_true(true: Tensor) -> Tensor:
        dist.all_reduce(true, op=dist.ReduceOp.MAX, group=group)
        return true

    counts = torch.stack(rank_counts(qs, kt, local, r_t,
                                     int(rows.item()), max_bytes,
                                     reduce_true, progress))
    dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
    return 1 + counts.sum(0)
