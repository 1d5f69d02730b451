"""The ``ricea`` command: train, evaluate, align and explain.

    ricea train --root DATA/dbp15k --pair zh_en --out runs/zh [--config F]
    ricea evaluate runs/zh/best.pt --split test
    ricea align runs/zh/best.pt --output runs/zh/pairs.tsv
    ricea explain runs/zh/best.pt --out runs/zh/explain

Bad input (a wrong path, an unknown config key, a missing modality file)
prints one clear line and exits with code 2.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

import torch

from ricea_pyg.data.errors import DataFormatError
from ricea_pyg.train.checkpoint import load_checkpoint
from ricea_pyg.train.config import ConfigError, TrainConfig

ALIGN = ('source', 'aligned_with', 'target')
RUN_FILE = 'run.json'


class CLIError(Exception):
    """Exit code 2 with this message."""


# -- data ----------------------------------------------------------------------
def _add_data_args(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group('data')
    g.add_argument('--dataset', choices=['dbp15k', 'fbdb15k', 'synthetic'],
                   default=None if not required else 'dbp15k')
    g.add_argument('--root', help='dataset folder (DBP15K: the one holding '
                   '<pair>/ and translated_ent_name/)')
    g.add_argument('--pair', default=None, help='DBP15K pair (zh_en)')
    g.add_argument('--no-names', action='store_true', default=None,
                   help='leave out name and char modalities')
    g.add_argument('--split-seed', type=int, default=None)
    g.add_argument('--entities', type=int, default=None,
                   help='synthetic: entities per KG (default 2000)')
    g.add_argument('--download', action='store_true', default=None,
                   help='download missing DBP15K files')


def _data_spec(args, saved: Optional[Dict[str, Any]] = None
               ) -> Dict[str, Any]:
    spec = dict(dataset='dbp15k', root=None, pair='zh_en', no_names=False,
                split_seed=0, entities=2000, download=False)
    spec.update(saved or {})
    for key in spec:
        value = getattr(args, key, None)
        if value is not None:
            spec[key] = value
    return spec


def load_data(spec: Dict[str, Any]):
    """The :class:`HeteroData` a run trains on, from its data spec."""
    kind = spec['dataset']
    if kind == 'synthetic':
        from ricea_pyg.data import synthetic_pair
        mods = (('rel',) if spec['no_names'] else
                ('rel', 'attr', 'img', 'name', 'char'))
        return synthetic_pair(spec['entities'], modalities=mods,
                              seed=spec['split_seed'])
    root = spec['root']
    if not root:
        raise CLIError(f'--root is required for --dataset {kind}')
    if not os.path.isdir(root):
        raise CLIError(f'{root}: dataset folder not found; pass --root DIR '
                       f'(for DBP15K the folder holding {spec["pair"]}/)')
    if kind == 'dbp15k':
        from ricea_pyg.datasets import DBP15K
        from ricea_pyg.datasets.dbp15k import _CORE
        needed = [os.path.join(spec['pair'], f) for f in _CORE]
        if not spec['no_names']:
            needed.append(os.path.join('translated_ent_name',
                                       f'dbp_{spec["pair"]}.json'))
        missing = [f for f in needed
                   if not os.path.isfile(os.path.join(root, f))]
        if missing and not spec['download']:
            fix = ('--no-names to train without names, or ' if any(
                'translated' in f for f in missing) else '')
            raise CLIError(f'{os.path.join(root, missing[0])}: file not '
                           f'found ({len(missing)} missing); use {fix}'
                           '--download, or check --root/--pair')
        names = None if spec['no_names'] else 'translated'
        mods = ['graph', 'rel'] if spec['no_names'] else None
        return DBP15K(root, spec['pair'], modalities=mods, names=names,
                      seed=spec['split_seed'], log=False)[0]
    from ricea_pyg.datasets import FBDB15K
    return FBDB15K(root, names=not spec['no_names'],
                   seed=spec['split_seed'], log=False)[0]


# -- config flags ------------------------------------------------------------
def _add_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('training (override --config)')
    for f in dataclasses.fields(TrainConfig):
        flag = '--' + f.name.replace('_', '-')
        default = TrainConfig.__dataclass_fields__[f.name]
        kind = type(default.default) if default.default is not \
            dataclasses.MISSING else None
        if f.name in ('modalities', 'fusion_kwargs', 'iter_threshold'):
            g.add_argument(flag, dest=f.name, default=None,
                           help='JSON value' if f.name != 'modalities'
                           else 'comma-separated, e.g. graph,rel,name')
        elif kind is bool:
            g.add_argument(flag, dest=f.name, default=None,
                           action=argparse.BooleanOptionalAction)
        else:
            g.add_argument(flag, dest=f.name, type=kind, default=None)


def _config(args) -> TrainConfig:
    overrides: Dict[str, Any] = {}
    for name in TrainConfig.keys():
        value = getattr(args, name, None)
        if value is None:
            continue
        if name == 'modalities':
            value = [m.strip() for m in value.split(',') if m.strip()]
        elif name in ('fusion_kwargs', 'iter_threshold'):
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError(f'--{name.replace("_", "-")}: not valid '
                                  f'JSON ({value!r})') from None
        overrides[name] = value
    if args.config:
        return TrainConfig.from_file(args.config, **overrides)
    return TrainConfig.from_dict(overrides, source='command line')


# -- commands ----------------------------------------------------------------------
def cmd_train(args) -> Dict:
    from ricea_pyg.train import Trainer
    start = time.perf_counter()
    config = _config(args)
    spec = _data_spec(args)
    data = load_data(spec)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, RUN_FILE), 'w') as f:
            json.dump({'data': spec, 'config': config.to_dict()}, f,
                      indent=2)
    trainer = Trainer(data, config, out_dir=out)
    del data  # the trainer keeps its own copy of the features
    metrics = trainer.fit(resume=args.resume)
    trainer.write_metrics(metrics, time.perf_counter() - start)
    print(json.dumps({k: metrics[k] for k in ('val', 'test', 'wall_time_s')},
                     indent=2))
    return metrics


def _restore(args):
    """Model, data, inputs and config of a checkpoint."""
    from ricea_pyg.models import PairInputs
    from ricea_pyg.train import build_model
    state = load_checkpoint(args.checkpoint)
    if 'model' not in state or 'config' not in state:
        raise CLIError(f'{args.checkpoint}: not a ricea checkpoint (no model '
                       'or config); pass DIR/best.pt or DIR/last.pt')
    run_file = os.path.join(os.path.dirname(os.path.abspath(
        args.checkpoint)), RUN_FILE)
    saved = None
    if os.path.isfile(run_file):
        with open(run_file) as f:
            saved = json.load(f)['data']
    spec = _data_spec(args, saved)
    data = load_data(spec)
    config = TrainConfig.from_dict(state['config'], source=args.checkpoint)
    inputs = PairInputs.from_data(data, state.get('modalities',
                                                  config.modalities))
    model = build_model(inputs, config)
    try:
        model.load_state_dict(state['model'])
    except RuntimeError as e:
        raise CLIError(f'{args.checkpoint}: does not fit this data ({e}); '
                       'pass the --root/--pair it was trained on') from None
    model.eval()
    return model, data, inputs, config


def cmd_evaluate(args) -> Dict:
    from ricea_pyg.train import evaluate_embeddings
    model, data, inputs, config = _restore(args)
    emb = model.embed(inputs).fused
    n_s = inputs.num_source
    pairs = data[ALIGN][f'{args.split}_index']
    csls = config.csls_k if args.csls_k is None else args.csls_k
    result = {
        'split': args.split, 'candidates': args.candidates,
        'csls': evaluate_embeddings(emb[:n_s], emb[n_s:], pairs, csls,
                                    args.candidates),
        'cosine': evaluate_embeddings(emb[:n_s], emb[n_s:], pairs, 0,
                                      args.candidates)}
    print(json.dumps(result, indent=2))
    return result


def _uris(store, prefix: str) -> List[str]:
    uris = getattr(store, 'uri', None)
    if uris is None:
        return [f'{prefix}:{i}' for i in range(store.num_nodes)]
    return list(uris)


def cmd_align(args) -> str:
    from ricea_pyg.data import unaligned_entities
    from ricea_pyg.search import top1_both_directions
    model, data, inputs, config = _restore(args)
    emb = model.embed(inputs).fused
    n_s = inputs.num_source
    s_ids, t_ids = unaligned_entities(data[ALIGN].train_index, n_s,
                                      inputs.num_target)
    csls = config.csls_k if args.csls_k is None else args.csls_k
    scores, top, back = top1_both_directions(emb[:n_s][s_ids],
                                             emb[n_s:][t_ids], csls)
    s_uri, t_uri = _uris(data['source'], 'source'), _uris(data['target'],
                                                          'target')
    os.makedirs(os.path.dirname(os.path.abspath(args.output)),
                exist_ok=True)
    with open(args.output, 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f, delimiter='\t', lineterminator='\n')
        w.writerow(['source', 'target', 'score', 'mutual'])
        for row, (i, j) in enumerate(zip(s_ids.tolist(),
                                         top[:, 0].tolist())):
            mutual = int(back[j, 0]) == row
            w.writerow([s_uri[i], t_uri[int(t_ids[j])],
                        f'{float(scores[row, 0]):.6f}', int(mutual)])
    print(f'wrote {len(s_ids)} predicted pairs (csls_k={csls}) to '
          f'{args.output}')
    return args.output


def cmd_explain(args) -> str:
    model, data, inputs, config = _restore(args)
    with torch.no_grad():
        out = model.embed(inputs)
    n_s = inputs.num_source
    mods = inputs.modalities
    weights = out.weights
    unc = out.uncertainty
    # Correctness of each test source's top-1 (CSLS) for the plot.
    from ricea_pyg.search import csls_search
    test = data[ALIGN].test_index
    _, top = csls_search(out.fused[:n_s][test[0]], out.fused[n_s:][test[1]],
                         1, config.csls_k)
    correct = torch.full((inputs.num_entities,), -1, dtype=torch.long)
    correct[test[0]] = (top[:, 0] == torch.arange(test.size(1))).long()
    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, 'modality_weights.csv')
    uris = _uris(data['source'], 'source') + _uris(data['target'], 'target')
    with open(csv_path, 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(['side', 'index', 'uri'] + [f'w_{m}' for m in mods]
                   + ([f'u_{m}' for m in mods] if unc is not None else [])
                   + ['test_top1_correct'])
        for r in range(inputs.num_entities):
            side, idx = ('source', r) if r < n_s else ('target', r - n_s)
            row = [side, idx, uris[r]]
            row += [f'{v:.6f}' for v in weights[r].tolist()]
            if unc is not None:
                row += [f'{v:.6f}' for v in unc[r].tolist()]
            row.append('' if correct[r] < 0 else int(correct[r]))
            w.writerow(row)
    _plots(args.out, mods, weights, unc, out.mask, correct)
    print(f'wrote {csv_path} and plots to {args.out}')
    return csv_path


def _plots(folder, mods, weights, unc, mask, correct) -> None:
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        raise CLIError('explain plots need matplotlib: pip install '
                       '.[plot]') from None
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(mods), 3.5))
    data = [weights[mask[:, m], m].numpy() for m in range(len(mods))]
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(mods) + 1), mods)
    ax.set_ylabel('weight (present entities)')
    ax.set_title('Modality weight per entity')
    fig.tight_layout()
    fig.savefig(os.path.join(folder, 'weights.png'), dpi=120)
    plt.close(fig)
    if unc is None:
        return
    tested = correct >= 0
    fig, ax = plt.subplots(figsize=(1.5 + 2.0 * len(mods), 3.5))
    groups, labels = [], []
    for m, name in enumerate(mods):
        for ok, tag in ((1, 'right'), (0, 'wrong')):
            sel = tested & (correct == ok) & mask[:, m]
            groups.append(unc[sel, m].numpy())
            labels.append(f'{name}\n{tag}')
    ax.boxplot(groups, showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
    ax.set_ylabel('uncertainty u')
    ax.set_title('Uncertainty vs. top-1 correctness (test sources)')
    fig.tight_layout()
    fig.savefig(os.path.join(folder, 'uncertainty.png'), dpi=120)
    plt.close(fig)


# -- entry point --------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='ricea', description=__doc__.split(
        '\n')[0])
    sub = p.add_subparsers(dest='command', required=True)
    t = sub.add_parser('train', help='train, select on validation, test')
    _add_data_args(t, required=True)
    t.add_argument('--config', help='JSON or TOML file of training options')
    t.add_argument('--out', help='output folder (checkpoints, metrics)')
    t.add_argument('--resume', action='store_true',
                   help='continue from OUT/last.pt')
    t.add_argument('--threads', type=int, default=0)
    _add_config_args(t)
    for name, helptext in (('evaluate', 'metrics of a checkpoint'),
                           ('align', 'export predicted pairs as TSV'),
                           ('explain', 'modality weights: CSV and plots')):
        c = sub.add_parser(name, help=helptext)
        c.add_argument('checkpoint')
        _add_data_args(c, required=False)
        if name in ('evaluate', 'align'):
            c.add_argument('--csls-k', type=int, default=None)
        if name == 'evaluate':
            c.add_argument('--split', choices=['val', 'test'],
                           default='test')
            c.add_argument('--candidates', choices=['test', 'all'],
                           default='test')
        if name == 'align':
            c.add_argument('--output', required=True, help='TSV file')
        if name == 'explain':
            c.add_argument('--out', required=True, help='output folder')
    return p


COMMANDS = {'train': cmd_train, 'evaluate': cmd_evaluate,
            'align': cmd_align, 'explain': cmd_explain}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (CLIError, ConfigError, DataFormatError, FileNotFoundError,
            ValueError) as e:
        print(f'ricea {args.command}: error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
