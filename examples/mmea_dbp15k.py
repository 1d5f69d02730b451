"""RICEA on DBP15K: load, train, select on validation, test once.

    python examples/mmea_dbp15k.py                      # zh_en, with names
    python examples/mmea_dbp15k.py --pair ja_en --no-names   # ~15 min
    python examples/mmea_dbp15k.py --fusion adc --out runs/adc   # RICEA

Data come from ``$RICEA_DATA_ROOT/dbp15k`` (default ``../shared/data``), or
are downloaded there when missing. Prints the names-only baseline (MiniLM
name embeddings, cosine with CSLS), then validation and test Hits@1/10, MRR
and the wall time; ``--out DIR`` writes ``DIR/metrics.json``.
"""
import argparse
import os
import time

import torch

from ricea_pyg.data import ALIGN
from ricea_pyg.datasets import DBP15K
from ricea_pyg.metrics import evaluate_embeddings
from ricea_pyg.train import TrainConfig, Trainer

parser = argparse.ArgumentParser()
parser.add_argument('--pair', default='zh_en')
parser.add_argument('--root', default=os.path.join(
    os.environ.get('RICEA_DATA_ROOT', '../shared/data'), 'dbp15k'))
parser.add_argument('--no-names', action='store_true',
                    help="graph + relation types only, trained with "
                    "TrainConfig.recipe('structure-only'), the best measured "
                    "without names (docs/pipeline.md)")
parser.add_argument('--iterative', action='store_true')
parser.add_argument('--fusion', default='concat',
                    help='concat (the best measured, docs/results.md), adc '
                    '(RICEA), meaformer, global (EVA)')
parser.add_argument('--epochs', type=int, default=None,
                    help='default: 15 with names, the recipe\'s 10 without')
parser.add_argument('--seed', type=int, default=0)
parser.add_argument('--out', default=None, help='folder for metrics.json')
args = parser.parse_args()

start = time.perf_counter()
torch.set_num_threads(os.cpu_count() or 1)
names = None if args.no_names else 'translated'
modalities = ['graph', 'rel'] if args.no_names else ['graph', 'rel', 'name',
                                                     'char']
dataset = DBP15K(args.root, args.pair, modalities=modalities, names=names,
                 seed=args.seed)
data = dataset[0]
split = data[ALIGN]
print(f'{args.pair}: {data["source"].num_nodes} + {data["target"].num_nodes}'
      f' entities, train/val/test pairs {split.train_index.size(1)}/'
      f'{split.val_index.size(1)}/{split.test_index.size(1)}, modalities '
      f'{modalities}')

if not args.no_names:  # the baseline the model has to beat
    test = split.test_index
    base = evaluate_embeddings(data['source'].x_name, data['target'].x_name,
                               test, csls_k=3)
    print(f"names only (MiniLM, CSLS): test hits@1 {base['hits@1']:.4f} "
          f"hits@10 {base['hits@10']:.4f} mrr {base['mrr']:.4f}")

settings = dict(fusion=args.fusion, seed=args.seed, iterative=args.iterative)
if args.epochs is not None:
    settings['epochs'] = args.epochs
if args.no_names:
    config = TrainConfig.recipe('structure-only', **settings)
else:
    config = TrainConfig(**{'epochs': 15, **settings})
trainer = Trainer(data, config, out_dir=args.out)
del dataset, data, split  # the trainer keeps its own copy of the features
metrics = trainer.fit()
wall = time.perf_counter() - start
trainer.write_metrics(metrics, wall)

for split_name in ('val', 'test'):
    m = metrics[split_name]
    print(f"{split_name:5s} hits@1 {m['hits@1']:.4f} hits@10 "
          f"{m['hits@10']:.4f} mrr {m['mrr']:.4f} mr {m['mr']:.1f} (CSLS)")
print(f"test  one-to-one hits@1 {metrics['test']['one_to_one_hits@1']:.4f}")
if metrics['label_rounds']:  # the structure-only recipe bootstraps its labels
    r = metrics['label_round']
    print(f"label round {r} of {len(metrics['label_rounds'])} selected on "
          'validation' + (f" ({metrics['label_rounds'][r - 1]['added']} "
                          'pseudo-pairs in the seed labels)' if r else ''))
print(f"epoch {metrics['epoch_time_s']:.2f}s (median), best epoch "
      f"{metrics['best_epoch']}, wall time {wall:.0f}s")
