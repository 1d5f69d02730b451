"""Forward and forward+backward time and peak memory of every fusion.

    python benchmarks/fusion_layers.py                   # full grid
    python benchmarks/fusion_layers.py --sizes 40000 --modalities 6 --json

Each row: one fusion at one (N, M, d), eager or torch.compile, on CPU (and
CUDA when present). The backward pass is that of a random linear read-out of
the fused output, with gradients w.r.t. the inputs (as when the modality
embeddings come from encoders). ``adc+aux`` is ADCFusion as a drop-in
layer that trains: ``features='z'``, and the backward also runs through
``auxiliary_loss`` (TCP on the confidence, the uncertainty loss through the
attention) against random per-modality targets; ``adc+aux, g d/4`` is the
same with the confidence network's hidden sizes ``[d // 4]`` instead of the
method's ``[2d, d]`` (``confidence_hidden``), and ``adc+aux, g 1`` with
``[1]``, which all but removes it: the floor that the transformer alone
sets (its value and output projections back-propagate, which
MEAformerFusion's fused output never reaches); ``adc+aux, x`` keeps the
method's ``features='x'`` (what RICEA trains: the fused output is built
from the inputs with constant weights, and only the auxiliary losses reach
the confidence network and the attention). Ends with the ADCFusion /
MEAformerFusion ratios measured in this process.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PeakMemory, emit, machine, median_time  # noqa: E402

from ricea_pyg.loss import auxiliary_loss  # noqa: E402
from ricea_pyg.nn import FUSIONS  # noqa: E402

AUX = 'adc+aux'
AUX_NARROW = 'adc+aux, g d/4'
AUX_X = 'adc+aux, x'
AUX_FLOOR = 'adc+aux, g 1'
AUXES = (AUX, AUX_NARROW, AUX_X, AUX_FLOOR)


def bench(name, n, m, d, device, compiled, repeats):
    torch.manual_seed(0)
    kwargs = dict(num_modalities=m)
    if name in ('meaformer', 'adc') + AUXES:
        kwargs['channels'] = d
    if name == AUX_NARROW:
        kwargs['confidence_hidden'] = [d // 4]
    if name == AUX_FLOOR:
        kwargs['confidence_hidden'] = [1]
    if name in AUXES:
        fusion = FUSIONS['adc'](features='x' if name == AUX_X else 'z',
                                **kwargs).to(device)
    else:
        fusion = FUSIONS[name](**kwargs).to(device)
    x = torch.randn(n, m, d, device=device)
    mask = torch.rand(n, m, device=device) > 0.2
    mask[:, 0] = True
    readout = torch.randn(n, m * d, device=device)
    target = torch.rand(n, m, device=device)
    xg = x.clone().requires_grad_()
    if name in AUXES:
        full = torch.compile(fusion.forward_full) if compiled else \
            fusion.forward_full

        def f(inputs, mask):
            return full(inputs, mask).fused

        def loss(inputs):
            out = full(inputs, mask)
            return (out.fused * readout).sum() + auxiliary_loss(out, target)
    else:
        f = torch.compile(fusion) if compiled else fusion

        def loss(inputs):
            return (f(inputs, mask=mask) * readout).sum()

    def forward():
        with torch.no_grad():
            f(x, mask=mask)

    def forward_backward():
        xg.grad = None
        fusion.zero_grad(set_to_none=True)
        loss(xg).backward()

    t_fwd = median_time(forward, device, repeats=repeats)
    t_fb = median_time(forward_backward, device, repeats=repeats)
    with PeakMemory(device) as mem:
        forward_backward()
    return dict(fusion=name, N=n, M=m, d=d, device=device.type,
                mode='compile' if compiled else 'eager',
                fwd_s=t_fwd, fwd_bwd_s=t_fb, peak_mb=mem.peak / 2**20)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', type=int, nargs='+',
                   default=[10_000, 40_000, 200_000])
    p.add_argument('--modalities', type=int, nargs='+', default=[2, 4, 6])
    p.add_argument('--channels', type=int, default=300)
    p.add_argument('--fusions', nargs='+',
                   default=list(FUSIONS) + list(AUXES))
    p.add_argument('--no-compile', action='store_true')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--json', action='store_true')
    args = p.parse_args()
    devices = [torch.device('cpu')]
    if torch.cuda.is_available():
        devices.append(torch.device('cuda'))
    if not args.json:
        print(f'# {machine()}')
    rows = []
    for device in devices:
        for compiled in [False] + ([] if args.no_compile else [True]):
            for n in args.sizes:
                for m in args.modalities:
                    for name in args.fusions:
                        rows.append(bench(name, n, m, args.channels, device,
                                          compiled, args.repeats))
                        if not args.json:
                            emit(rows[-1:], False, list(rows[-1]))
    cols = ['fusion', 'N', 'M', 'd', 'device', 'mode', 'fwd_s', 'fwd_bwd_s',
            'peak_mb']
    ratios = []
    for r in rows:
        if r['fusion'] not in ('adc', ) + AUXES:
            continue
        ref = [q for q in rows if q['fusion'] == 'meaformer' and all(
            q[k] == r[k] for k in ('N', 'M', 'd', 'device', 'mode'))]
        if ref:
            ratios.append(dict(fusion=r['fusion'], N=r['N'], M=r['M'],
                               device=r['device'],
                               mode=r['mode'],
                               fwd_ratio=r['fwd_s'] / ref[0]['fwd_s'],
                               fwd_bwd_ratio=r['fwd_bwd_s'] /
                               ref[0]['fwd_bwd_s']))
    if args.json:
        emit(rows + [dict(ratio='adc/meaformer', **r) for r in ratios], True,
             cols)
    else:
        print('\nAll rows')
        emit(rows, False, cols)
        print('\nADCFusion / MEAformerFusion (same process)')
        emit(ratios, False, ['fusion', 'N', 'M', 'device', 'mode',
                             'fwd_ratio', 'fwd_bwd_ratio'])


if __name__ == '__main__':
    main()
