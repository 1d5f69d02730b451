"""Can ADC's attention-read uncertainty flag a corrupted name, and what must
teach it? A probe of training targets.

    python benchmarks/uncertainty_targets.py --treatment noise
    python benchmarks/uncertainty_targets.py --treatment wrong --targets tcp replaced

Trains RICEA (``fusion='adc'`` with the method's ``temperature=1.0`` and
``transformer_input_grad=True``, default ``TrainConfig``) for a few epochs on
DBP15K zh_en with names after ``CorruptModalities`` has treated the name and
char modalities of a share ``1 - keep`` of the entities. Then, on the
model's frozen modality tokens, it refits the cross-modal transformer from
its trained state, one target at a time, by a squared error on
``u = 1 - DU / DU_max`` of every modality of entities with two or more
(``distribution_uniformity``, the ``u`` ADC calibrates with), and prints the
AUROC of ``u_name`` for the corrupted names of a random half of the
entities, held out from the oracle's fit, every ``--eval-every`` steps. The
targets:

* ``oracle``: 1 for a corrupted name or char, else 0, fitted on the other
  half (labels no method has: does the attention have the capacity?);
* ``tcp``: ``1 - p``, ``p`` the true-class probability of each modality
  over the training pairs in groups of the trainer's batch size (what
  ``TrainConfig.lambda_uncertainty`` regresses on). A pair-level signal: a
  clean name whose counterpart's name is corrupted fails too. The AUROC of
  ``1 - p`` itself on the training entities is printed;
* ``tcp_quantile``: the quantile of ``1 - p`` among the group's entities,
  per modality, so that the targets spread over [0, 1] instead of
  sitting near 1;
* ``replaced``: self-supervised: in each batch a share ``--rate`` of the
  names and of the chars (independently) get the hop-0 block of another
  random entity's feature (the entity's own block in SEU's propagated
  feature), re-projected; the target is 1 for those, else 0;
* ``swapped``: the same with the whole modality token of another entity.

``--hop-tokens`` gives each propagated block of name and char its own
token (``benchmarks/hop_tokens.py``), so that a *noise* name is a token of
pure noise and ``u_name`` is the uncertainty of the entity's own name;
``oracle`` and the ``tcp`` targets only.

Writes one JSON line per evaluation to --results.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine  # noqa: E402

from ricea_pyg.data import CorruptModalities, corrupted_flags  # noqa: E402
from ricea_pyg.datasets import DBP15K  # noqa: E402
from ricea_pyg.loss import tcp_target  # noqa: E402
from ricea_pyg.metrics import auroc  # noqa: E402
from ricea_pyg.nn.fusion import distribution_uniformity  # noqa: E402
from ricea_pyg.train import TrainConfig, Trainer  # noqa: E402

TARGETS = ('oracle', 'tcp', 'tcp_quantile', 'replaced', 'swapped')


def tcp_targets(trainer, x, gen):
    """``(entities, 1 - p, quantile of 1 - p)`` over the training pairs,
    both sides, in random groups of the trainer's batch size; the quantile
    is taken in the group, per modality."""
    rows = trainer.train_pairs.clone()
    rows[1] += trainer.inputs.num_source
    rows = rows[:, torch.randperm(rows.size(1), generator=gen)]
    ents, fail, rank = [], [], []
    for i in range(0, rows.size(1), trainer.config.batch_size):
        r = rows[:, i:i + trainer.config.batch_size]
        p_s, p_t = tcp_target(x[r[0]], x[r[1]], trainer.config.tau)
        ents += [r[0], r[1]]
        for f in (1 - p_s, 1 - p_t):
            fail.append(f)
            rank.append(f.argsort(0).argsort(0).float() / max(len(f) - 1, 1))
    return torch.cat(ents), torch.cat(fail), torch.cat(rank)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=os.path.join(
        os.environ.get('RICEA_DATA_ROOT', '../shared/data'), 'dbp15k'))
    p.add_argument('--treatment', default='noise', choices=('noise', 'wrong'))
    p.add_argument('--keep', type=float, default=0.6)
    p.add_argument('--epochs', type=int, default=3,
                   help='RICEA epochs before the tokens are frozen')
    p.add_argument('--targets', nargs='+', default=list(TARGETS),
                   choices=TARGETS)
    p.add_argument('--steps', type=int, default=1000)
    p.add_argument('--lr', type=float, default=1e-2)
    p.add_argument('--batch-size', type=int, default=2048)
    p.add_argument('--rate', type=float, default=0.3,
                   help="share replaced per batch ('replaced', 'swapped')")
    p.add_argument('--eval-every', type=int, default=250)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--hop-tokens', action='store_true',
                   help='each propagated block of name and char its own '
                        'token (benchmarks/hop_tokens.py)')
    p.add_argument('--results', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), 'results',
        'uncertainty_targets.jsonl'))
    args = p.parse_args()
    if args.hop_tokens:
        bad = sorted(set(args.targets) & {'replaced', 'swapped'})
        if bad:
            p.error(f'--hop-tokens takes oracle and the tcp targets only '
                    f'(got {bad}): those replace the hop-0 block of the '
                    f'default inputs')
        import hop_tokens
        hop_tokens.use_hop_tokens(TrainConfig().propagation_hops)

    data = DBP15K(args.root, 'zh_en', modalities=['graph', 'rel', 'name',
                                                  'char'],
                  seed=0, log=False)[0]
    data = CorruptModalities(['name', 'char'], keep_ratio=args.keep,
                             treatment=args.treatment, seed=args.seed)(data)
    # The method's T = 1 and gradient through the transformer (ADCFusion's
    # defaults are 4 and sg(x)): the rows recorded in docs/fusion.md are of
    # it.
    config = TrainConfig(fusion='adc',
                         fusion_kwargs={'temperature': 1.0,
                                        'transformer_input_grad': True},
                         epochs=10, seed=args.seed,
                         eval_every=10**6, progress=False)
    trainer = Trainer(data, config, log=lambda s: None)
    for _ in range(args.epochs):
        trainer.train_epoch()
        trainer.epoch += 1
    model, inputs = trainer.model, trainer.inputs
    model.eval()
    with torch.no_grad():
        out = model(inputs)
    x, mask, mods = out.x, out.mask, model.modalities
    flags = {m: corrupted_flags(data, m) for m in ('name', 'char')}
    cols = {m: mods.index(m) for m in ('name', 'char')}
    hops = trainer.config.propagation_hops
    N, M = mask.shape
    gen = torch.Generator().manual_seed(args.seed)
    ents, fail, fail_rank = tcp_targets(trainer, x, gen)
    name = cols['name']
    v = mask[ents, name]
    tcp_auroc = auroc(fail[v, name], flags['name'][ents][v])
    print(f'AUROC of 1 - p for corrupted names (training entities): '
          f'{tcp_auroc:.3f}')
    oracle = torch.zeros(N, M)
    for m, c in cols.items():
        oracle[:, c] = flags[m].float()
    order = torch.randperm(N, generator=gen)
    fit, held_out = order[:N // 2], order[N // 2:]
    trained = copy.deepcopy(model.fusion.interaction.transformer.state_dict())
    os.makedirs(os.path.dirname(args.results), exist_ok=True)

    def evaluate(transformer):
        with torch.no_grad():
            _, attn = transformer(x[held_out], mask[held_out])
            _, u = distribution_uniformity(attn, mask[held_out], 'row')
        present = mask[held_out]
        return {m: auroc(u[present[:, c], c],
                         flags[m][held_out][present[:, c]])
                for m, c in cols.items()}

    for target in args.targets:
        transformer = model.fusion.interaction.transformer
        transformer.load_state_dict(trained)
        opt = torch.optim.Adam(transformer.parameters(), lr=args.lr)
        t0 = time.time()
        for step in range(args.steps + 1):
            if step % args.eval_every == 0:
                row = {'treatment': args.treatment, 'keep': args.keep,
                       'epochs': args.epochs, 'target': target, 'step': step,
                       'steps': args.steps, 'hop_tokens': args.hop_tokens,
                       'lr': args.lr, 'seed': args.seed,
                       **{f'auroc_u_{m}': round(a, 4)
                          for m, a in evaluate(transformer).items()},
                       'tcp_target_auroc': round(tcp_auroc, 4),
                       'seconds': round(time.time() - t0, 1),
                       'machine': machine(),
                       'date': time.strftime('%Y-%m-%d')}
                print(f"{target:9s} step {step:5d} AUROC u_name "
                      f"{row['auroc_u_name']:.3f} u_char "
                      f"{row['auroc_u_char']:.3f} ({row['seconds']} s)",
                      flush=True)
                with open(args.results, 'a') as f:
                    f.write(json.dumps(row) + '\n')
            if step == args.steps:
                break
            if target in ('tcp', 'tcp_quantile'):
                b = torch.randint(len(ents), (args.batch_size, ),
                                  generator=gen)
                e = ents[b]
                goal = (fail if target == 'tcp' else fail_rank)[b]
                xb = x[e]
            else:
                pool = fit if target == 'oracle' else torch.arange(N)
                e = pool[torch.randint(len(pool), (args.batch_size, ),
                                       generator=gen)]
                xb = x[e]
                goal = oracle[e] if target == 'oracle' else torch.zeros(
                    len(e), M)
            mb = mask[e]
            if target in ('replaced', 'swapped'):
                xb = xb.clone()
                with torch.no_grad():
                    for m, c in cols.items():
                        hit = (torch.rand(len(e), generator=gen) < args.rate
                               ) & mb[:, c]
                        donor = torch.randint(N, (int(hit.sum()), ),
                                              generator=gen)
                        if target == 'swapped':
                            xb[hit, c] = x[donor, c]
                        else:
                            feat = inputs.features[m]
                            own = feat[e[hit]].clone()
                            width = own.size(1) // (hops + 1)
                            own[:, :width] = feat[donor, :width]
                            xb[hit, c] = model.projection({m: own})[m]
                        goal[:, c] = hit.float()
            _, attn = transformer(xb, mb)
            _, u = distribution_uniformity(attn, mb, 'row', detach=False)
            several = mb & (mb.sum(-1, keepdim=True) > 1)
            loss = (u - goal).square()[several].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()


if __name__ == '__main__':
    main()
