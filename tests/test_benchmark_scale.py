"""The pure helpers of benchmarks/scale.py (no training, no subprocess)."""
import argparse
import json

import pytest

from .conftest import load_benchmark, unload_benchmark


@pytest.fixture(scope='module')
def scale():
    yield load_benchmark('scale')
    unload_benchmark('scale')


def _row(n, run_id, epoch_time, status='ok', **kw):
    return dict(key=f'synthetic|N={n}|epochs=3', entities=n, epochs=3,
                run_id=run_id, status=status, epoch_time_s=epoch_time, **kw)


def test_parse_and_show_sizes(scale):
    assert scale.parse_size('15000') == 15_000
    assert scale.parse_size('15k') == 15_000
    assert scale.parse_size('1M') == 1_000_000
    assert scale.parse_size('1.5m') == 1_500_000
    for bad in ('0', 'ten', '1.5', '-3', '2G'):
        with pytest.raises(argparse.ArgumentTypeError):
            scale.parse_size(bad)
    assert [scale.short_size(n) for n in (300, 15_000, 100_000, 1_000_000,
                                          1_500_000, 12_345)] == \
        ['300', '15k', '100k', '1M', '1.5M', '12345']
    for n in (300, 15_000, 1_000_000, 1_500_000):
        assert scale.parse_size(scale.short_size(n)) == n


def test_per_1k_pairs_and_gib(scale):
    assert scale.per_1k_pairs(3.0, 30_000) == pytest.approx(0.1)
    assert scale.per_1k_pairs(None, 30_000) is None
    assert scale.per_1k_pairs(3.0, 0) is None
    assert scale.gib(2 ** 20) == 1.0 and scale.gib(None) is None


def test_scaling_ratio_uses_one_run(scale):
    rows = [_row(100_000, 'a', 10.0), _row(1_000_000, 'b', 50.0)]
    assert scale.scaling_ratio(rows) is None  # two runs: not comparable
    rows += [_row(100_000, 'c', 10.0), _row(1_000_000, 'c', 80.0),
             _row(100_000, 'd', 10.0),
             _row(1_000_000, 'd', None, status='train failed (rc 137)')]
    r = scale.scaling_ratio(rows)
    assert r['run_id'] == 'c'  # the latest run holding both, finished
    assert r['ratio'] == pytest.approx(0.8)


def test_parse_entity(scale):
    assert scale.parse_entity('source:12', 'source') == 12
    assert scale.parse_entity('http://x/a', 'target', {'http://x/a': 3}) == 3
    with pytest.raises(ValueError):
        scale.parse_entity('target:1', 'source')


def test_render_without_rows_says_not_run(scale):
    block = scale.render_block([], 'benchmarks/results/scale.jsonl', None)
    assert 'Not run yet' in block and '|---' not in block


def test_render_rows(scale):
    rows = [
        _row(100_000, 'r', 12.0, train_pairs=30_000,
             epoch_time_per_1k_pairs_s=0.4, train_wall_s=100.0,
             train_peak_rss_gib=2.5, align_wall_s=50.0,
             align_peak_rss_gib=3.0, val={'hits@1': 0.5, 'mrr': 0.6,
                                          'approx_queries': 10_000},
             val_approximate=True, test={'hits@1': 0.49},
             pairs_test={'precision': 0.8, 'recall': 0.8},
             pairs_1to1_test={'precision': 0.7, 'recall': 0.6},
             end_to_end_s=150.0,
             config={'channels': 300, 'sampled': True},
             machine={'text': '2 cores'}, commit='abc', date='2026-01-01',
             commands=['ricea train ...', 'ricea align ...']),
        _row(1_000_000, 'r', 60.0, train_pairs=300_000),
        _row(1_500_000, 'r', None, status='train failed (rc 137)',
             error='Killed'),
    ]
    block = scale.render_block(rows, 'x.jsonl', '_static/scale.png')
    assert '| 100k | 3 | 300, yes | 30000 | 12.00 | 0.400 |' in block
    assert '0.500 / 0.600*' in block and '0.700 / 0.600' in block
    assert '| 2.5 | 0.500 / 0.600* | 0.490 | 0.800 |' in block
    assert '1.5M **train failed (rc 137)**' in block
    assert '**0.50**' in block and 'at most linear' in block
    assert '![scale](_static/scale.png)' in block


def test_update_doc_only_between_markers(scale):
    text = '# Benchmarks\n\nOther text.\n'
    once = scale.update_doc(text, 'first')
    assert once.startswith(text.rstrip('\n'))
    assert scale.SECTION in once and 'first' in once
    more = once + '\n## Later section\n\nkept\n'
    twice = scale.update_doc(more, 'second')
    assert 'first' not in twice and 'second' in twice
    assert twice.count(scale.SECTION) == 1 and twice.endswith('kept\n')
    assert twice.replace('second', 'first') == more
    with pytest.raises(SystemExit):
        scale.update_doc('a ' + scale.START + ' b', 'x')


def test_read_rows_later_line_wins(scale, tmp_path):
    path = tmp_path / 'r.jsonl'
    path.write_text(''.join(json.dumps(r) + '\n' for r in (
        _row(300, 'a', 1.0), _row(300, 'b', 2.0))))
    rows = scale.read_rows(str(path))
    assert list(rows) == ['synthetic|N=300|epochs=3']
    assert rows['synthetic|N=300|epochs=3']['run_id'] == 'b'
    assert scale.read_rows(str(tmp_path / 'missing.jsonl')) == {}
