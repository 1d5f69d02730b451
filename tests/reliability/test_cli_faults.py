"""A checkpoint owns its data spec; nothing clobbers a run (issue 16)."""
import fcntl
import json
import os
import pathlib
import shutil

import pytest

from ricea_pyg.cli import main
from tests.reliability.test_cache import _write_pair

SYN = ['--dataset', 'synthetic', '--entities', '200']
FAST = ['--channels', '16', '--epochs', '2', '--batch-size', '128',
        '--no-progress']


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('run'))
    assert main(['train', *SYN, *FAST, '--out', out]) == 0
    return out


@pytest.fixture
def copy(run, tmp_path):
    """A copy of the trained run that a test may change."""
    out = str(tmp_path / 'run')
    shutil.copytree(run, out)
    os.remove(os.path.join(out, '.lock'))
    return out


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def _one_line_error(capsys, *parts):
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    lines = [line for line in err.splitlines() if 'error:' in line]
    assert len(lines) == 1, err
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize('command', ['evaluate', 'align', 'explain'])
def test_conflicting_data_flag_is_refused(run, command, tmp_path, capsys):
    argv = [command, os.path.join(run, 'best.pt'), '--split-seed', '7']
    argv += {'evaluate': [], 'align': ['--output', str(tmp_path / 'p.tsv')],
             'explain': ['--out', str(tmp_path / 'x')]}[command]
    assert main(argv) == 2
    _one_line_error(capsys, "--split-seed 7 conflicts with the checkpoint's "
                    'split_seed 0', os.path.join(run, 'run.json'),
                    '--other-data')
    assert not os.path.exists(tmp_path / 'p.tsv')


def test_conflicting_boolean_and_dataset_flags_are_refused(run, capsys):
    best = os.path.join(run, 'best.pt')
    assert main(['evaluate', best, '--no-names']) == 2
    _one_line_error(capsys, "--no-names conflicts with the checkpoint's "
                    'no_names False')
    assert main(['evaluate', best, '--dataset', 'dbp15k']) == 2
    _one_line_error(capsys, "--dataset dbp15k conflicts with the "
                    "checkpoint's dataset synthetic")


def test_agreeing_data_flags_are_accepted(run, capsys):
    best = os.path.join(run, 'best.pt')
    assert main(['evaluate', best]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(['evaluate', best, *SYN, '--split-seed', '0']) == 0
    same = json.loads(capsys.readouterr().out)
    assert same == plain and 'other_data' not in same


def test_other_data_lets_flags_override_and_says_so(run, capsys):
    best = os.path.join(run, 'best.pt')
    assert main(['evaluate', best]) == 0
    own = json.loads(capsys.readouterr().out)
    assert main(['evaluate', best, '--split-seed', '7', '--other-data']) == 0
    captured = capsys.readouterr()
    other = json.loads(captured.out)
    assert other['other_data'] == {'split_seed': [0, 7]}
    assert '--other-data' in captured.err and 'split_seed 0 -> 7' in \
        captured.err
    # Another split of the same entities: other test pairs are scored.
    assert other['csls'] != own['csls']


def test_train_into_a_run_is_refused(copy, capsys):
    before = {n: _read(os.path.join(copy, n))
              for n in ('run.json', 'last.pt', 'best.pt')}
    assert main(['train', *SYN, *FAST, '--split-seed', '3',
                 '--out', copy]) == 2
    _one_line_error(capsys, copy, 'already holds a run', '--resume',
                    '--overwrite')
    for name, data in before.items():
        assert _read(os.path.join(copy, name)) == data


@pytest.mark.parametrize('flags, message', [
    (['--split-seed', '5'], "--split-seed 5 conflicts with the checkpoint's "
     'split_seed 0'),
    (['--entities', '300'], "--entities 300 conflicts with the checkpoint's "
     'entities 200'),
    (['--channels', '32'], 'different settings (channels: checkpoint 16, '
     'now 32)'),
])
def test_refused_resume_leaves_run_json_unchanged(copy, flags, message,
                                                  capsys):
    run_json = os.path.join(copy, 'run.json')
    before = _read(run_json)
    argv = ['train', *FAST, '--resume', '--out', copy]
    if flags[0] == '--channels':  # the config check, after the data check
        argv = ['train', *SYN, *FAST[2:], *flags, '--resume', '--out', copy]
    else:
        argv += flags
    assert main(argv) == 2
    _one_line_error(capsys, message)
    assert _read(run_json) == before


def test_resume_takes_the_data_from_run_json(copy):
    # No data flags: without run.json this would be DBP15K (and fail).
    before = _read(os.path.join(copy, 'run.json'))
    assert main(['train', *FAST, '--resume', '--out', copy]) == 0
    assert _read(os.path.join(copy, 'run.json')) == before
    assert main(['train', *FAST, *SYN, '--split-seed', '0', '--resume',
                 '--out', copy]) == 0


def test_overwrite_replaces_the_run(copy, capsys):
    assert main(['train', *SYN, *FAST, '--split-seed', '3', '--overwrite',
                 '--resume', '--out', copy]) == 2
    _one_line_error(capsys, '--resume and --overwrite')
    assert main(['train', *SYN, *FAST, '--split-seed', '3', '--epochs', '1',
                 '--overwrite', '--out', copy]) == 0
    with open(os.path.join(copy, 'run.json')) as f:
        saved = json.load(f)
    assert saved['data']['split_seed'] == 3
    assert saved['config']['epochs'] == 1


def test_a_second_training_in_one_folder_is_refused(tmp_path, capsys):
    out = str(tmp_path / 'busy')
    os.makedirs(out)
    with open(os.path.join(out, '.lock'), 'a') as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(['train', *SYN, *FAST, '--out', out]) == 2
        _one_line_error(capsys, out, 'another training')
        assert not os.path.exists(os.path.join(out, 'run.json'))
    # Released: the folder trains.
    assert main(['train', *SYN, *FAST, '--out', out]) == 0


# -- each dataset's own fields; data identified by content -------------------
@pytest.mark.parametrize('argv, message', [
    (['train', *SYN, '--root', '/x'], '--root applies to --dataset '),
    (['train', *SYN, '--fold', '2'], '--fold applies to --dataset openea '
     'only (not synthetic)'),
    (['train', '--entities', '50'], '--entities applies to --dataset '
     'synthetic only (not dbp15k)'),
    (['train', '--dataset', 'openea', '--root', '/x', '--no-names'],
     '--no-names applies to --dataset dbp15k, fbdb15k, files, synthetic only '
     '(not openea)'),
    (['train', *SYN, '--image-features', '/x.npy'],
     '--image-features is not supported for --dataset synthetic'),
])
def test_a_flag_the_dataset_does_not_read_is_refused(argv, message, tmp_path,
                                                     capsys):
    out = str(tmp_path / 'out')
    assert main([*argv, *FAST, '--out', out]) == 2
    _one_line_error(capsys, message, 'drop it' if 'image' not in message
                    else 'use dbp15k')
    assert not os.path.exists(os.path.join(out, 'run.json'))


def test_evaluate_refuses_a_flag_the_dataset_does_not_read(run, capsys):
    assert main(['evaluate', os.path.join(run, 'best.pt'), '--root',
                 '/x']) == 2
    _one_line_error(capsys, '--root applies to --dataset', 'not synthetic')


def test_run_json_holds_the_dataset_fields_and_file_digests(run):
    with open(os.path.join(run, 'run.json')) as f:
        data = json.load(f)['data']
    assert data == {'dataset': 'synthetic', 'entities': 200,
                    'no_names': False, 'split_seed': 0, 'files': {}}


def test_old_run_json_with_every_key_still_loads(run, copy, capsys):
    assert main(['evaluate', os.path.join(run, 'best.pt')]) == 0
    own = json.loads(capsys.readouterr().out)
    path = os.path.join(copy, 'run.json')
    with open(path) as f:
        saved = json.load(f)
    saved['data'] = dict(dataset='synthetic', root=None, pair='zh_en',
                         no_names=False, split_seed=0, entities=200,
                         download=False, fold=None, image_features=None,
                         image_ids=None)  # no 'files' either
    with open(path, 'w') as f:
        json.dump(saved, f)
    best = os.path.join(copy, 'best.pt')
    assert main(['evaluate', best]) == 0
    assert json.loads(capsys.readouterr().out) == own
    assert main(['evaluate', best, '--split-seed', '4']) == 2
    _one_line_error(capsys, "--split-seed 4 conflicts with the checkpoint's "
                    'split_seed 0')


def _dbp_folder(path, n=60):
    """A DBP15K-layout pair folder (xx_en) with image features."""
    import numpy as np
    _write_pair(pathlib.Path(path), 'xx_en', n)
    rng = np.random.default_rng(0)
    np.save(os.path.join(path, 'img.npy'),
            rng.standard_normal((2 * n, 8)).astype(np.float32))
    with open(os.path.join(path, 'ids.txt'), 'w') as f:
        f.write(''.join(f'{i}\n' for i in range(2 * n)))
    return path


def _dbp_flags(path):
    return ['--dataset', 'dbp15k', '--pair', 'xx_en', '--no-names',
            '--root', path, '--image-features', os.path.join(path, 'img.npy'),
            '--image-ids', os.path.join(path, 'ids.txt')]


@pytest.fixture(scope='module')
def dbp_run(tmp_path_factory):
    """A run trained on a small DBP15K-layout folder with image features."""
    base = tmp_path_factory.mktemp('dbp')
    data = _dbp_folder(str(base / 'data'))
    out = str(base / 'run')
    assert main(['train', *_dbp_flags(data), *FAST, '--out', out]) == 0
    return data, out


@pytest.fixture
def moved(dbp_run, tmp_path):
    """A copy of the run's data folder elsewhere."""
    dest = str(tmp_path / 'moved')
    shutil.copytree(dbp_run[0], dest)
    return dest


def test_run_json_records_file_digests(dbp_run):
    from ricea_pyg.datasets.download import sha256_file
    data, out = dbp_run
    with open(os.path.join(out, 'run.json')) as f:
        saved = json.load(f)['data']
    assert set(saved) == {'dataset', 'root', 'pair', 'no_names',
                          'split_seed', 'download', 'image_features',
                          'image_ids', 'files'}
    assert saved['root'] == os.path.abspath(data)
    files = saved['files']
    assert {'xx_en/triples_1', 'xx_en/ref_ent_ids', 'option:image_features',
            'option:image_ids'} <= set(files)
    assert files['xx_en/triples_1'] == sha256_file(
        os.path.join(data, 'xx_en', 'triples_1'))
    assert files['option:image_features'] == sha256_file(
        os.path.join(data, 'img.npy'))


def test_moved_data_folder_is_the_same_data(dbp_run, moved, capsys):
    best = os.path.join(dbp_run[1], 'best.pt')
    assert main(['evaluate', best]) == 0
    own = json.loads(capsys.readouterr().out)
    # --root and the image files at another place, with the same contents
    assert main(['evaluate', best, *_dbp_flags(moved)]) == 0
    there = json.loads(capsys.readouterr().out)
    assert there == own and 'other_data' not in there


@pytest.mark.parametrize('edit, flag, shown', [
    ('xx_en/triples_1', '--root', 'xx_en/triples_1'),
    ('img.npy', '--image-features', 'img.npy'),
])
def test_moved_flag_with_other_content_is_refused(dbp_run, moved, edit, flag,
                                                  shown, capsys, tmp_path):
    data, out = dbp_run
    path = os.path.join(moved, edit)
    blob = _read(path)
    with open(path, 'wb') as f:  # same size, other bytes
        f.write(blob[:-2] + bytes([blob[-2] ^ 1]) + blob[-1:])
    best = os.path.join(out, 'best.pt')
    old = os.path.join(data, 'img.npy') if flag != '--root' else data
    new = os.path.join(moved, 'img.npy') if flag != '--root' else moved
    assert main(['evaluate', best, *_dbp_flags(moved)]) == 2
    _one_line_error(capsys, f'{flag} {new} ', old, f'{shown} differs',
                    '--other-data')
    assert main(['align', best, *_dbp_flags(moved), '--output',
                 str(tmp_path / 'p.tsv')]) == 2
    _one_line_error(capsys, flag, 'using the model on other data')
    assert not os.path.exists(tmp_path / 'p.tsv')
    assert main(['evaluate', best, *_dbp_flags(moved), '--other-data']) == 0
    capsys.readouterr()


@pytest.fixture
def dbp_copy(dbp_run, moved, tmp_path):
    """A copy of the run whose run.json points at the copied data."""
    out = str(tmp_path / 'run')
    shutil.copytree(dbp_run[1], out)
    os.remove(os.path.join(out, '.lock'))
    path = os.path.join(out, 'run.json')
    with open(path) as f:
        saved = json.load(f)
    saved['data'].update(root=moved, image_features=os.path.join(
        moved, 'img.npy'), image_ids=os.path.join(moved, 'ids.txt'))
    with open(path, 'w') as f:
        json.dump(saved, f, indent=2)
    return out


def test_saved_data_changed_since_training_is_refused(dbp_copy, moved,
                                                      capsys):
    best = os.path.join(dbp_copy, 'best.pt')
    assert main(['evaluate', best]) == 0  # the data as trained
    capsys.readouterr()
    path = os.path.join(moved, 'xx_en', 'ref_ent_ids')
    with open(path) as f:
        lines = f.readlines()
    with open(path, 'w') as f:
        f.writelines(lines[:-5])
    assert main(['evaluate', best]) == 2
    _one_line_error(capsys, path, 'changed since the checkpoint was trained',
                    'pass --other-data to evaluate on the changed data')
    assert main(['evaluate', best, '--other-data']) == 0
    capsys.readouterr()
    # train --resume refuses it too, and leaves run.json as it was
    before = _read(os.path.join(dbp_copy, 'run.json'))
    assert main(['train', *FAST, '--resume', '--out', dbp_copy]) == 2
    _one_line_error(capsys, path, 'changed since the checkpoint',
                    'new --out folder')
    assert _read(os.path.join(dbp_copy, 'run.json')) == before


def test_resume_accepts_a_moved_folder_and_refuses_other_data(
        dbp_run, moved, dbp_copy, tmp_path, capsys):
    # dbp_copy's run.json names `moved`; resume it from the original place.
    data = dbp_run[0]
    assert main(['train', *FAST, '--resume', '--out', dbp_copy,
                 *_dbp_flags(data)]) == 0
    with open(os.path.join(dbp_copy, 'run.json')) as f:
        assert json.load(f)['data']['root'] == os.path.abspath(data)
    other = str(tmp_path / 'other')
    _dbp_folder(other, n=50)
    before = _read(os.path.join(dbp_copy, 'run.json'))
    assert main(['train', *FAST, '--resume', '--out', dbp_copy, '--root',
                 other]) == 2
    _one_line_error(capsys, f'--root {other} ', data, 'differs',
                    'resuming on other data needs a new --out folder')
    assert _read(os.path.join(dbp_copy, 'run.json')) == before


def test_run_json_without_digests_skips_the_content_check(dbp_copy, moved,
                                                          dbp_run, capsys):
    path = os.path.join(dbp_copy, 'run.json')
    with open(path) as f:
        saved = json.load(f)
    del saved['data']['files']
    with open(path, 'w') as f:
        json.dump(saved, f)
    with open(os.path.join(moved, 'xx_en', 'triples_1'), 'a') as f:
        f.write('0\t2\t5\n')
    best = os.path.join(dbp_copy, 'best.pt')
    assert main(['evaluate', best]) == 0  # not checked: nothing recorded
    capsys.readouterr()
    # A path flag cannot be checked by content either: refused as before.
    assert main(['evaluate', best, '--root', dbp_run[0]]) == 2
    _one_line_error(capsys, f'--root {dbp_run[0]} conflicts')


def test_each_file_is_hashed_once_per_command(dbp_run, moved, monkeypatch,
                                              capsys):
    from ricea_pyg.datasets import base
    calls = []
    real = base.sha256_file
    monkeypatch.setattr(base, 'sha256_file',
                        lambda p: calls.append(p) or real(p))
    best = os.path.join(dbp_run[1], 'best.pt')
    # checked before loading (at the moved place), then loaded from there
    assert main(['evaluate', best, *_dbp_flags(moved)]) == 0
    capsys.readouterr()
    assert calls and len(calls) == len(set(calls))
    with open(os.path.join(dbp_run[1], 'run.json')) as f:
        assert len(calls) == len(json.load(f)['data']['files'])
