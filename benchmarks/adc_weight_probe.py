"""Why ADC's per-entity weights cost accuracy: train once, then re-score
the same model's modality embeddings under other weightings.

    python benchmarks/adc_weight_probe.py --pair zh_en --setting "no names"

Prints, for the model selected on validation: mean and std of the weights,
confidence c, holo confidence h, RC and DU on the train and test entities;
each modality's own test Hits@1; and test/val Hits@1 (CSLS) of the fused
embedding under the model's weights, uniform weights, flatter temperatures,
no RC, c only and h only. Only the weighting changes between those rows;
the embeddings are the same.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from alignment_accuracy import load, parse_fusion  # noqa: E402

from ricea_pyg.metrics import evaluate_embeddings  # noqa
from ricea_pyg.nn.fusion import functional as RF  # noqa: E402
from ricea_pyg.train import TrainConfig, Trainer  # noqa


def rounded(t, n=3):
    return [round(v, n) for v in t.tolist()]


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=os.path.join(os.environ.get(
        'RICEA_DATA_ROOT', '../shared/data'), 'dbp15k'))
    p.add_argument('--pair', default='zh_en')
    p.add_argument('--setting', default='no names',
                   choices=['names', 'no names'])
    p.add_argument('--fusion', default='adc')
    p.add_argument('--epochs', type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    data = load(args.root, args.pair, args.setting == 'names')
    name, kwargs = parse_fusion(args.fusion)
    if name != 'adc':
        raise SystemExit('--fusion must be adc or an adc:{...} variant')
    trainer = Trainer(data, TrainConfig(fusion=name, fusion_kwargs=kwargs,
                                        seed=0, epochs=args.epochs,
                                        progress=False), log=lambda s: None)
    metrics = trainer.fit()
    print('selected model, test:', json.dumps(
        {k: round(v, 4) for k, v in metrics['test'].items()
         if not k.startswith('r2l')}))
    model = trainer.model.eval()
    mods = trainer.inputs.modalities
    n_s = trainer.inputs.num_source
    with torch.no_grad():
        out = model.embed(trainer.inputs)
        x, mask = out.x, out.mask
        inter = model.fusion.interaction(x, mask)
        adc = model.fusion.calibrate(inter)
        rows = {'train': trainer.inputs.rows(trainer.train_pairs).reshape(-1),
                'test': trainer.inputs.rows(trainer.test_pairs).reshape(-1)}
        print(f'modalities {mods}')
        for split, r in rows.items():
            print(f'{split:5s} w mean {rounded(adc.weights[r].mean(0))} std '
                  f'{rounded(adc.weights[r].std(0))} | c '
                  f'{rounded(inter.confidence[r].mean(0))} | h '
                  f'{rounded(inter.holo[r].mean(0))} | RC '
                  f'{rounded(adc.extras["rc"][r].mean(0))} | DU '
                  f'{rounded(adc.extras["du"][r].mean(0), 4)}')
        for i, m in enumerate(mods):
            e = F.normalize(x[:, i], dim=-1)
            h1 = evaluate_embeddings(e[:n_s], e[n_s:], trainer.test_pairs,
                                     csls_k=3)['hits@1']
            print(f'{m} alone: test hits@1 {h1:.4f}')
        weightings = {'model (ADC)': adc.weights,
                      'uniform': mask.float() / mask.sum(1, keepdim=True)}
        trained_t = model.fusion.temperature
        for t in (2.0, 4.0):  # the ADC step itself, only T changed
            model.fusion.temperature = t
            weightings[f'T = {t:g}'] = model.fusion.calibrate(inter).weights
        model.fusion.temperature = trained_t
        weightings.update({
            'no RC': RF.masked_softmax(inter.belief, mask),
            'c only': RF.masked_softmax(inter.confidence, mask),
            'h only': RF.masked_softmax(inter.holo, mask),
        })
        print('| weights at test time | test Hits@1 | val Hits@1 |')
        print('|---|---|---|')
        for label, w in weightings.items():
            f = F.normalize(RF.weighted_fusion(x, w, 'concat'), dim=-1)
            te = evaluate_embeddings(f[:n_s], f[n_s:], trainer.test_pairs,
                                     csls_k=3)['hits@1']
            va = evaluate_embeddings(f[:n_s], f[n_s:], trainer.val_pairs,
                                     csls_k=3)['hits@1']
            print(f'| {label} | {te:.4f} | {va:.4f} |')


if __name__ == '__main__':
    main()
