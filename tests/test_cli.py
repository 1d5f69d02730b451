import csv
import json
import os

import pytest
import torch

from ricea_pyg.cli import main

from .conftest import data_path

SYN = ['--dataset', 'synthetic', '--entities', '200']
FAST = ['--channels', '16', '--epochs', '3', '--batch-size', '128',
        '--eval-every', '1', '--no-progress']


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('run'))
    assert main(['train', *SYN, *FAST, '--out', out]) == 0
    return out


def test_train_writes_metrics_json(run):
    with open(os.path.join(run, 'metrics.json')) as f:
        m = json.load(f)
    assert set(m) >= {'val', 'test', 'wall_time_s', 'config'}
    assert set(m['test']) >= {'hits@1', 'hits@10', 'mrr', 'mr'}
    assert m['config']['epochs'] == 3 and m['config']['channels'] == 16


def test_evaluate(run, capsys):
    best = os.path.join(run, 'best.pt')
    assert main(['evaluate', best, '--split', 'test']) == 0
    out = json.loads(capsys.readouterr().out)
    with open(os.path.join(run, 'metrics.json')) as f:
        m = json.load(f)
    # The checkpoint reproduces the trainer's own test numbers.
    assert out['csls'] == pytest.approx(m['test'], abs=1e-9)
    assert out['cosine'] == pytest.approx(m['test_cosine'], abs=1e-9)
    assert main(['evaluate', best, '--split', 'test', '--candidates',
                 'all']) == 0
    every = json.loads(capsys.readouterr().out)
    assert every['split'] == 'test' and every['candidates'] == 'all'
    # More candidates can only push the true counterpart down.
    assert every['cosine']['mr'] >= out['cosine']['mr']
    assert every['cosine']['hits@1'] <= out['cosine']['hits@1']


def test_align_exports_every_unaligned_source(run, tmp_path):
    path = str(tmp_path / 'pairs.tsv')
    assert main(['align', os.path.join(run, 'best.pt'), '--output',
                 path]) == 0
    with open(path) as f:
        rows = list(csv.reader(f, delimiter='\t'))
    assert rows[0] == ['source', 'target', 'score', 'mutual']
    n_train = json.load(open(os.path.join(run, 'metrics.json')))[
        'train_pairs']
    assert len(rows) - 1 == 200 - n_train
    assert all(r[0].startswith('source:') and r[1].startswith('target:')
               for r in rows[1:])


def test_align_one_to_one_exports_distinct_targets(run, tmp_path):
    path = str(tmp_path / 'pairs.tsv')
    best = os.path.join(run, 'best.pt')
    assert main(['align', best, '--output', path, '--one-to-one']) == 0
    with open(path) as f:
        rows = list(csv.reader(f, delimiter='\t'))
    assert rows[0] == ['source', 'target', 'score', 'probability']
    n_train = json.load(open(os.path.join(run, 'metrics.json')))[
        'train_pairs']
    # Both KGs have the same unaligned count: a full matching.
    assert len(rows) - 1 == 200 - n_train
    assert len({r[1] for r in rows[1:]}) == len(rows) - 1
    assert main(['align', best, '--output', path, '--one-to-one',
                 '--threshold', '2.0']) == 0  # above any cosine
    with open(path) as f:
        assert len(list(csv.reader(f, delimiter='\t'))) == 1
    assert main(['align', best, '--output', path, '--threshold', '0.5']) == 2


@pytest.fixture(scope='module')
def adc_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('adc_run'))
    assert main(['train', *SYN, *FAST, '--fusion', 'adc', '--out', out]) == 0
    return out


def explain(run, folder):
    assert main(['explain', os.path.join(run, 'best.pt'), '--out',
                 folder]) == 0
    with open(os.path.join(folder, 'modality_weights.csv')) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 400
    weights = [float(v) for k, v in rows[0].items() if k.startswith('w_')]
    assert sum(weights) == pytest.approx(1.0, abs=1e-4)
    return rows, set(os.listdir(folder))


def test_explain_writes_csv_and_plots(adc_run, tmp_path):
    rows, files = explain(adc_run, str(tmp_path / 'explain'))
    assert {'modality_weights.csv', 'weights.png', 'uncertainty.png'} <= files
    assert 'u_graph' in rows[0]


def test_version_2_adc_checkpoint_keeps_temperature_1(adc_run, tmp_path):
    # Saved before T = 4 became ADCFusion's default, it trained with T = 1:
    # the same logits b * RC over a 4 times smaller T.
    from ricea_pyg.io import atomic_save
    state = torch.load(os.path.join(adc_run, 'best.pt'), weights_only=True)
    assert state['format_version'] == 4
    assert 'temperature' not in state['config']['fusion_kwargs']
    atomic_save({**state, 'format_version': 2},
                os.path.join(adc_run, 'best_v2.pt'))

    def log_weights(name, folder):
        assert main(['explain', os.path.join(adc_run, name), '--out',
                     str(tmp_path / folder)]) == 0
        with open(tmp_path / folder / 'modality_weights.csv') as f:
            rows = list(csv.DictReader(f))
        w = torch.tensor([[float(v) for k, v in r.items()
                           if k.startswith('w_')] for r in rows],
                         dtype=torch.float64)
        present = w > 0  # centred over the present modalities
        logw = w.clamp_min(1e-300).log() * present
        mean = logw.sum(1, keepdim=True) / present.sum(1, keepdim=True)
        return (logw - mean) * present

    now, old = log_weights('best.pt', 'now'), log_weights('best_v2.pt', 'old')
    assert torch.allclose(old, 4 * now, atol=1e-3)
    assert not torch.allclose(old, now, atol=1e-2)


def test_resuming_a_version_2_adc_run_names_the_temperature(adc_run,
                                                            tmp_path, capsys):
    import shutil

    from ricea_pyg.io import atomic_save
    out = str(tmp_path / 'old_run')
    shutil.copytree(adc_run, out)
    if os.path.exists(os.path.join(out, '.lock')):
        os.remove(os.path.join(out, '.lock'))
    last = os.path.join(out, 'last.pt')
    atomic_save({**torch.load(last, weights_only=True),
                 'format_version': 2}, last)
    argv = ['train', *SYN, *FAST, '--fusion', 'adc', '--resume', '--out',
            out]
    assert main(argv) == 2
    assert ("fusion_kwargs: checkpoint {'temperature': 1.0, "
            "'transformer_input_grad': True}, now {}"
            in capsys.readouterr().err)
    # Naming the defaults it trained with resumes it.
    assert main([*argv, '--fusion-kwargs', '{"temperature": 1.0, '
                 '"transformer_input_grad": true}']) == 0


def test_explain_without_uncertainty_writes_weights_only(run, tmp_path):
    # The default fusion (concat) has weights but no uncertainty.
    with open(os.path.join(run, 'metrics.json')) as f:
        assert json.load(f)['config']['fusion'] == 'concat'
    rows, files = explain(run, str(tmp_path / 'explain'))
    assert {'modality_weights.csv', 'weights.png'} <= files
    assert 'uncertainty.png' not in files and 'u_graph' not in rows[0]


@pytest.mark.parametrize('argv, message', [
    (['train', '--root', '/no/such/dir'], 'dataset folder not found'),
    (['train', *SYN, '--epochs', '0'], 'epochs must be at least 1'),
    (['train', *SYN, '--modalities', 'graph,video'], "'video'"),
    (['evaluate', '/no/such/best.pt', *SYN], 'checkpoint not found'),
])
def test_errors_exit_2_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err


def test_bad_config_key_exits_2(tmp_path, capsys):
    cfg = tmp_path / 'c.json'
    cfg.write_text('{"learning_rate": 0.1}')
    assert main(['train', *SYN, '--config', str(cfg)]) == 2
    assert 'learning_rate' in capsys.readouterr().err


def test_missing_names_file_exits_2(tmp_path, capsys):
    src = data_path('dbp15k', 'zh_en')
    root = tmp_path / 'dbp15k'
    os.makedirs(root)
    os.symlink(src, root / 'zh_en')  # no translated_ent_name/
    assert main(['train', '--root', str(root), '--pair', 'zh_en']) == 2
    err = capsys.readouterr().err
    assert 'dbp_zh_en.json' in err and '--no-names' in err


@pytest.mark.parametrize('flag', ['--progress', '--no-progress'])
def test_no_progress_prints_no_bar(flag, tmp_path, capfd):
    argv = ['train', *SYN, '--channels', '16', '--epochs', '2',
            '--batch-size', '128', '--iterative', '--iter-epochs', '2',
            '--iter-every', '1', '--iter-add-every', '1', flag]
    assert main(argv) == 0
    err = capfd.readouterr().err
    bars = [line for line in err.replace('\r', '\n').splitlines()
            if '%|' in line or 'it/s' in line or 's/it' in line]
    if flag == '--progress':
        assert bars  # the same run does draw bars when asked
    else:
        assert bars == []


@pytest.mark.parametrize('mode,weights', [
    ('fused', ['0.3']), ('beside', ['0.3']),
    ('beside', ['0.05', '0.5', '0.95'])])  # chosen on validation
def test_structure_only_model_round_trips_its_labels(tmp_path, capsys, mode,
                                                     weights):
    # Without names the seed-label modality is on by default; evaluate
    # must rebuild the same labels (and use the g chosen on validation)
    # to reproduce the trainer's numbers. Self-training adds pairs, which
    # become seeds of the labels.
    out = str(tmp_path / 'run')
    assert main(['train', *SYN, *FAST, '--modalities', 'graph,rel',
                 '--iterative', '--iter-epochs', '3', '--iter-every', '1',
                 '--iter-add-every', '1', '--iter-persist', '1',
                 '--label-mode', mode, '--label-weight', *weights,
                 '--out', out]) == 0
    best = torch.load(os.path.join(out, 'best.pt'), weights_only=False)
    assert best['modalities'] == ['graph', 'rel', 'labels']
    assert best['config']['label_mode'] == mode
    # Beside the fusion the labels have no projection.
    assert any(k.startswith('projection.lins.labels')
               for k in best['model']) == (mode == 'fused')
    last = torch.load(os.path.join(out, 'last.pt'), weights_only=False)
    assert last['train_pairs'].size(1) > 60  # 30 % of 200, plus added
    # The selected model is tested on the labels of its own epoch's seeds.
    assert best['train_pairs'].size(1) <= last['train_pairs'].size(1)
    with open(os.path.join(out, 'metrics.json')) as f:
        m = json.load(f)
    if mode == 'beside':
        assert best['label_weight'] == m['label_weight']
        assert m['label_weight'] == (0.3 if len(weights) == 1 else 0.95)
    capsys.readouterr()
    assert main(['evaluate', os.path.join(out, 'best.pt'), '--split',
                 'test']) == 0
    got = json.loads(capsys.readouterr().out)
    assert got['csls'] == pytest.approx(m['test'], abs=1e-9)


def test_label_rounds_round_trip(tmp_path, capsys):
    # The selected round's pseudo-pairs are in best.pt's seed labels, so
    # evaluate rebuilds the labels the test was scored with.
    out = str(tmp_path / 'run')
    assert main(['train', *SYN, *FAST, '--modalities', 'graph,rel',
                 '--label-mode', 'beside', '--label-rounds', '2',
                 '--out', out]) == 0
    with open(os.path.join(out, 'metrics.json')) as f:
        m = json.load(f)
    best = torch.load(os.path.join(out, 'best.pt'), weights_only=False)
    assert m['label_round'] == best['label_round'] >= 1  # a round won
    added = m['label_rounds'][m['label_round'] - 1]['added']
    assert best['train_pairs'].size(1) == 60 + added  # 30 % of 200
    capsys.readouterr()
    assert main(['evaluate', os.path.join(out, 'best.pt'), '--split',
                 'test']) == 0
    got = json.loads(capsys.readouterr().out)
    assert got['csls'] == pytest.approx(m['test'], abs=1e-9)


def test_recipe_is_the_base_of_the_flags(tmp_path):
    out = str(tmp_path / 'run')
    assert main(['train', *SYN, *FAST, '--recipe', 'structure-only',
                 '--channels', '24', '--label-rounds', '1', '--out',
                 out]) == 0
    with open(os.path.join(out, 'metrics.json')) as f:
        config = json.load(f)['config']
    assert config['structure_encoder'] == 'relational'
    assert config['joint_loss'] == 'dual_amn'
    assert config['label_mode'] == 'beside'
    assert config['epochs'] == 3 and config['label_rounds'] == 1  # flags
    cfg = tmp_path / 'c.json'
    cfg.write_text('{}')
    assert main(['train', *SYN, '--recipe', 'structure-only', '--config',
                 str(cfg), '--out', str(tmp_path / 'other')]) == 2


@pytest.mark.parametrize('weights,expected', [(['0.5'], 0.5),
                                              (['1', '0.2'], [1.0, 0.2])])
def test_name_weight_flag(weights, expected):
    from ricea_pyg.cli import _config, build_parser
    args = build_parser().parse_args(['train', *SYN, '--name-weight',
                                      *weights, '--out', 'unused'])
    assert _config(args).name_weight == expected
