"""Forward + backward of the whole-graph Dual-AMN loss: the library's dense
path (``_DenseStandardisedLSE``, hand-written backward, one ``[B, N]``
buffer) against plain autograd over the same formula (the implementation it
replaced, kept here as the reference).

    python benchmarks/dual_amn_loss.py --batch 1024 --entities 39054 \
        --dims 768 1536

The shape is the trainer's ``joint_loss='dual_amn'`` step on DBP15K: 1,024
pairs, both KGs' 39,054 entities as candidates of each query, ℓ2-normalised
rows, the query and its counterpart excluded. Both results are checked equal
before timing. Median of ``--repeats`` after one warm-up.
"""
from __future__ import annotations

import argparse
import os
import sys
from functools import partial

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, machine, median_time  # noqa: E402

from ricea_pyg.loss import dual_amn_loss  # noqa: E402


def autograd_direction(query, pos, table, exclude, gamma=30.0, bias=10.0,
                       margin=1.0):
    """One direction by autograd, as the library computed it before."""
    dist = (query.pow(2).sum(-1, keepdim=True) + table.pow(2).sum(-1)
            - 2 * query @ table.t())
    valid = torch.ones_like(dist, dtype=torch.bool)
    rows = torch.arange(dist.size(0))
    valid[rows.view(-1, 1), exclude.view(dist.size(0), -1)] = False
    d = pos.view(-1, 1) - dist + margin
    with torch.no_grad():
        count = valid.sum(1, keepdim=True)
        mean = d.masked_fill(~valid, 0).sum(1, keepdim=True) / count
        std = ((d - mean).masked_fill(~valid, 0).pow(2).sum(
            1, keepdim=True) / count).sqrt().clamp_min(
                torch.finfo(d.dtype).eps ** 0.5)
    logits = (30.0 * (d - mean) / std + bias).masked_fill(~valid,
                                                          float('-inf'))
    return logits.logsumexp(1)


def autograd_loss(h, batch):
    pairs = batch.t()
    s, t = h[batch[0]], h[batch[1]]
    pos = (s - t).pow(2).sum(-1)
    return (autograd_direction(s, pos, h, pairs)
            + autograd_direction(t, pos, h, pairs)).mean()


def library_loss(h, batch):
    pairs = batch.t()
    return dual_amn_loss(h[batch[0]], h[batch[1]], h, h, source_index=pairs,
                         target_index=pairs)


def fwd_bwd(loss_fn, weights, batch):
    weights.grad = None
    loss = loss_fn(F.normalize(weights, dim=1), batch)
    loss.backward()
    return loss.detach(), weights.grad.clone()


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--batch', type=int, default=1024)
    p.add_argument('--entities', type=int, default=39054)
    p.add_argument('--dims', type=int, nargs='+', default=[768, 1536])
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--json', action='store_true')
    args = p.parse_args()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for dim in args.dims:
        weights = torch.randn(args.entities, dim, generator=gen,
                              requires_grad=True)
        half = args.entities // 2
        batch = torch.stack([
            torch.randperm(half, generator=gen)[:args.batch],
            half + torch.randperm(args.entities - half,
                                  generator=gen)[:args.batch]])
        results = {}
        for name, loss_fn in (('autograd', autograd_loss),
                              ('library', library_loss)):
            step = partial(fwd_bwd, loss_fn, weights, batch)
            results[name] = step()
            rows.append(dict(dim=dim, path=name, seconds=median_time(
                step, torch.device('cpu'), warmup=0, repeats=args.repeats)))
        (la, ga), (lb, gb) = results['autograd'], results['library']
        # float32 sums in different orders: compare against the gradient's
        # scale.
        if not (torch.allclose(la, lb, rtol=1e-4) and
                (ga - gb).abs().max() <= 1e-3 * ga.abs().max()):
            raise SystemExit(f'paths differ at d={dim}: loss {la} vs {lb}, '
                             f'grad {(ga - gb).abs().max()}')
        rows[-1]['speed-up'] = rows[-2]['seconds'] / rows[-1]['seconds']
    if not args.json:
        print(machine())
        print(f'B = {args.batch}, N = {args.entities}, fwd+bwd, median of '
              f'{args.repeats}')
    emit(rows, args.json, ['dim', 'path', 'seconds', 'speed-up'])


if __name__ == '__main__':
    main()
