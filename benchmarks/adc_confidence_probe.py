"""Does ADC's confidence learn to flag corrupted names? A probe.

    python benchmarks/adc_confidence_probe.py [--treatment noise] [--keep 0.6]

Trains RICEA (the ADC fusion as the method specifies it: T = 1, the
gradient of L_out through the transformer to the encoders) on DBP15K
zh_en with names, after ``CorruptModalities`` has treated the name and char
modalities of a share ``1 - keep`` of the entities, and prints after each
epoch, for the
name modality: the mean confidence ``c``, weight ``w`` and uncertainty
``u`` of clean and of corrupted entities, the spread of ``c``, and the mean
and median TCP target ``p`` (the in-batch true-class probability) of the
first 512 training pairs, clean and corrupted. ``--confidence-lr-scale``
gives the confidence network its own learning rate (a multiple of the
schedule's). docs/fusion.md reads its output.
"""
import argparse
import json
import os

import torch

from ricea_pyg.data import CorruptModalities, corrupted_flags
from ricea_pyg.datasets import DBP15K
from ricea_pyg.loss import tcp_target
from ricea_pyg.metrics import auroc
from ricea_pyg.train import TrainConfig, Trainer

p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
p.add_argument('--root', default=os.path.join(
    os.environ.get('RICEA_DATA_ROOT', '../shared/data'), 'dbp15k'))
p.add_argument('--treatment', default='noise',
               choices=('missing', 'noise', 'wrong'))
p.add_argument('--keep', type=float, default=0.6)
p.add_argument('--epochs', type=int, default=3)
p.add_argument('--batch-size', type=int, default=512)
p.add_argument('--lambda-uncertainty', type=float, default=0.0,
               help='TrainConfig.lambda_uncertainty (0: the method)')
p.add_argument('--fusion-kwargs', type=json.loads, default={},
               help='ADCFusion arguments as JSON, e.g. \'{"scoring": '
               '"pair_mean"}\', over the method\'s {"temperature": 1.0, '
               '"transformer_input_grad": true}')
p.add_argument('--confidence-lr-scale', type=float, default=1.0,
               help='learning rate of the confidence network over the rest')
args = p.parse_args()

data = DBP15K(args.root, 'zh_en', modalities=['graph', 'rel', 'name', 'char'],
              seed=0, log=False)[0]
data = CorruptModalities(['name', 'char'], keep_ratio=args.keep,
                         treatment=args.treatment, seed=0)(data)
trainer = Trainer(data, TrainConfig(fusion='adc',
                                    fusion_kwargs={
                                        'temperature': 1.0,
                                        'transformer_input_grad': True,
                                        **args.fusion_kwargs},
                                    epochs=args.epochs,
                                    batch_size=args.batch_size,
                                    eval_every=10**6, progress=False,
                                    lambda_uncertainty=args.lambda_uncertainty),
                  log=lambda s: None)
if args.confidence_lr_scale != 1.0:
    conf = {id(q) for q in trainer.model.fusion.interaction.confidence.parameters()}
    rest = [q for q in trainer.params if id(q) not in conf]
    trainer.optimizer = torch.optim.AdamW(
        [{'params': rest},
         {'params': [q for q in trainer.params if id(q) in conf],
          'lr_scale': args.confidence_lr_scale}],
        lr=trainer.config.lr, weight_decay=trainer.config.weight_decay)
flags = corrupted_flags(data, 'name')
name = trainer.inputs.modalities.index('name')


@torch.no_grad()
def report(tag):
    model, inputs = trainer.model, trainer.inputs
    model.eval()
    out = model(inputs)
    model.train()
    c, w, u = (t[:, name] for t in (out.aux.confidence, out.weights,
                                    out.uncertainty))
    rows = trainer.train_pairs[:, :512]
    p_s, _ = tcp_target(out.x[rows[0]], out.x[rows[1] + inputs.num_source])
    f = flags[rows[0]]
    present = inputs.mask[:, name]
    print(f'{tag:8s} c clean {c[~flags].mean():.4f} corrupted '
          f'{c[flags].mean():.4f} (std {c.std():.4f}, AUROC of 1-c '
          f'{auroc(1 - c[present], flags[present]):.3f}) | w clean '
          f'{w[~flags].mean():.4f} corrupted {w[flags].mean():.4f} | u clean '
          f'{u[~flags].mean():.4f} corrupted {u[flags].mean():.4f} (AUROC '
          f'{auroc(u[present], flags[present]):.3f}) | TCP '
          f'target clean {p_s[~f, name].mean():.4f} corrupted '
          f'{p_s[f, name].mean():.4f} (medians '
          f'{p_s[~f, name].median():.4f} / {p_s[f, name].median():.4f})')


torch.manual_seed(0)
report('init')
for epoch in range(args.epochs):
    trainer.train_epoch()
    trainer.epoch += 1
    report(f'epoch {epoch + 1}')
