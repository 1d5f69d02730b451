"""How much could per-entity modality weights gain? An oracle probe.

    python benchmarks/weighting_headroom.py --treatment wrong --fusion concat

Trains one fusion on DBP15K zh_en with names after ``CorruptModalities``
has treated the name and char modalities of a share ``1 - keep`` of the
entities (the cell of ``benchmarks/robustness.py``: default ``TrainConfig``,
a fixed number of epochs, selection on validation), then scores the *same*
per-modality test embeddings three ways, with the pair-mean score
``sum_m (w_m(s) + w_m(t)) / 2 cos_m(s, t)`` (no weight-profile term):

* ``uniform``: every present modality 1/K (``concat``'s score);
* ``model``: the fusion's own per-entity weights (fusions that have them);
* ``oracle``: uniform over the present modalities that are *not*
  corrupted, i.e. weights that know exactly which names are wrong.

The gap between ``oracle`` and ``uniform`` bounds what any per-entity
weighting of these embeddings can gain at scoring time. Writes one JSON line
to --results.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from alignment_accuracy import parse_fusion  # noqa: E402
from common import machine  # noqa: E402

from ricea_pyg.data import CorruptModalities, corrupted_flags  # noqa: E402
from ricea_pyg.datasets import DBP15K  # noqa: E402
from ricea_pyg.metrics import evaluate_embeddings  # noqa: E402
from ricea_pyg.nn.fusion import pair_mean_query_key  # noqa: E402
from ricea_pyg.search import QueryKey  # noqa: E402
from ricea_pyg.train import TrainConfig, Trainer  # noqa: E402

CORRUPTED = ('name', 'char')


def rescore(x, mask, weights, ns, pairs, csls_k):
    """Test metrics of the pair-mean score with these ``[N, M]`` weights
    (renormalised over the present modalities)."""
    w = weights * mask
    w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
    q, k = pair_mean_query_key(x, w, mask)
    m = evaluate_embeddings(QueryKey(q[:ns], k[:ns]), QueryKey(q[ns:], k[ns:]),
                            pairs, csls_k=csls_k, one_to_one=True,
                            progress=False)
    return {'hits@1': m['hits@1'], 'one_to_one_hits@1':
            m['one_to_one_hits@1'], 'mrr': m['mrr']}


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=os.path.join(
        os.environ.get('RICEA_DATA_ROOT', '../shared/data'), 'dbp15k'))
    p.add_argument('--pair', default='zh_en')
    p.add_argument('--treatment', default='wrong',
                   choices=('missing', 'noise', 'wrong'))
    p.add_argument('--keep', type=float, default=0.6)
    p.add_argument('--fusion', default='concat',
                   help='a fusion name, or name:JSON arguments, e.g. '
                   '\'adc:{"temperature": 1.0, "transformer_input_grad": '
                   'true}\' (the method)')
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--results', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), 'results',
        'weighting_headroom.jsonl'))
    args = p.parse_args()

    data = DBP15K(args.root, args.pair, modalities=['graph', 'rel', *CORRUPTED],
                  seed=0, log=False)[0]
    data = CorruptModalities(list(CORRUPTED), args.keep, args.treatment,
                             seed=args.seed)(data)
    start = time.perf_counter()
    name, kwargs = parse_fusion(args.fusion)
    trainer = Trainer(data, TrainConfig(fusion=name, fusion_kwargs=kwargs,
                                        epochs=args.epochs, seed=args.seed,
                                        progress=False),
                      log=lambda s: None)
    trained = trainer.fit()['test']
    with torch.no_grad():
        out = trainer.model.embed(trainer.inputs)
        inputs, mods = trainer.inputs, trainer.model.modalities
        x = F.normalize(out.x.float(), dim=-1)
        mask = out.mask.bool()  # the model's (fused) columns
        corrupted = torch.zeros_like(mask)
        for m in CORRUPTED:
            corrupted[:, mods.index(m)] = corrupted_flags(data, m)
        ns, pairs = inputs.num_source, trainer.test_pairs
        rows = {'uniform': rescore(x, mask, mask.float(), ns, pairs,
                                   trainer.config.csls_k),
                'oracle': rescore(x, mask, (mask & ~corrupted).float(), ns,
                                  pairs, trainer.config.csls_k)}
        if out.weights is not None and name not in ('concat', 'global'):
            rows['model'] = rescore(x, mask, out.weights.float(), ns, pairs,
                                    trainer.config.csls_k)
    result = {'pair': args.pair, 'treatment': args.treatment,
              'keep': args.keep, 'fusion': args.fusion,
              'epochs': args.epochs, 'seed': args.seed,
              'trained_test': {k: trained[k] for k in ('hits@1', 'mrr')},
              'rescored_test': rows,
              # share of the masked (corrupted) rows filled from neighbours
              'imputed': float((mask & corrupted).sum() / corrupted.sum())
              if args.treatment == 'missing' else None,
              'wall_s': time.perf_counter() - start, 'machine': machine(),
              'date': time.strftime('%Y-%m-%d'),
              'command': 'python benchmarks/weighting_headroom.py ' +
              ' '.join(sys.argv[1:])}
    for name, m in rows.items():
        print(f'{name:8s} Hits@1 {m["hits@1"]:.4f}  one-to-one '
              f'{m["one_to_one_hits@1"]:.4f}  MRR {m["mrr"]:.4f}')
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, 'a') as f:
        f.write(json.dumps(result) + '\n')


if __name__ == '__main__':
    main()
