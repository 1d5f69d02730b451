"""A full disk (a file-size limit, RLIMIT_FSIZE, with SIGXFSZ ignored so a
write fails with EFBIG instead of killing the process) leaves the previous
file or none, and no temporary file (issue 16, item 8).

Each limited write runs in a subprocess so the limit never reaches pytest.
"""
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(signal, 'SIGXFSZ') or sys.platform == 'win32',
    reason='needs POSIX RLIMIT_FSIZE and SIGXFSZ')

LIMIT = 4096  # bytes a process may write to one file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

_PRELUDE = f"""
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({LIMIT}, {LIMIT}))
"""


def _limited():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def _run_limited(code):
    """Runs :obj:`code` under the size limit; returns its JSON report."""
    out = subprocess.run([sys.executable, '-c', _PRELUDE + textwrap.dedent(
        code)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _leftovers(folder, keep):
    return sorted(set(os.listdir(folder)) - set(keep))


def test_limit_is_real(tmp_path):
    """The harness itself: a plain write past the limit fails with EFBIG
    (else the tests below would prove nothing)."""
    path = tmp_path / 'plain.bin'
    report = _run_limited(f"""
        import errno, json
        try:
            with open({str(path)!r}, 'wb') as f:
                f.write(b'x' * {4 * LIMIT})
            print(json.dumps({{'raised': None}}))
        except OSError as e:
            print(json.dumps({{'raised': e.errno == errno.EFBIG}}))
    """)
    assert report['raised'] is True


@pytest.mark.parametrize('previous', [True, False])
def test_atomic_save_checkpoint_sized(tmp_path, previous):
    path = tmp_path / 'last.pt'
    if previous:
        import torch
        torch.save({'epoch': 1}, str(path))
        before = path.read_bytes()
    report = _run_limited(f"""
        import errno, json, torch
        from ricea_pyg.io import atomic_save
        state = {{'model': {{'w': torch.randn(64, 64)}}, 'epoch': 2,
                  'optimizer': {{'m': torch.zeros(64, 64)}}}}
        try:
            atomic_save(state, {str(path)!r})
            print(json.dumps({{'raised': None}}))
        except Exception as e:
            print(json.dumps({{'raised': type(e).__name__,
                              'oserror': isinstance(e, OSError),
                              'efbig': getattr(e, 'errno', None) ==
                              errno.EFBIG, 'message': str(e),
                              'chained': e.__cause__ is not None}}))
    """)
    # torch.save's zip writer turns the EFBIG into a RuntimeError; atomic_save
    # raises it again as the OSError it is, naming the file.
    assert report['oserror'] is True, report
    assert report['efbig'] is True, report
    assert str(path) in report['message'] and '\n' not in report['message']
    if previous:
        assert path.read_bytes() == before
    else:
        assert not path.exists()
    assert _leftovers(tmp_path, ['last.pt']) == []


def test_atomic_write_text(tmp_path):
    """A log / metrics file written as text: the previous one survives."""
    path = tmp_path / 'metrics.jsonl'
    path.write_text('{"epoch": 1, "mrr": 0.5}\n')
    report = _run_limited(f"""
        import json
        from ricea_pyg.io import atomic_write

        def write(f):
            for i in range({LIMIT}):
                f.write(json.dumps({{'epoch': i, 'mrr': 0.5}}) + '\\n')
        try:
            atomic_write({str(path)!r}, write, binary=False)
            print(json.dumps({{'raised': None}}))
        except OSError as e:
            print(json.dumps({{'raised': type(e).__name__}}))
    """)
    assert report['raised'] == 'OSError'
    assert path.read_text() == '{"epoch": 1, "mrr": 0.5}\n'
    assert _leftovers(tmp_path, ['metrics.jsonl']) == []


def test_small_write_under_limit_still_works(tmp_path):
    """The limit refuses only large files (the tests above can fail)."""
    path = tmp_path / 'small.txt'
    report = _run_limited(f"""
        import json
        from ricea_pyg.io import atomic_write
        atomic_write({str(path)!r}, lambda f: f.write('ok\\n'), binary=False)
        print(json.dumps({{'raised': None}}))
    """)
    assert report['raised'] is None and path.read_text() == 'ok\n'
    assert _leftovers(tmp_path, ['small.txt']) == []


def _train(out, epochs):
    """``ricea train`` on a 200-entity synthetic pair into :obj:`out`."""
    return [sys.executable, '-m', 'ricea_pyg.cli', 'train', '--dataset',
            'synthetic', '--entities', '200', '--channels', '16', '--epochs',
            str(epochs), '--batch-size', '128', '--no-progress', '--out',
            str(out)]


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp('disk_full_run')
    run = subprocess.run(_train(out, 2), capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr
    return str(out / 'best.pt')


def test_cli_align_disk_full_keeps_previous_output(tmp_path, checkpoint):
    out = tmp_path / 'pairs.tsv'
    cmd = [sys.executable, '-m', 'ricea_pyg.cli', 'align', checkpoint,
           '--output', str(out)]
    # The previous output: a real, complete run without the limit.
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    before = out.read_bytes()
    assert len(before) > LIMIT  # else the limit would not bite
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         timeout=300, preexec_fn=_limited)
    assert run.returncode == 2  # one line, no traceback
    assert 'Traceback' not in run.stderr and 'error:' in run.stderr
    assert out.read_bytes() == before
    assert _leftovers(tmp_path, ['pairs.tsv']) == []


def test_cli_train_disk_full_exits_2_with_one_line(tmp_path):
    """A checkpoint write past the limit: exit 2, one line naming the file
    (not a traceback), no partial checkpoint and no temporary file."""
    out = tmp_path / 'run'
    run = subprocess.run(
        _train(out, 1), capture_output=True, text=True, cwd=ROOT, timeout=300,
        preexec_fn=_limited,
        env=dict(os.environ, RICEA_CACHE=str(tmp_path / 'cache')))
    assert run.returncode == 2, run.stderr
    assert 'Traceback' not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith('ricea train: error:')
    assert '.pt' in lines[0] and str(out) in lines[0]
    assert 'File too large' in lines[0]
    # run.json (small) was written; no checkpoint, torn or otherwise.
    assert _leftovers(out, ['run.json', '.lock']) == []


def test_sigkill_during_align_never_leaves_a_torn_file(tmp_path, checkpoint):
    out = tmp_path / 'pairs.tsv'
    cmd = [sys.executable, '-m', 'ricea_pyg.cli', 'align', checkpoint,
           '--output', str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    complete = out.read_bytes()
    out.write_bytes(b'previous\n')
    # Kill at several moments; the file is always the old or the new one.
    for delay in (0.5, 1.5, 2.5, 3.5):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert out.read_bytes() in (b'previous\n', complete)
        out.write_bytes(b'previous\n')
