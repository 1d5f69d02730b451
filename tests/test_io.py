import os

import pytest
import torch

from ricea_pyg.train.checkpoint import atomic_save, atomic_write, load_checkpoint


def test_atomic_save_roundtrip_and_no_temp_left(tmp_path):
    path = str(tmp_path / 'sub' / 'a.pt')
    atomic_save({'x': torch.arange(3)}, path)
    atomic_save({'x': torch.arange(4)}, path)
    assert torch.equal(load_checkpoint(path)['x'], torch.arange(4))
    assert os.listdir(tmp_path / 'sub') == ['a.pt']


def test_failed_save_keeps_the_old_file(tmp_path):
    path = str(tmp_path / 'a.pt')
    atomic_save({'ok': 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('boom')

    with pytest.raises(RuntimeError, match='boom'):
        atomic_save({'bad': Unpicklable()}, path)
    assert load_checkpoint(path) == {'ok': 1}
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


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='train first'):
        load_checkpoint(str(tmp_path / 'none.pt'))
    bad = tmp_path / 'bad.pt'
    bad.write_text('not a checkpoint')
    with pytest.raises(ValueError, match='not a readable'):
        load_checkpoint(str(bad))
