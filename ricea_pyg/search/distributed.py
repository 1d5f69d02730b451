"""Sharded exact search over ``torch.distributed`` (gloo on CPU, nccl on
GPU). Run under ``torchrun``; every rank holds a shard of the targets."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from ricea_pyg.search.index import AlignmentIndex

__all__ = ['ShardedIndex', 'merge_topk', 'shard_range']


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
    """

    def __init__(self, kind: str = 'flat', metric: str = 'ip',
                 backend: str = 'auto', group=None):
        self.local = AlignmentIndex(kind, metric, backend)
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
