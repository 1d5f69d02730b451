"""Each hop of the propagated name features as its own token: a probe.

    python benchmarks/hop_tokens.py --fusion concat --treatment noise
    python benchmarks/hop_tokens.py --fusion adc --treatment wrong

With the default inputs a corrupted name is a third of its entity's name
feature: SEU's propagation (``TrainConfig.propagate``) appends the
neighbours' names at hops 1 and 2 to the entity's own, and one encoder
reads the three blocks together. Here each block is a modality of its own
(``name``, ``name_h1``, ``name_h2``, the same for ``char``), so that the
fusion sees the entity's own name as one token: a *noise* name is then a
token of pure noise, the easiest case for a per-entity confidence to
flag. The cell is one of ``docs/robustness.md`` (DBP15K zh_en, split seed
0, ``CorruptModalities`` at keep ratio ``--keep``, default
``TrainConfig`` with the run's fusion, 10 epochs, seed 0); the names'
weight chosen on validation weighs all six name tokens. It prints and
appends to ``benchmarks/results/hop_tokens.jsonl`` test Hits@1 (CSLS),
the one-to-one Hits@1, and the AUROC of ``u`` and ``1 - w`` of the
entity's own ``name`` token for corrupted names. ``docs/fusion.md``
reads it.

It rewires :func:`ricea_pyg.train.trainer.model_inputs` and the trainer's
name modalities in this process only; the library has no such option.
"""
import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import robustness  # noqa: E402
from common import machine  # noqa: E402

from ricea_pyg.data import CorruptModalities  # noqa: E402
from ricea_pyg.train import TrainConfig, Trainer  # noqa: E402
from ricea_pyg.train import trainer as trainer_module  # noqa: E402

RESULTS = os.path.join(HERE, 'results', 'hop_tokens.jsonl')
SPLIT = ('name', 'char')


def hop_token_inputs(model_inputs, hops: int):
    """:obj:`model_inputs` with each propagated block of the modalities of
    ``SPLIT`` that the config propagates as its own modality; a block is
    present where the entity's (propagated) modality is, imputed rows
    included, and the block is not zero."""
    def build(data, config, seed_pairs=None):
        inputs = model_inputs(data, config, seed_pairs)
        propagated = trainer_module.resolve_config(inputs, config).propagate
        mods, feats, mask = [], {}, []
        for i, m in enumerate(inputs.modalities):
            x = inputs.features.get(m)
            if m not in SPLIT or m not in propagated:
                mods.append(m)
                if x is not None:
                    feats[m] = x
                mask.append(inputs.mask[:, i])
                continue
            if x.size(1) % (hops + 1):
                raise ValueError(f'{m} is {x.size(1)} wide, not {hops + 1} '
                                 'blocks: is it propagated?')
            for k, block in enumerate(x.chunk(hops + 1, dim=1)):
                key = m if k == 0 else f'{m}_h{k}'
                mods.append(key)
                feats[key] = block.contiguous()
                mask.append(inputs.mask[:, i] & block.ne(0).any(dim=1))
        inputs.modalities, inputs.features = mods, feats
        inputs.mask = torch.stack(mask, dim=1)
        return inputs
    return build


def use_hop_tokens(hops: int) -> None:
    """Rewires this process's trainer to hop tokens: its inputs (see
    :func:`hop_token_inputs`) and its name modalities, so that the names'
    weight covers every name token."""
    trainer_module.model_inputs = hop_token_inputs(
        trainer_module.model_inputs, hops)
    trainer_module.NAME_MODALITIES = tuple(
        m if k == 0 else f'{m}_h{k}' for m in SPLIT for k in range(hops + 1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=os.path.join(
        os.environ.get('RICEA_DATA_ROOT', '../shared/data'), 'dbp15k'))
    p.add_argument('--fusion', default='adc',
                   help='a fusion name, or name:JSON kwargs')
    # Not 'missing': a masked name has no own token, so there would be no
    # corrupted token to score.
    p.add_argument('--treatment', default='noise',
                   choices=('clean', 'noise', 'wrong'))
    p.add_argument('--keep', type=float, default=0.6)
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--results', default=RESULTS)
    args = p.parse_args()

    name, kwargs = robustness.parse_fusion(args.fusion)
    settings, kwargs = robustness.split_variant(kwargs)
    config = TrainConfig(**settings, fusion=name, fusion_kwargs=kwargs,
                         epochs=args.epochs, seed=args.seed,
                         modalities=robustness.NAMES, progress=False)
    use_hop_tokens(config.propagation_hops)
    base = robustness.load(args.root, 'zh_en')
    data = base if args.treatment == 'clean' else CorruptModalities(
        list(robustness.CORRUPTED), args.keep, args.treatment,
        seed=args.seed)(base)
    start = time.perf_counter()
    trainer = Trainer(data, config, log=lambda s: None)
    metrics = trainer.fit()
    aurocs = (None if args.treatment == 'clean' else
              robustness.uncertainty_aurocs(trainer, data))
    row = {'pair': 'zh_en', 'treatment': args.treatment,
           'keep': None if args.treatment == 'clean' else args.keep,
           'fusion': args.fusion, 'epochs': args.epochs, 'seed': args.seed,
           'modalities': trainer.model.modalities,
           'test': {k: metrics['test'].get(k) for k in
                    ('hits@1', 'one_to_one_hits@1', 'hits@10', 'mrr')},
           'val_name_weight': metrics['val'].get('name_weight'),
           'auroc': aurocs, 'wall_s': time.perf_counter() - start,
           'machine': machine(), 'date': time.strftime('%Y-%m-%d'),
           'command': 'python benchmarks/hop_tokens.py ' + ' '.join(
               sys.argv[1:])}
    print(json.dumps(row))
    with open(args.results, 'a') as f:
        f.write(json.dumps(row) + '\n')


if __name__ == '__main__':
    main()
