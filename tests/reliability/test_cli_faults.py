"""A checkpoint owns its data spec; nothing clobbers a run (issue 16)."""
import fcntl
import json
import os
import shutil

import pytest

from ricea_pyg.cli import main

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
    (['--channels', '32'], "different settings (['channels'])"),
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
