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
