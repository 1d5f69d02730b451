"""Peak memory and time of building the seed labels (``SeedLabelPropagation``,
``TrainConfig.label_channels``) on a DBP15K pair with names.

    python benchmarks/seed_labels.py [--pair zh_en] \
        [--builds float16:2048 float16:512 float32-cast:2048]

Each build runs in a fresh process, after the model's other inputs
(``model_inputs`` with ``label_channels=0``: propagated names and bigrams,
relation bags) exist; ``peak_gib`` is the peak resident set size above that
point, sampled every 2 ms (``common.PeakMemory``), and ``output_gib`` the
size of the labels themselves. A build is ``DTYPE:COLUMNS``: ``float16``
builds the labels in place in the type the trainer stores them in
(``seed_labels``); ``float32-cast`` builds float32 and casts, as the trainer
did before 2026-12-07; ``COLUMNS`` is ``_BLOCK_COLUMNS``, the width of the
block of heads propagated at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PeakMemory, emit, machine  # noqa: E402

MODALITIES = ['graph', 'rel', 'name', 'char']


def one(args, build):
    from ricea_pyg.data.schema import ALIGN
    from ricea_pyg.datasets import DBP15K
    from ricea_pyg.nn import propagation
    from ricea_pyg.nn.propagation import SeedLabelPropagation
    from ricea_pyg.train import TrainConfig
    from ricea_pyg.train.trainer import (
        PROPAGATED_DTYPE,
        _propagation_graph,
        model_inputs,
    )
    dtype, columns = build.split(':')
    if dtype not in ('float16', 'float32-cast'):
        raise SystemExit(f'--builds: unknown type {dtype!r}; use float16 '
                         'or float32-cast')
    propagation._BLOCK_COLUMNS = int(columns)
    data = DBP15K(args.root, args.pair, modalities=MODALITIES, seed=0,
                  log=False)[0]
    config = TrainConfig(modalities=MODALITIES, label_channels=0,
                         progress=False)
    inputs = model_inputs(data, config)
    seeds = inputs.rows(data[ALIGN].train_index)
    graph = _propagation_graph(inputs)
    del data
    layer = SeedLabelPropagation(args.channels, config.propagation_hops)
    gen = torch.Generator().manual_seed(0)
    with PeakMemory(torch.device('cpu')) as mem:
        start = time.perf_counter()
        if dtype == 'float16':
            labels = layer(seeds, graph, gen, dtype=PROPAGATED_DTYPE)
        else:
            labels = layer(seeds, graph, gen).to(PROPAGATED_DTYPE)
        seconds = time.perf_counter() - start
    return dict(pair=args.pair, build=build, entities=labels.size(0),
                width=labels.size(1),
                output_gib=labels.numel() * labels.element_size() / 2**30,
                peak_gib=mem.peak / 2**30, seconds=seconds,
                machine=machine())


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=os.path.join(
        os.environ.get('RICEA_DATA_ROOT', '../shared/data'), 'dbp15k'))
    p.add_argument('--pair', default='zh_en')
    p.add_argument('--channels', type=int, default=1024)
    p.add_argument('--builds', nargs='+',
                   default=['float32-cast:2048', 'float16:2048',
                            'float16:512'])
    p.add_argument('--json', action='store_true')
    p.add_argument('--one', help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.one:
        print(json.dumps(one(args, args.one)))
        return
    rows = []
    for build in args.builds:
        run = subprocess.run(
            [sys.executable, __file__, '--root', args.root, '--pair',
             args.pair, '--channels', str(args.channels), '--one', build],
            capture_output=True, text=True)
        if run.returncode != 0:  # the child's own message, e.g. a bad build
            raise SystemExit(f'build {build!r} failed:\n{run.stderr}')
        rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
    emit(rows, args.json, ['pair', 'build', 'entities', 'width',
                           'output_gib', 'peak_gib', 'seconds'])


if __name__ == '__main__':
    main()
