"""Structure-only alignment with the library's parts, Dual-AMN's recipe.

The entity table, `RelationAwareEncoder` (relation embeddings, relational
reflection, relation-conditioned attention, entity and relation views, all
layers concatenated) and `dual_amn_loss` (every entity of the other KG a
negative, or with --negatives both every entity of both KGs), RMSprop;
the model is selected on the validation pairs (CSLS MRR), the test pairs
are read once at the end. Optional bootstrapping:
rounds that add mutual nearest neighbours among unaligned entities
(`SelfTraining`), each followed by more epochs.

    python benchmarks/structure_only.py --pairs zh_en ja_en --seeds 0 1 2 \
        --epochs 20 --bootstrap-rounds 4 --bootstrap-epochs 5

Writes one JSON line per run to --results and prints a table.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine  # noqa: E402

from ricea_pyg.data import ALIGN, PairInputs  # noqa: E402
from ricea_pyg.datasets import DBP15K  # noqa: E402
from ricea_pyg.loss import dual_amn_loss  # noqa: E402
from ricea_pyg.metrics import evaluate_embeddings  # noqa: E402
from ricea_pyg.nn import (  # noqa: E402
    PropagationGraph,
    RelationalAdjacency,
    RelationAwareEncoder,
    SeedLabelPropagation,
)
from ricea_pyg.train import SelfTraining  # noqa: E402


class StructureModel(torch.nn.Module):
    def __init__(self, num_entities, num_relations, channels, layers,
                 dropout):
        super().__init__()
        self.entity = torch.nn.Embedding(num_entities, channels)
        self.encoder = RelationAwareEncoder(num_relations, channels, layers,
                                            dropout=dropout)
        torch.nn.init.xavier_uniform_(self.entity.weight)

    def forward(self, graph):
        return self.encoder(self.entity.weight, graph)


def load(pair: str, args, device, adjacency):
    """The pair's split, its inputs, and :obj:`adjacency` (a graph class)
    built over both KGs on :obj:`device`."""
    data = DBP15K(args.root, pair, modalities=['graph', 'rel'], names=None,
                  seed=0, log=False)[0]
    inputs = PairInputs.from_data(data, ['graph'])
    graph = adjacency(inputs.edge_index, inputs.edge_type,
                      inputs.num_entities, inputs.num_relations).to(device)
    return data[ALIGN], inputs, graph


def bootstrapping(args, split):
    """The rounds' pair finder, and the gold counterparts of the
    unaligned pairs (read only to count how many added pairs are right)."""
    boot = SelfTraining(every=1, add_every=1, min_rounds=1,
                        csls_k=args.csls_k, progress=False,
                        min_margin=args.bootstrap_min_margin)
    gold = dict(zip(*torch.cat([split.val_index, split.test_index],
                               1).tolist()))
    return boot, gold


def run(pair: str, seed: int, args, device) -> dict:
    split, inputs, graph = load(pair, args, device, RelationalAdjacency)
    n_s = inputs.num_source
    torch.manual_seed(seed)
    model = StructureModel(inputs.num_entities, inputs.num_relations,
                           args.channels, args.layers, args.dropout).to(device)
    opt = torch.optim.RMSprop(model.parameters(), lr=args.lr)
    train = split.train_index.clone()
    val = split.val_index.to(device)
    gen = torch.Generator().manual_seed(seed)
    best = {'mrr': -1.0}
    log = []
    start = time.perf_counter()

    @torch.no_grad()
    def embed():
        model.eval()
        g = model(graph)
        model.train()
        return g[:n_s], g[n_s:]

    def epochs(count, stage):
        nonlocal best
        for _ in range(count):
            t0 = time.perf_counter()
            perm = torch.randperm(train.size(1), generator=gen)
            for i in range(0, train.size(1), args.batch_size):
                b = train[:, perm[i:i + args.batch_size]].to(device)
                g = model(graph)
                if args.negatives == 'both':  # Dual-AMN: every entity
                    rows = torch.stack([b[0], b[1] + n_s], 1)
                    loss = dual_amn_loss(g[b[0]], g[b[1] + n_s], g, g,
                                         source_index=rows,
                                         target_index=rows)
                else:  # the other KG's entities only
                    loss = dual_amn_loss(g[b[0]], g[b[1] + n_s], g[:n_s],
                                         g[n_s:], source_index=b[0],
                                         target_index=b[1])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            row = {'epoch': len(log) + 1, 'stage': stage,
                   'loss': loss.item(), 'time_s': time.perf_counter() - t0}
            if row['epoch'] % args.eval_every == 0:
                src, tgt = embed()
                m = evaluate_embeddings(src, tgt, val, csls_k=args.csls_k)
                row.update(val_hits1=m['hits@1'], val_mrr=m['mrr'])
                if m['mrr'] > best['mrr']:
                    best = {'mrr': m['mrr'], 'val': m, 'epoch': row['epoch'],
                            'state': copy.deepcopy(model.state_dict())}
            log.append(row)
            print(f"{pair} seed {seed} {row}", flush=True)

    epochs(args.epochs, 1)
    one_pass = {'epoch': best['epoch'], 'val': best['val'],
                'state': best['state']}
    boot, gold = bootstrapping(args, split)
    added = []
    for r in range(args.bootstrap_rounds):
        src, tgt = embed()
        before = train.size(1)
        train, info = boot.step(src.cpu(), tgt.cpu(), train, r, gold=gold)
        added.append({k: info.get(k, 0) for k in ('added', 'added_correct')})
        print(f'{pair} seed {seed} bootstrap round {r + 1}: +'
              f'{train.size(1) - before} pairs', flush=True)
        epochs(args.bootstrap_epochs, 2)

    def test(state):
        model.load_state_dict(state)
        src, tgt = embed()
        m = evaluate_embeddings(src, tgt, split.test_index.to(device),
                                csls_k=args.csls_k, one_to_one=True)
        return {k: m[k] for k in ('hits@1', 'hits@10', 'mrr',
                                  'one_to_one_hits@1')}
    out = {'pair': pair, 'seed': seed, 'device': str(device),
           'machine': machine(), 'wall_s': time.perf_counter() - start,
           'epoch_time_s': sorted(r['time_s'] for r in log)[len(log) // 2],
           'one_pass': {'best_epoch': one_pass['epoch'],
                        'val_hits1': one_pass['val']['hits@1'],
                        'test': test(one_pass['state'])},
           'config': {k: v for k, v in vars(args).items()
                      if k not in ('pairs', 'seeds', 'results', 'root')}}
    if args.bootstrap_rounds:
        out['bootstrap'] = {'best_epoch': best['epoch'],
                            'val_hits1': best['val']['hits@1'],
                            'added': added, 'test': test(best['state'])}
    if args.label_weights:  # the trained embedding beside the seed labels
        labels_graph = PropagationGraph(inputs.edge_index, inputs.edge_type,
                                        inputs.num_entities,
                                        inputs.num_relations).to(device)
        out['one_pass']['with_labels'] = with_labels(
            model, one_pass['state'], embed, split.train_index, inputs,
            labels_graph, split, seed, args, device)
        if args.bootstrap_rounds:
            out['bootstrap']['with_labels'] = with_labels(
                model, best['state'], embed, train, inputs, labels_graph,
                split, seed, args, device)
    return out


def with_labels(model, state, embed, pairs, inputs, graph, split, seed,
                args, device) -> dict:
    """The model's embedding h and the training-free seed labels l of
    :obj:`pairs`, scored side by side as [sqrt(1 - g) h ; sqrt(g) l]; g from
    --label-weights, chosen on validation MRR; the test read once."""
    model.load_state_dict(state)
    h = F.normalize(torch.cat(embed()), dim=1)
    labels = SeedLabelPropagation(args.label_channels, args.layers,
                                  heads=args.label_heads)(
        inputs.rows(pairs), graph, torch.Generator().manual_seed(seed))
    n_s = inputs.num_source

    def side_by_side(g):
        e = torch.cat([h * (1 - g) ** 0.5, labels * g ** 0.5], dim=1)
        return e[:n_s], e[n_s:]

    val = {g: evaluate_embeddings(*side_by_side(g), split.val_index.to(
        device), csls_k=args.csls_k) for g in args.label_weights}
    g = max(val, key=lambda k: val[k]['mrr'])
    m = evaluate_embeddings(*side_by_side(g), split.test_index.to(device),
                            csls_k=args.csls_k, one_to_one=True)
    return {'label_weight': g, 'val_hits1': {str(k): v['hits@1']
                                             for k, v in val.items()},
            'test': {k: m[k] for k in ('hits@1', 'hits@10', 'mrr',
                                       'one_to_one_hits@1')}}


def run_labels(pair: str, seed: int, args, device) -> dict:
    """No training: `SeedLabelPropagation` of the training pairs (LightEA's
    three-view label propagation). Bootstrapping adds mutual
    nearest neighbours as seeds and propagates again."""
    split, inputs, graph = load(pair, args, device, PropagationGraph)
    n_s = inputs.num_source
    propagate = SeedLabelPropagation(args.label_channels, args.layers,
                                     heads=args.label_heads)
    train = split.train_index.clone()
    start = time.perf_counter()

    def embed():
        x = propagate(inputs.rows(train), graph,
                      torch.Generator().manual_seed(seed))
        return x[:n_s], x[n_s:]

    def scores(src, tgt):
        val = evaluate_embeddings(src, tgt, split.val_index.to(device),
                                  csls_k=args.csls_k)
        m = evaluate_embeddings(src, tgt, split.test_index.to(device),
                                csls_k=args.csls_k, one_to_one=True)
        return val['hits@1'], {k: m[k] for k in ('hits@1', 'hits@10', 'mrr',
                                                 'one_to_one_hits@1')}

    t0 = time.perf_counter()
    src, tgt = embed()
    embed_s = time.perf_counter() - t0
    val1, test1 = scores(src, tgt)
    out = {'pair': pair, 'seed': seed, 'device': str(device),
           'machine': machine(), 'encoder': 'labels', 'embed_s': embed_s,
           'one_pass': {'val_hits1': val1, 'test': test1},
           'config': {k: v for k, v in vars(args).items()
                      if k not in ('pairs', 'seeds', 'results', 'root')}}
    if args.bootstrap_rounds:
        boot, gold = bootstrapping(args, split)
        added = []
        for r in range(args.bootstrap_rounds):
            train, info = boot.step(src.cpu(), tgt.cpu(), train, r,
                                    gold=gold)
            added.append({k: info.get(k, 0) for k in ('added',
                                                      'added_correct')})
            src, tgt = embed()
        val_b, test_b = scores(src, tgt)
        out['bootstrap'] = {'val_hits1': val_b, 'added': added,
                            'test': test_b}
    out['wall_s'] = time.perf_counter() - start
    print(f'{pair} seed {seed} {out}', flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=os.path.join(os.environ.get(
        'RICEA_DATA_ROOT', '../shared/data'), 'dbp15k'))
    p.add_argument('--pairs', nargs='+', default=['zh_en'])
    p.add_argument('--seeds', nargs='+', type=int, default=[0])
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--bootstrap-rounds', type=int, default=0)
    p.add_argument('--bootstrap-epochs', type=int, default=5)
    p.add_argument('--bootstrap-min-margin', type=float, default=0.0,
                   help='add a mutual pair only if its score beats the '
                   "source's second best by this much")
    p.add_argument('--channels', type=int, default=128)
    p.add_argument('--layers', type=int, default=2)
    p.add_argument('--dropout', type=float, default=0.3)
    p.add_argument('--lr', type=float, default=0.005)
    p.add_argument('--batch-size', type=int, default=1024)
    p.add_argument('--eval-every', type=int, default=5)
    p.add_argument('--csls-k', type=int, default=10)
    p.add_argument('--negatives', choices=['other', 'both'],
                   default='both', help="negatives from the other KG or "
                   "from both (Dual-AMN's choice)")
    p.add_argument('--encoder', choices=['dual-amn', 'labels'],
                   default='dual-amn', help="'labels': no training, "
                   'SeedLabelPropagation (--layers hops, --label-channels '
                   'wide), reseeded after each bootstrap round')
    p.add_argument('--label-channels', type=int, default=1024)
    p.add_argument('--label-heads', type=int, default=512,
                   help="the third view's heads (rows without this key "
                   'predate the third view)')
    p.add_argument('--label-weights', type=float, nargs='*', default=[],
                   help='dual-amn: also score the trained embedding beside '
                   'the seed labels with these weights g of the labels, g '
                   'chosen on validation')
    p.add_argument('--results', default=None, help='JSON lines file')
    args = p.parse_args()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    rows = []
    for pair in args.pairs:
        for seed in args.seeds:
            row = (run_labels if args.encoder == 'labels' else run)(
                pair, seed, args, device)
            rows.append(row)
            if args.results:
                with open(args.results, 'a') as f:
                    f.write(json.dumps(row) + '\n')
    print('\npair   seed  one pass H@1 (CSLS / 1-to-1)  bootstrap H@1 '
          '(CSLS / 1-to-1)  wall')
    for r in rows:
        o = r['one_pass']['test']
        b = r.get('bootstrap', {}).get('test', {})
        print(f"{r['pair']:6s} {r['seed']:4d}  {o['hits@1']:.4f} / "
              f"{o['one_to_one_hits@1']:.4f}              "
              f"{b.get('hits@1', float('nan')):.4f} / "
              f"{b.get('one_to_one_hits@1', float('nan')):.4f}        "
              f"{r['wall_s']:.0f}s")


if __name__ == '__main__':
    main()
