"""Robustness to missing, noisy and wrong names (UMAEA's protocol) on DBP15K,
written to docs/robustness.md.

    python benchmarks/robustness.py                       # default grid
    python benchmarks/robustness.py --full                # R in 1.0 .. 0.2
    python benchmarks/robustness.py --extra-seeds 1 2     # + seeds at R=0.6
    python benchmarks/robustness.py --dry-run             # list the cells
    python benchmarks/robustness.py --render-only

Every cell trains one model on zh_en (``--pair``) with the modalities graph,
rel, name and char, after :class:`ricea_pyg.data.CorruptModalities` keeps
the name and char modalities for a fraction R of the entities of both KGs
(train, validation and test entities alike) and treats the others as
*missing* (masked), *noise* (Gaussian noise with the kept features' mean and
std) or *wrong* (another entity's features). R = 1.0 is one clean cell
shared by the treatments. Structural sparsity is its own axis at R = 1.0:
:class:`ricea_pyg.data.DropTriples` drops 25 % and 50 % of the triples. A
"no names" cell per fusion and seed trains the same model on graph + rel
only. Training is the library's (Trainer, default TrainConfig, a fixed
number of epochs, selection on validation, test once, CSLS k = 3); the
corruption and the model share the run seed; the split is seed 0. The
names' weight in the score is chosen on validation, as the default
TrainConfig does since 2026-12-07; ``'concat:{"name_weight": 1.0}'`` scores
them at 1, as every row measured before did (those rows are labelled so).
Without names the name weight does not apply, so a variant that only sets
it shares the "no names" cell of the variant without it. Models with
names get seed labels only where the variant sets ``label_channels``, as
in the default TrainConfig, and the "no names" cells get the default's.

For fusions whose output has a per-entity uncertainty, the AUROC of
u[:, name] for telling corrupted names from clean ones is measured over all
entities of both KGs that have the name modality present, and the AUROC of
1 - w[:, name] (the weight the fusion uses) for every fusion.

Each finished cell is appended to ``--results`` (JSON lines) and skipped when
the script is rerun, so an interrupted grid continues. The tables give a
column to each fusion with its defaults; every variant in the results
file (``name:JSON``) gets its rows in a section of its own, on the cells
it was run on. Whatever cells a run has, the document shows the whole
default grid (R in 1.0, 0.6, 0.2, every treatment, 25 and 50 % of the
triples dropped; the run's own ratios and drops added) with a column for
each of concat, meaformer, global and adc, so a partial run (``--match``)
updates its cells and leaves the others in place.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from collections import Counter, defaultdict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from alignment_accuracy import (  # noqa: E402
    done_keys,
    parse_fusion,
    split_variant,
)
from common import machine  # noqa: E402

from ricea_pyg.data import (  # noqa: E402
    CorruptModalities,
    DropTriples,
    corrupted_flags,
)
from ricea_pyg.metrics import auroc as metrics_auroc  # noqa: E402
from ricea_pyg.train import TrainConfig, Trainer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(HERE, '..', 'docs')
TREATMENTS = ('missing', 'noise', 'wrong')
CORRUPTED = ('name', 'char')  # the modalities R applies to
NAMES = ['graph', 'rel', 'name', 'char']
NO_NAMES = ['graph', 'rel']
DEFAULT_RATIOS = (1.0, 0.6, 0.2)
FULL_RATIOS = (1.0, 0.8, 0.6, 0.4, 0.2)
DEFAULT_DROPS = (0.25, 0.5)
DEFAULT_EPOCHS = 10  # ~5 min a cell with names on 2 cores (25-36 s/epoch)
SEEDED_CELLS = (('noise', 0.6), ('wrong', 0.6))  # where --extra-seeds run
DOC_FUSIONS = ('concat', 'meaformer', 'global', 'adc')  # the doc's columns


# -- cells ----------------------------------------------------------------------
def cell_name(cell):
    kind = cell['kind']
    if kind == 'corrupt':
        return f"{cell['treatment']} R={cell['keep_ratio']:g}"
    if kind == 'drop':
        return f"drop={cell['drop_ratio']:g}"
    return kind  # 'clean', 'no names'


def grid_cells(ratios, treatments, drops):
    """The distinct cells, most informative first."""
    cells = [dict(kind='clean'), dict(kind='no names')]
    for r in sorted((r for r in ratios if r < 1.0), reverse=True):
        for t in treatments:
            cells.append(dict(kind='corrupt', treatment=t, keep_ratio=r))
    cells += [dict(kind='drop', drop_ratio=d) for d in drops]
    return cells


def cell_fusion(cell, spec):
    """The variant a cell runs: without names, ``name_weight`` does not
    apply (it resolves to 1), so the *no names* cell of a variant that sets
    it is the variant without it, run once for both."""
    if cell['kind'] != 'no names' or ':' not in spec:
        return spec
    name, kwargs = parse_fusion(spec)
    kwargs.pop('name_weight', None)
    return f'{name}:{json.dumps(kwargs)}' if kwargs else name


def jobs_for(args):
    """(cell, fusion, seed) to run, in order."""
    cells = grid_cells(args.ratios, args.treatments, args.drops)
    jobs = [(c, cell_fusion(c, f), s) for s in args.seeds for c in cells
            for f in args.fusions]
    for s in args.extra_seeds:
        if s in args.seeds:
            continue
        extra = [dict(kind='no names')] + [
            dict(kind='corrupt', treatment=t, keep_ratio=r)
            for t, r in SEEDED_CELLS
            if t in args.treatments and r in args.ratios]
        jobs += [(c, cell_fusion(c, f), s) for c in extra
                 for f in args.fusions]
    unique = {}  # a no-names job that two variants share runs once
    for c, f, s in jobs:
        unique.setdefault((cell_name(c), f, s), (c, f, s))
    return list(unique.values())


def job_key(pair, cell, fusion, seed, epochs):
    return f'{pair}|{cell_name(cell)}|{fusion}|seed={seed}|epochs={epochs}'


# -- one cell -----------------------------------------------------------------------
_DATA = {}


def load(root, pair):
    """The pair with names, split seed 0, loaded once per process."""
    if pair not in _DATA:
        from ricea_pyg.datasets import DBP15K
        _DATA[pair] = DBP15K(root, pair, modalities=NAMES, seed=0,
                             log=False)[0]
    return _DATA[pair]


def auroc(scores, labels):
    """:func:`ricea_pyg.metrics.auroc`, or None when a class is empty or the
    scores are all equal (nothing to measure)."""
    s = torch.as_tensor(scores, dtype=torch.float64).view(-1)
    y = torch.as_tensor(labels, dtype=torch.bool).view(-1)
    if bool(y.all()) or not bool(y.any()) or bool((s == s[0]).all()):
        return None
    return metrics_auroc(s, y)


@torch.no_grad()
def uncertainty_aurocs(trainer, data):
    """AUROC of u and of 1 - w per corrupted modality, over the entities of
    both KGs (PairInputs order: source rows, then target rows) that have the
    modality present."""
    inputs = trainer.inputs
    out = trainer.model.embed(inputs)
    u = getattr(out, 'uncertainty', None)
    w = getattr(out, 'weights', None)
    res = {'uncertainty': {}, 'weight': {}, 'corrupted': {}, 'scored': {}}
    for m in CORRUPTED:
        key = f'corrupted_{m}'
        if m not in trainer.model.modalities or key not in data['source']:
            continue
        col = trainer.model.modalities.index(m)  # the output's columns
        flags = corrupted_flags(data, m).to(inputs.mask.device)
        present = out.mask[:, col]
        assert flags.numel() == inputs.num_entities
        res['corrupted'][m] = int(flags.sum())
        res['scored'][m] = int(present.sum())
        labels = flags[present].cpu()
        res['uncertainty'][m] = (None if u is None else
                                 auroc(u[present, col].cpu(), labels))
        res['weight'][m] = (None if w is None else
                            auroc(1 - w[present, col].cpu(), labels))
    return res


def run_cell(args, cell, fusion, seed, epochs):
    base = load(args.root, args.pair)
    data = base
    if cell['kind'] == 'corrupt':
        data = CorruptModalities(list(CORRUPTED), cell['keep_ratio'],
                                 cell['treatment'], seed=seed)(base)
    elif cell['kind'] == 'drop':
        data = DropTriples(cell['drop_ratio'], seed=seed)(base)
    name, kwargs = parse_fusion(fusion)
    # Keys of a variant that are training settings (e.g.
    # "lambda_uncertainty") go to the config, the rest to the fusion.
    settings, kwargs = split_variant(kwargs)
    config = TrainConfig(
        **settings,
        fusion=name, fusion_kwargs=kwargs, seed=seed, epochs=epochs,
        modalities=NO_NAMES if cell['kind'] == 'no names' else NAMES,
        progress=False)
    start = time.perf_counter()
    trainer = Trainer(data, config, log=print if args.verbose else
                      (lambda s: None))
    metrics = trainer.fit()
    aurocs = (uncertainty_aurocs(trainer, data) if cell['kind'] == 'corrupt'
              else None)
    test = metrics['test']
    return dict(
        pair=args.pair, cell=cell_name(cell), **cell, fusion=fusion,
        seed=seed, epochs=epochs, config=metrics['config'],
        metrics={'hits@1': test['hits@1'],
                 'one_to_one_hits@1': test.get('one_to_one_hits@1'),
                 'hits@10': test['hits@10'], 'mrr': test['mrr'],
                 'cosine_hits@1': metrics['test_cosine']['hits@1'],
                 'val': metrics['val'], 'best_epoch': metrics['best_epoch']},
        auroc=aurocs, epoch_time_s=metrics['epoch_time_s'],
        wall_time_s=time.perf_counter() - start)


# -- rendering ----------------------------------------------------------------------
def mean(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def fmt(values, digits=3):
    values = [v for v in values if v is not None]
    if not values:
        return '—'
    if len(values) == 1:
        return f'{values[0]:.{digits}f}'
    return (f'{statistics.mean(values):.{digits}f} ± '
            f'{statistics.stdev(values):.{digits}f}')


def plot(groups, fusions, ratios, drops, path):
    """Hits@1 against R per treatment (and against the dropped share);
    returns an error line instead of raising when matplotlib is absent."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return ('matplotlib is not installed: no plot (`pip install '
                'matplotlib`, then rerun with --render-only)')
    fig, axes = plt.subplots(1, 4, figsize=(16, 4), sharey=True)
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    # Fusions that tie (global and concat do) stay visible: each its own
    # marker, the later ones smaller and drawn on top.
    markers = 'os^Dv<>p'

    def style(i):
        return dict(color=colors[i % len(colors)],
                    marker=markers[i % len(markers)],
                    markersize=max(3.0, 8.0 - 1.5 * i), linewidth=1.5)
    xs = sorted(ratios)
    for ax, treatment in zip(axes, TREATMENTS):
        for i, f in enumerate(fusions):
            c = colors[i % len(colors)]
            pts = []
            for r in xs:
                name = 'clean' if r == 1.0 else f'{treatment} R={r:g}'
                h = mean([x['metrics']['hits@1'] for x in groups[(name, f)]])
                if h is not None:
                    pts.append((r, h))
            if pts:
                ax.plot(*zip(*pts), label=f, **style(i))
            base = mean([x['metrics']['hits@1']
                         for x in groups[('no names', f)]])
            if base is not None:
                ax.axhline(base, color=c, linestyle='--', linewidth=0.8)
        ax.set_title(f'{treatment} names')
        ax.set_xlabel('R (share of entities keeping name and char)')
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    axes[0].set_ylabel('test Hits@1 (CSLS)')
    ax = axes[3]
    for i, f in enumerate(fusions):
        pts = []
        for d in [0.0] + sorted(drops):
            name = 'clean' if d == 0 else f'drop={d:g}'
            h = mean([x['metrics']['hits@1'] for x in groups[(name, f)]])
            if h is not None:
                pts.append((d, h))
        if pts:
            ax.plot(*zip(*pts), label=f, **style(i))
    ax.set_title('sparse structure (R = 1.0)')
    ax.set_xlabel('share of triples dropped')
    ax.grid(alpha=0.3)
    handles = {}
    for a in axes:
        for h, label in zip(*a.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        axes[0].legend(handles.values(), handles.keys(), fontsize=8,
                       title='dashed: no names', title_fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def render(results, args, path, plot_path):
    epochs = args.epochs
    if epochs is None:  # the most common epoch count in the results
        counts = Counter(r['epochs'] for r in results.values()
                         if r['pair'] == args.pair)
        epochs = counts.most_common(1)[0][0] if counts else DEFAULT_EPOCHS
    rs = [r for r in results.values()
          if r['pair'] == args.pair and r['epochs'] == epochs]
    other = len([r for r in results.values() if r not in rs])
    # The fusions with their defaults get the columns; a variant (name:JSON)
    # gets the rows of the cells it was run on, in a section of its own.
    named = list(dict.fromkeys(args.fusions))
    every = named + sorted({r['fusion'] for r in rs} - set(named))
    groups = defaultdict(list)
    for r in rs:
        groups[(r['cell'], r['fusion'])].append(r)
    for v in groups.values():
        v.sort(key=lambda r: r['seed'])
    shown, shared_from = set(), {}
    for f in every:  # the no-names row a variant shares (cell_fusion)
        shared = cell_fusion(dict(kind='no names'), f)
        if ('no names', f) not in groups and ('no names', shared) in groups:
            groups[('no names', f)] = groups[('no names', shared)]
            shown.add(shared)
            shared_from[f] = shared
    # A variant measured only without names, whose row another variant
    # shows, needs no rows of its own.
    every = [f for f in every if f in args.fusions or f not in shown or
             any(c != 'no names' and g == f for c, g in groups)]
    fusions = [f for f in every if ':' not in f]
    variants = [f for f in every if ':' in f]
    expected = [(cell_name(c), f, s) for c, f, s in jobs_for(args)]
    have = {(r['cell'], r['fusion'], r['seed']) for r in rs}
    missing = [j for j in expected if j not in have]
    commands = sorted({r.get('command', '') for r in rs} - {''})
    ratios = sorted(args.ratios, reverse=True)

    def cell(name, f, key='hits@1'):
        g = groups.get((name, f), [])
        if not g:
            return 'not run'
        v = fmt([x['metrics'][key] for x in g])
        return v + (f' (n={len(g)})' if len(g) > 1 else '')

    lines = [
        '# Robustness to missing, noisy and wrong names', '',
        'Generated by `benchmarks/robustness.py` from '
        '`benchmarks/results/robustness.jsonl`; do not edit by hand.', '',
        f'Protocol (UMAEA\'s missing-modality protocol applied to our '
        f'modalities, see `../shared/field-recipes.md`): DBP15K '
        f'{args.pair}, modalities graph + rel + name + char, 30 % train / '
        f'10 % validation / 60 % test pairs (split seed 0). '
        f'`ricea_pyg.data.CorruptModalities` keeps the **name** and '
        f'**char** modalities for a share **R** of the entities that have '
        f'them, in both KGs and for train, validation and test entities '
        f'alike, chosen with the run seed; every other entity gets one '
        f'treatment:', '',
        '* *missing*: the modality is masked (as if the entity had no '
        'name; the default inputs then fill it from the neighbours\' names, '
        '`TrainConfig.impute_missing`);',
        '* *noise*: its features are replaced by Gaussian noise with the '
        'per-dimension mean and std of the kept entities\' features: present '
        'but meaningless;',
        '* *wrong*: its features are those of another random entity of the '
        'same KG: present and misleading.', '',
        'R = 1.0 is the clean data, one cell shared by the three treatments. '
        'Structural sparsity is a separate axis at R = 1.0: '
        '`ricea_pyg.data.DropTriples` removes 25 % and 50 % of the relation '
        'triples of each KG (the `rel` bag-of-relations features still '
        'count all triples). *no names* is the same model trained on graph '
        '+ rel only, with what the default `TrainConfig` gives such a model '
        '(the `labels` modality of seed-label propagation, '
        '`label_channels`); a fusion should never do worse with corrupted '
        'names than without them. So *no names* has one modality more '
        'than the models with names, which get seed labels only where the '
        'variant says `"label_channels": 1024` (an opt-in, as in the '
        'default `TrainConfig`). The weight of the name modalities in the '
        'score is chosen on validation from `[1.0, 0.5, 0.25, 0.1]`, as the '
        'default `TrainConfig` does since 2026-12-07, except where the '
        'variant says `"name_weight": 1.0`: names scored at 1, as in every '
        'row measured before (a *no names* cell has no names to weigh, so '
        'such a variant shows the *no names* run of the variant without '
        'it). The tables give a column to each fusion with its defaults; '
        'the variants (`name:JSON`) are listed after them, on the cells '
        'each was run on. `global` is `GlobalWeightFusion` (EVA: one '
        'learnable softmax over the modalities, the same for every '
        'entity). `adc` is `ADCFusion` with its defaults since '
        '2026-12-07: '
        'temperature T = 4 and a transformer that reads sg(x) '
        '(`transformer_input_grad`, `docs/fusion.md`); '
        '`"transformer_input_grad": true` is the gradient through, as '
        'specified and in every `adc` row measured before; '
        '`adc:{"temperature": 1.0, "name_weight": 1.0, '
        '"transformer_input_grad": true}` is the method as specified, '
        'with names scored at 1.', '',
        f'Training: `Trainer` with the default `TrainConfig` except the '
        f'fusion, the seed and a fixed **{epochs} epoch'
        f'{"s" if epochs != 1 else ""}**; model selected on '
        f'validation MRR; test evaluated once. Hits@1 is CSLS (k = 3) '
        f'against the test targets; "1-to-1" is the Trainer\'s one-to-one '
        f'Hits@1. Several seeds: mean ± std (n). The default '
        f'`TrainConfig` propagates the name and char features over the '
        f'triples (SEU) and fills a missing one from the neighbours '
        f'(`impute_missing`); the cells measured before those defaults '
        f'(2026-11-29) are kept in '
        f'`benchmarks/results/robustness_before_propagation.jsonl`.', '',
        'Commands:', '',
        *([f'    {c}' for c in commands] or
          ['    python benchmarks/robustness.py']), '',
        f'Machine: {rs[0]["machine"] if rs else machine()}. Rendered '
        f'{time.strftime("%Y-%m-%d")}.', '']
    if missing:
        lines += [f'**Not yet run: {len(missing)} of {len(expected)} '
                  f'cells** (shown as "not run"; no number is '
                  f'estimated):', '']
        byname = defaultdict(list)
        for name, f, s in missing:
            byname[(name, s)].append(f)
        for (name, s), fs in byname.items():
            lines.append(f'* {name}, seed {s}: {", ".join(fs)}')
        lines.append('')
    if other:
        lines += [f'({other} result line(s) of other pairs or epoch counts '
                  f'are in the results file and not shown.)', '']

    if not fusions:
        lines += ['No fusion with its defaults has results here; the '
                  'variants are listed at the end.', '']
    header = '| R | ' + ' | '.join(fusions) + ' |'
    rule = '|---|' + '---|' * len(fusions)
    for treatment in args.treatments if fusions else ():
        lines += [f'## {treatment.capitalize()} names', '',
                  'Test Hits@1 (CSLS), then the one-to-one Hits@1.', '',
                  header, rule]
        for r in ratios:
            name = 'clean' if r == 1.0 else f'{treatment} R={r:g}'
            lines.append(f'| {r:.1f} | ' + ' | '.join(
                f'{cell(name, f)} / {cell(name, f, "one_to_one_hits@1")}'
                if groups.get((name, f)) else 'not run'
                for f in fusions) + ' |')
        lines.append('| no names | ' + ' | '.join(
            f'{cell("no names", f)} / '
            f'{cell("no names", f, "one_to_one_hits@1")}'
            if groups.get(('no names', f)) else 'not run'
            for f in fusions) + ' |')
        lines.append('')
    if args.drops and fusions:
        lines += ['## Sparse structure (R = 1.0)', '',
                  'Test Hits@1 (CSLS) / one-to-one Hits@1.', '',
                  '| triples dropped | ' + ' | '.join(fusions) + ' |', rule]
        for d in [0.0] + sorted(args.drops):
            name = 'clean' if d == 0 else f'drop={d:g}'
            lines.append(f'| {d:.0%} | ' + ' | '.join(
                f'{cell(name, f)} / {cell(name, f, "one_to_one_hits@1")}'
                if groups.get((name, f)) else 'not run'
                for f in fusions) + ' |')
        lines.append('')

    auroc_rows = ['## Does the uncertainty flag corrupted names?', '',
              'AUROC of u[:, name] (the fusion\'s per-entity uncertainty) / '
              'of 1 − w[:, name] (the weight it fuses with) for telling '
              'corrupted names from clean ones, over all entities of both '
              'KGs whose name is present after the inputs are built (for '
              '*missing*: the names imputed from the neighbours, '
              '`impute_missing`, against the real ones). 0.5 = chance; "—" = '
              'the fusion has no per-entity uncertainty or weight.', '',
              '| treatment | R | ' + ' | '.join(fusions) + ' |',
              '|---|---|' + '---|' * len(fusions)]
    for treatment in args.treatments:
        for r in [r for r in ratios if r < 1.0]:
            name = f'{treatment} R={r:g}'
            row = []
            for f in fusions:
                g = groups.get((name, f), [])
                if not g:
                    row.append('not run')
                    continue
                u = fmt([x['auroc']['uncertainty'].get('name') for x in g],
                        2)
                w = fmt([x['auroc']['weight'].get('name') for x in g], 2)
                row.append(f'{u} / {w}')
            auroc_rows.append(f'| {treatment} | {r:g} | ' +
                              ' | '.join(row) + ' |')
    if fusions:
        lines += auroc_rows + ['']

    # The average and the checks are over the grid; extra ratios
    # or drops (--full, --drops 0.75) only add rows to the tables.
    grid_ratios = sorted(getattr(args, 'grid_ratios', args.ratios),
                         reverse=True)
    grid_drops = sorted(getattr(args, 'grid_drops', args.drops))
    grid = ['clean'] + [f'{t} R={r:g}' for t in args.treatments
                        for r in grid_ratios if r < 1.0] + [
        f'drop={d:g}' for d in grid_drops]
    shares = ' and '.join(f'{r:g}' for r in grid_ratios if r < 1.0)
    dropped = ' and '.join(f'{d:.0%}' for d in grid_drops)
    lines += ['## Grid average', '',
              f'Mean test Hits@1 over the {len(grid)} cells of the grid '
              f'(clean; every treatment at R = {shares or "none"}; '
              f'{dropped or "none"} of the triples dropped; a cell '
              'with several seeds counts once, by its mean), for each '
              'fusion with its defaults and each variant run on the whole '
              'grid. An average over fewer cells is not comparable and '
              'says so.', '',
              '| fusion | Hits@1 | 1-to-1 Hits@1 | cells | wall s / cell |',
              '|---|---|---|---|---|']
    averages = {}
    complete = [f for f in variants if all(groups.get((n, f)) for n in grid)]
    for f in fusions + complete:
        per = [mean([x['metrics']['hits@1'] for x in groups[(n, f)]])
               for n in grid if groups.get((n, f))]
        one = [mean([x['metrics']['one_to_one_hits@1']
                     for x in groups[(n, f)]])
               for n in grid if groups.get((n, f))]
        if len(per) == len(grid):
            averages[f] = statistics.mean(per)
        wall = mean([x['wall_time_s'] for n in grid
                     for x in groups.get((n, f), [])])
        full = '' if len(per) == len(grid) else ' (incomplete)'
        lines.append(f'| {f} | {fmt([mean(per)]) if per else "—"} | '
                     f'{fmt([mean(one)]) if per else "—"} | {len(per)} of '
                     f'{len(grid)}{full} | '
                     f'{"—" if wall is None else f"{wall:.0f}"} |')
    lines.append('')
    lines += checks(groups, averages, grid_ratios, grid) + ['']

    err = (plot(groups, fusions, args.ratios, args.drops, plot_path)
           if rs and fusions else 'no fusion with its defaults has results '
           'yet: no plot')
    lines += ['## Hits@1 against R', '']
    if err:
        lines += [f'({err}.)', '']
    else:
        rel = os.path.relpath(plot_path, os.path.dirname(os.path.abspath(
            path)))
        lines += ['Solid: with corrupted names, by R (1.0 = clean); dashed: '
                  'the same fusion without names. Last panel: Hits@1 '
                  'against the share of triples dropped.', '',
                  f'![Hits@1 against R]({rel})', '']
    lines += variant_rows(groups, variants, shared_from, grid)
    with open(path, 'w') as f:
        f.write('\n'.join(lines).rstrip('\n') + '\n')


def variant_rows(groups, variants, shared_from, grid):
    """The section of the variants: one row per cell run, grid order."""
    if not variants:
        return []
    order = grid[:1] + ['no names'] + grid[1:]
    out = ['## Variants', '',
           'Fusions with other settings (name:JSON; the JSON keys of a '
           '`TrainConfig` go to the trainer, the others to the fusion), '
           'on the cells each was run on. Test Hits@1 (CSLS) / one-to-one '
           'Hits@1, and the AUROC of u / 1 − w for corrupted names (as '
           'above). A variant that only sets `name_weight` shares the '
           '*no names* run of the variant without it.', '',
           '| variant | cell | Hits@1 / 1-to-1 | AUROC u / 1 − w |',
           '|---|---|---|---|']
    for f in variants:
        # Cells off this render's grid (other ratios) last, by name, so
        # that the order does not depend on the set's.
        cells = sorted({c for c, g in groups if g == f},
                       key=lambda c: (order.index(c) if c in order
                                      else len(order), c))
        for c in cells:
            g = groups[(c, f)]
            n = f' (n={len(g)})' if len(g) > 1 else ''
            hits = (f"{fmt([x['metrics']['hits@1'] for x in g])} / "
                    f"{fmt([x['metrics']['one_to_one_hits@1'] for x in g])}"
                    f'{n}')
            if c == 'no names' and f in shared_from:
                hits += f' (the run of `{shared_from[f]}`)'
            a = [x.get('auroc') or {} for x in g]
            u = [(x.get('uncertainty') or {}).get('name') for x in a]
            w = [(x.get('weight') or {}).get('name') for x in a]
            scored = c not in ('clean', 'no names') and not c.startswith(
                'drop')
            aur = f'{fmt(u, 2)} / {fmt(w, 2)}' if scored else ''
            out.append(f'| `{f}` | {c} | {hits} | {aur} |')
    return out + ['']


def cell_hits(groups, name, fusion):
    """Mean test Hits@1 of a cell over its seeds; None if not run."""
    return mean([x['metrics']['hits@1']
                 for x in groups.get((name, fusion), [])])


def point_rows(rows):
    """``[(label, difference)]`` as 'label: +x.y; ...' in points, and the
    smallest difference."""
    text = '; '.join(f'{label}: {100 * d:+.1f}' for label, d in rows)
    return text, min(d for _, d in rows)


def checks(groups, averages, ratios, grid):
    """Issue 13's acceptance, read off the table where the cells exist."""
    out = ['## Checks (issue 13 acceptance)', '']

    def h1(name, f):
        return cell_hits(groups, name, f)
    if all(f in averages for f in ('adc', 'concat', 'meaformer')):
        gap = averages['adc'] - max(averages['concat'],
                                    averages['meaformer'])
        out.append(f'* Grid average, `adc` − best of `concat`, '
                   f'`meaformer`: {100 * gap:+.1f} points (goal ≥ +1.0): '
                   f'{"met" if gap >= 0.01 else "not met"}.')
    else:
        out.append('* Grid average of `adc` against `concat` and '
                   '`meaformer`: not measurable yet (incomplete grid).')
    clean, cc = h1('clean', 'adc'), h1('clean', 'concat')
    if clean is not None and cc is not None:
        out.append(f'* Clean data, `adc` − `concat`: '
                   f'{100 * (clean - cc):+.1f} points (goal ≥ 0): '
                   f'{"met" if clean >= cc else "not met"}.')
    base = h1('no names', 'adc')
    rows = []
    for t in ('noise', 'wrong'):
        for r in [r for r in ratios if r < 1.0]:
            v = h1(f'{t} R={r:g}', 'adc')
            if v is not None and base is not None:
                rows.append((f'{t} R={r:g}', v - base))
    if rows:
        text, worst = point_rows(rows)
        out.append('* `adc` with corrupted names − `adc` without names '
                   f'(points; goal ≥ 0 everywhere): {text}: '
                   f'{"met" if worst >= 0 else "not met"} where measured.')
    else:
        out.append('* `adc` with noisy or wrong names against `adc` without '
                   'names: not measurable yet.')
    out += detection_bound(groups, averages, grid, ratios, base)
    g = groups.get(('noise R=0.6', 'adc'), [])
    a = mean([x['auroc']['uncertainty'].get('name') for x in g])
    if a is not None:
        out.append(f'* AUROC of u for corrupted names at R = 0.6 *noise*: '
                   f'{a:.2f} (goal ≥ 0.80): {"met" if a >= 0.8 else "not met"}.')
    else:
        out.append('* AUROC of u at R = 0.6 *noise*: not measurable yet.')
    return out


def detection_bound(groups, averages, grid, ratios, no_names):
    """What ``adc`` would score if every corrupted name were found and
    masked before the propagation, as the pipeline treats a name it knows
    to be absent (filled from the neighbours): each *noise* and *wrong*
    cell replaced by the *missing* cell at the same R. A bound under the
    defaults of the run, not for every use of a detector; the oracle of
    ``docs/fusion.md`` that drops the corrupted rows after the propagation
    gained less. The cells without a corrupted name keep their numbers."""
    def h1(name):
        return cell_hits(groups, name, 'adc')
    best = [averages[f] for f in ('concat', 'meaformer') if f in averages]
    per = []
    for name in grid:
        treatment, _, r = name.partition(' R=')
        if treatment in ('noise', 'wrong'):
            name = f'missing R={r}'
        per.append(h1(name))
    if len(best) < 2 or any(v is None for v in per):
        return ['* Corrupted names found and masked: not measurable '
                'yet (needs every cell of `adc`, its *missing* cells '
                'included, and the grid averages of `concat` and '
                '`meaformer`).']
    gap = statistics.mean(per) - max(best)
    short = ('short of the goal even if every corrupted name were found; '
             'the rest would have to come from the cells without them.')
    out = [f'* Corrupted names found and masked (each *noise* and *wrong* '
           f'cell of `adc` replaced by its *missing* cell at the same R: '
           f'the names masked before the propagation and filled from the '
           f'neighbours) would put `adc` {100 * gap:+.1f} points from the '
           f'best of `concat`, `meaformer` on the grid average (goal '
           f'≥ +1.0): '
           + ('within reach if the corrupted names were found.'
              if gap >= 0.01 else short)]
    rows = []
    for r in [r for r in ratios if r < 1.0]:
        v = h1(f'missing R={r:g}')
        if v is not None and no_names is not None:
            rows.append((f'R={r:g}', v - no_names))
    if rows:
        text, worst = point_rows(rows)
        out.append('* The same bound for the third check, `adc` with '
                   'corrupted names found and masked − `adc` without '
                   'names (points; *no names* has seed labels, the '
                   'models with names do not; goal ≥ 0): '
                   f'{text}: '
                   + ('within reach if the corrupted names were found.'
                      if worst >= 0 else 'short of the goal even if '
                      'every corrupted name were found, with these '
                      'defaults.'))
    return out


def show(value, digits=4):
    return '-' if value is None else f'{value:.{digits}f}'


def document_grid(args):
    """The grid the document shows, whatever cells this run had: the
    default ratios and drops and every treatment, with the run's own
    added, and a column per fusion of the issue's grid. So a partial run
    (``--match``, one ratio) updates its cells without taking the others
    out of the document."""
    doc = argparse.Namespace(**vars(args))
    doc.ratios = sorted(set(args.ratios) | set(DEFAULT_RATIOS),
                        reverse=True)
    doc.treatments = list(TREATMENTS)
    doc.drops = sorted(set(args.drops) | set(DEFAULT_DROPS))
    doc.fusions = list(DOC_FUSIONS) + [
        f for f in dict.fromkeys(args.fusions)
        if ':' not in f and f not in DOC_FUSIONS]
    doc.seeds, doc.extra_seeds = [0], []  # "not yet run" lists seed 0
    doc.grid_ratios, doc.grid_drops = list(DEFAULT_RATIOS), list(
        DEFAULT_DROPS)  # what the average and the checks cover
    return doc


# -- main -----------------------------------------------------------------------------
def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=os.path.join(os.environ.get(
        'RICEA_DATA_ROOT', '../shared/data'), 'dbp15k'))
    p.add_argument('--pair', default='zh_en')
    p.add_argument('--fusions', nargs='+',
                   default=['adc', 'meaformer', 'global', 'concat'],
                   help='fusion names; a variant is name:JSON kwargs, e.g. '
                   'adc:{"weights_grad": true}')
    p.add_argument('--full', action='store_true',
                   help=f'R in {list(FULL_RATIOS)} (default '
                   f'{list(DEFAULT_RATIOS)})')
    p.add_argument('--ratios', type=float, nargs='+', default=None,
                   help='keep ratios R to run (overrides --full)')
    p.add_argument('--treatments', nargs='+', default=list(TREATMENTS),
                   choices=TREATMENTS)
    p.add_argument('--drops', type=float, nargs='*',
                   default=list(DEFAULT_DROPS),
                   help='shares of triples dropped at R = 1.0')
    p.add_argument('--epochs', type=int, default=None,
                   help=f'epochs per cell (default {DEFAULT_EPOCHS}; when '
                   'rendering only: the most common count in the results)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0])
    p.add_argument('--extra-seeds', type=int, nargs='*', default=[],
                   help='more seeds for R = 0.6 noise and wrong and the '
                   '"no names" cells (the acceptance uses 1 2)')
    p.add_argument('--match', nargs='+', default=None,
                   help='run only the cells whose key contains one of these '
                   'strings, e.g. "noise R=0.6|adc|"')
    p.add_argument('--limit', type=int, default=None,
                   help='run at most this many cells')
    p.add_argument('--dry-run', action='store_true',
                   help='print the cells and exit')
    p.add_argument('--render-only', action='store_true')
    p.add_argument('--verbose', action='store_true',
                   help="print the Trainer's epoch lines")
    p.add_argument('--results', default=os.path.join(
        HERE, 'results', 'robustness.jsonl'))
    p.add_argument('--output', default=os.path.join(DOCS, 'robustness.md'))
    p.add_argument('--plot', default=None,
                   help='plot path (default: _static/robustness.png next '
                   'to --output)')
    args = p.parse_args()
    if args.ratios is None:
        args.ratios = list(FULL_RATIOS if args.full else DEFAULT_RATIOS)
    bad = [r for r in args.ratios + args.drops if not 0 <= r <= 1]
    if bad:
        p.error(f'ratios must be in [0, 1] (got {bad})')
    if 1.0 not in args.ratios:
        args.ratios.append(1.0)  # the clean cell
    for spec in args.fusions:
        parse_fusion(spec)
    plot_path = args.plot or os.path.join(
        os.path.dirname(os.path.abspath(args.output)), '_static',
        'robustness.png')
    command = 'python benchmarks/robustness.py ' + shlex.join(sys.argv[1:])
    results = done_keys(args.results)
    epochs = args.epochs or DEFAULT_EPOCHS
    jobs = [(c, f, s, job_key(args.pair, c, f, s, epochs))
            for c, f, s in jobs_for(args)]
    if args.match:
        jobs = [j for j in jobs if any(m in j[3] for m in args.match)]
    todo = [j for j in jobs if j[3] not in results]
    if args.dry_run:
        for *_, key in jobs:
            print(f"{'done ' if key in results else 'to do'}  {key}")
        print(f'{len(jobs)} cells, {len(todo)} to do')
        return
    if not args.render_only:
        args.epochs = epochs
        torch.set_num_threads(os.cpu_count() or 1)
        os.makedirs(os.path.dirname(os.path.abspath(args.results)),
                    exist_ok=True)
        if args.limit is not None:
            todo = todo[:args.limit]
        for c, f, s, key in todo:
            r = run_cell(args, c, f, s, epochs)
            r.update(key=key, machine=machine(),
                     date=time.strftime('%Y-%m-%d'), command=command)
            results[key] = r
            with open(args.results, 'a') as fh:
                fh.write(json.dumps(r) + '\n')
            a = r['auroc'] or {}
            print(f"{key}: test hits@1 {show(r['metrics']['hits@1'])} "
                  f"one-to-one {show(r['metrics']['one_to_one_hits@1'])} "
                  f"AUROC u {show((a.get('uncertainty') or {}).get('name'))}"
                  f" 1-w {show((a.get('weight') or {}).get('name'))} "
                  f"({r['wall_time_s']:.0f}s, "
                  f"{show(r['epoch_time_s'], 1)}s/epoch)", flush=True)
            render(results, document_grid(args), args.output, plot_path)
    render(results, document_grid(args), args.output, plot_path)
    print(f'wrote {args.output}')


if __name__ == '__main__':
    main()
