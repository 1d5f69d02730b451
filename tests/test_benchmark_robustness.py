"""benchmarks/robustness.py's renderer (no training)."""
import pytest

from .conftest import load_benchmark, unload_benchmark


@pytest.fixture(scope='module')
def robustness():
    yield load_benchmark('robustness')
    unload_benchmark('robustness')


def row(hits, seed=0, u=None, w=None):
    return {'metrics': {'hits@1': hits, 'one_to_one_hits@1': hits + 0.1},
            'seed': seed,
            'auroc': {'uncertainty': {'name': u}, 'weight': {'name': w}}}


def test_variant_rows_list_only_the_cells_run(robustness):
    v, base = 'adc:{"name_weight": 1.0}', 'adc'
    groups = {
        ('wrong R=0.6', v): [row(0.6, 0, 0.5, 0.4), row(0.7, 1, 0.7, 0.6)],
        ('clean', v): [row(0.9)],
        ('no names', v): [row(0.5)],
        ('clean', base): [row(0.8)],
        # Cells off this grid (another render's ratios) come last, by name.
        ('wrong R=0.2', v): [row(0.4)],
        ('noise R=0.2', v): [row(0.3)],
    }
    grid = ['clean', 'noise R=0.6', 'wrong R=0.6', 'drop=0.25']
    lines = robustness.variant_rows(groups, [v], {v: base}, grid)
    body = [x for x in lines if x.startswith(f'| `{v}`')]
    # Grid order (clean, no names, then the grid), each cell once; the
    # shared no-names run is named; AUROCs only where names are corrupted.
    assert body == [
        f'| `{v}` | clean | 0.900 / 1.000 |  |',
        f'| `{v}` | no names | 0.500 / 0.600 (the run of `{base}`) |  |',
        f'| `{v}` | wrong R=0.6 | 0.650 ± 0.071 / 0.750 ± 0.071 (n=2) | '
        f'0.60 ± 0.14 / 0.50 ± 0.14 |',
        f'| `{v}` | noise R=0.2 | 0.300 / 0.400 | — / — |',
        f'| `{v}` | wrong R=0.2 | 0.400 / 0.500 | — / — |',
    ]
    assert robustness.variant_rows(groups, [], {}, grid) == []


def test_document_grid_keeps_the_whole_grid_after_a_partial_run(robustness):
    import argparse
    args = argparse.Namespace(
        ratios=[0.4, 1.0], treatments=['noise'], drops=[0.75],
        fusions=['adc:{"temperature": 1.0}', 'eva', 'concat'], seeds=[1],
        extra_seeds=[2], pair='zh_en', epochs=None)
    doc = robustness.document_grid(args)
    assert doc.ratios == [1.0, 0.6, 0.4, 0.2]
    assert doc.treatments == ['missing', 'noise', 'wrong']
    assert doc.drops == [0.25, 0.5, 0.75]
    # The four fusions, then another default layer; no variant.
    assert doc.fusions == ['concat', 'meaformer', 'global', 'adc', 'eva']
    assert (doc.seeds, doc.extra_seeds) == ([0], [])
    # The average and the checks stay on the grid.
    assert (doc.grid_ratios, doc.grid_drops) == ([1.0, 0.6, 0.2],
                                                 [0.25, 0.5])
    assert args.ratios == [0.4, 1.0] and args.seeds == [1]  # a copy


def bound_groups(noise, missing):
    return {('clean', 'adc'): [row(0.9)],
            ('noise R=0.6', 'adc'): [row(noise)],
            ('wrong R=0.6', 'adc'): [row(noise - 0.1)],
            ('missing R=0.6', 'adc'): [row(missing)],
            ('drop=0.5', 'adc'): [row(0.7)]}


def test_detection_bound(robustness):
    grid = ['clean', 'missing R=0.6', 'noise R=0.6', 'wrong R=0.6',
            'drop=0.5']
    averages = {'concat': 0.75, 'meaformer': 0.70}
    # noise and wrong replaced by missing: (0.9 + 3 * 0.8 + 0.7) / 5 = 0.8,
    # +5 points over the best (concat).
    lines = robustness.detection_bound(bound_groups(0.5, 0.8), averages,
                                       grid, [1.0, 0.6], 0.75)
    assert '+5.0 points' in lines[0] and 'within reach' in lines[0]
    assert lines[1].endswith('R=0.6: +5.0: within reach if the corrupted '
                             'names were found.')
    # A missing cell below the rest: (0.9 + 3 * 0.6 + 0.7) / 5 = 0.68.
    lines = robustness.detection_bound(bound_groups(0.8, 0.6), averages,
                                       grid, [1.0, 0.6], 0.75)
    assert '-7.0 points' in lines[0] and 'short of the goal' in lines[0]
    assert 'R=0.6: -15.0: short of the goal' in lines[1]
    lines = robustness.detection_bound(bound_groups(0.8, 0.6), averages,
                                       grid, [1.0, 0.6], None)
    assert len(lines) == 1  # no *no names* run, no third-check row
    groups = bound_groups(0.5, 0.8)
    del groups[('missing R=0.6', 'adc')]
    assert 'not measurable' in robustness.detection_bound(
        groups, averages, grid, [1.0, 0.6], 0.75)[0]
    assert 'not measurable' in robustness.detection_bound(
        bound_groups(0.5, 0.8), {'concat': 0.7}, grid, [1.0, 0.6], 0.75)[0]


def test_a_partial_render_keeps_the_grid_and_its_average(robustness,
                                                         tmp_path):
    import argparse
    pytest.importorskip('matplotlib')
    cells = (['clean', 'no names', 'drop=0.25', 'drop=0.5'] +
             [f'{t} R={r:g}' for t in ('missing', 'noise', 'wrong')
              for r in (0.6, 0.2)])
    hits = {'concat': 0.7, 'meaformer': 0.6, 'global': 0.7, 'adc': 0.65}
    results = {}
    for f, h in hits.items():
        for c in cells + (['noise R=0.4'] if f == 'concat' else []):
            r = row(h)
            r.update(pair='zh_en', epochs=10, cell=c, fusion=f,
                     wall_time_s=1.0, machine='test', command='cmd')
            results[f'{c}|{f}'] = r
    # A run of one off-grid cell: R = 0.4 with noise, concat only.
    args = argparse.Namespace(
        ratios=[0.4, 1.0], treatments=['noise'], drops=[], fusions=['concat'],
        seeds=[0], extra_seeds=[], pair='zh_en', epochs=10)
    out = tmp_path / 'robustness.md'
    robustness.render(results, robustness.document_grid(args), str(out),
                      str(tmp_path / 'plot.png'))
    text = out.read_text()
    assert '| 0.4 | 0.700 / 0.800 |' in text  # the run's cell is shown
    for t in ('Missing', 'Noise', 'Wrong'):
        assert f'## {t} names' in text
    assert '| 25% | 0.700 / 0.800 |' in text
    # The average stays over the nine cells of the grid.
    assert '| concat | 0.700 | 0.800 | 9 of 9 | 1 |' in text
    assert '| global | 0.700 | 0.800 | 9 of 9 | 1 |' in text
    assert '`meaformer`: -5.0 points (goal ≥ +1.0): not met.' in text
