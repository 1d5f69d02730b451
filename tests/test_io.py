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
