import os

import pytest
import torch

from ricea_pyg.io import atomic_save, atomic_write


def test_atomic_save_roundtrip_and_no_temp_left(tmp_path):
    path = str(tmp_path / 'sub' / 'a.pt')
    atomic_save({'x': torch.arange(3)}, path)
    atomic_save({'x': torch.arange(4)}, path)
    assert torch.equal(torch.load(path, weights_only=True)['x'],
                       torch.arange(4))
    assert os.listdir(tmp_path / 'sub') == ['a.pt']


def test_failed_save_keeps_the_old_file(tmp_path):
    path = str(tmp_path / 'a.pt')
    atomic_save({'ok': 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('boom')

    with pytest.raises(RuntimeError, match='boom'):
        atomic_save({'bad': Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {'ok': 1}
    assert os.listdir(tmp_path) == ['a.pt']


def test_atomic_write_text_and_failure_keeps_old(tmp_path):
    path = str(tmp_path / 'log.csv')
    atomic_write(path, lambda f: f.write('a,b\n'), binary=False)

    def fail(f):
        f.write('partial')
        raise OSError('disk full')

    with pytest.raises(OSError, match='disk full'):
        atomic_write(path, fail, binary=False)
    with open(path) as f:
        assert f.read() == 'a,b\n'
    assert os.listdir(tmp_path) == ['log.csv']


def test_atomic_write_names_the_file_of_a_disk_error(tmp_path):
    import errno
    path = str(tmp_path / 'pairs.tsv')

    def full(f):
        raise OSError(errno.ENOSPC, 'No space left on device')

    with pytest.raises(OSError) as exc:
        atomic_write(path, full, binary=False)
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == path
    assert path in str(exc.value) and '\n' not in str(exc.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('message', [
    '[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598',
    'PytorchStreamWriter failed writing file data/0: file write failed'])
def test_atomic_save_turns_torch_write_failures_into_oserror(
        tmp_path, monkeypatch, message):
    import errno
    path = str(tmp_path / 'last.pt')
    atomic_save({'ok': 1}, path)

    def failing_save(obj, f):
        try:  # what torch's zip writer does with the file's OSError
            raise OSError(errno.ENOSPC, 'No space left on device')
        except OSError:
            raise RuntimeError(message)  # noqa: B904 (context, as torch)

    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(OSError) as exc:
        atomic_save({'new': 2}, path)
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == path
    assert isinstance(exc.value.__cause__, RuntimeError)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {'ok': 1}
    assert os.listdir(tmp_path) == ['last.pt']


def test_atomic_save_without_a_recorded_oserror_still_raises_oserror(
        tmp_path, monkeypatch):
    path = str(tmp_path / 'last.pt')

    def failing_save(obj, f):
        raise RuntimeError('PytorchStreamWriter failed writing file '
                           'data.pkl')

    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(OSError) as exc:
        atomic_save({'new': 2}, path)
    assert exc.value.errno is not None and exc.value.filename == path
    assert not os.path.exists(path)
