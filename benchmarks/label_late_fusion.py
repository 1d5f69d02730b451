"""Probe: does the trained structure-only model lose what the seed labels
know? Trains the default structure-only model (graph + relation types +
the `labels` modality, `concat`, 20 epochs, split seed 0), then scores the
test pairs with [sqrt(1 - g) f ; sqrt(g) l]: the model's fused embedding f
and the raw seed-label features l, both unit rows, for g in --gammas.
g = 0 is the model as trained, g = 1 the labels alone (training-free).
Validation is printed beside test so that g can be read off validation.

    python benchmarks/label_late_fusion.py --pair zh_en
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

from ricea_pyg.data import ALIGN
from ricea_pyg.datasets import DBP15K
from ricea_pyg.metrics import evaluate_embeddings
from ricea_pyg.train import TrainConfig, Trainer
from ricea_pyg.train.config import LABELS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=os.path.join(os.environ.get(
        'RICEA_DATA_ROOT', '../shared/data'), 'dbp15k'))
    p.add_argument('--pair', default='zh_en')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--gammas', type=float, nargs='+',
                   default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument('--results', default=None, help='JSON lines file')
    args = p.parse_args()
    start = time.perf_counter()
    data = DBP15K(args.root, args.pair, modalities=['graph', 'rel'],
                  names=None, seed=0, log=False)[0]
    split = data[ALIGN]
    trainer = Trainer(data, TrainConfig(fusion='concat', seed=args.seed,
                                        epochs=args.epochs, eval_every=5,
                                        progress=False), log=lambda s: None)
    trainer.fit()
    src, tgt, _ = trainer.embeddings()
    n_s = trainer.inputs.num_source
    fused = F.normalize(torch.cat([src, tgt]), dim=1)
    labels = F.normalize(trainer.inputs.features[LABELS].float(), dim=1)
    rows = []
    for g in args.gammas:
        e = torch.cat([fused * (1 - g) ** 0.5, labels * g ** 0.5], dim=1)
        val = evaluate_embeddings(e[:n_s], e[n_s:], split.val_index,
                                  csls_k=3, progress=False)
        test = evaluate_embeddings(e[:n_s], e[n_s:], split.test_index,
                                   csls_k=3, one_to_one=True, progress=False)
        row = {'pair': args.pair, 'seed': args.seed, 'gamma': g,
               'epochs': args.epochs, 'val_hits1': val['hits@1'],
               'test_hits1': test['hits@1'],
               'test_one_to_one_hits1': test['one_to_one_hits@1']}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.results:
        with open(args.results, 'a') as f:
            for row in rows:
                f.write(json.dumps(row) + '\n')
    print(f'wall {time.perf_counter() - start:.0f}s')


if __name__ == '__main__':
    main()
