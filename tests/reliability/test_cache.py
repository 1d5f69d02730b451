"""Processed caches never run code, survive corruption and follow their
inputs (issue 16)."""
import os
import pickle
import warnings

import pytest
import torch

from ricea_pyg.datasets import DBP15K
from ricea_pyg.datasets.base import UnsafeCacheError

ALIGN = ('source', 'aligned_with', 'target')


def _write_pair(root, pair='xx_en', num_links=1200):
    """A synthetic DBP15K-layout folder: two KGs of num_links entities each,
    a ring of triples per KG and num_links reference links."""
    folder = root / pair
    (folder / 'named_relations').mkdir(parents=True)
    n = num_links
    files = {
        'ent_ids_1': ''.join(f'{i}\thttp://xx/e{i}\n' for i in range(n)),
        'ent_ids_2': ''.join(f'{n + i}\thttp://en/e{i}\n' for i in range(n)),
        'triples_1': ''.join(f'{i}\t{i % 3}\t{(i + 1) % n}\n'
                             for i in range(n)),
        'triples_2': ''.join(f'{n + i}\t{3 + i % 2}\t{n + (i + 1) % n}\n'
                             for i in range(n)),
        'ref_ent_ids': ''.join(f'{i}\t{n + i}\n' for i in range(n)),
    }
    for name, text in files.items():
        (folder / name).write_text(text, encoding='utf-8')
    return folder


def _load(root, proc, **kw):
    return DBP15K(str(root), 'xx_en', names=None, train_ratio=0.3,
                  val_ratio=0.1, processed_dir=str(proc), log=False, **kw)


def _num_pairs(data):
    return sum(data[ALIGN][k].size(1) for k in ('train_index', 'val_index',
                                                 'test_index'))


def _processed_files(proc):
    return sorted(f for f in os.listdir(proc) if f.endswith('.pt'))


def _assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.equal(b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    else:
        assert type(a) is type(b) and a == b


def test_round_trip_keeps_every_attribute(tmp_path):
    _write_pair(tmp_path / 'raw', num_links=30)
    first = _load(tmp_path / 'raw', tmp_path / 'proc')[0]
    again = _load(tmp_path / 'raw', tmp_path / 'proc')[0]  # from the cache
    _assert_same(first.to_dict(), again.to_dict())
    assert isinstance(again['source'].uri[0], str)
    path = os.path.join(tmp_path / 'proc',
                        _processed_files(tmp_path / 'proc')[0])
    torch.load(path, weights_only=True)  # plain data only


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.mark.filterwarnings('ignore:Detected pickle protocol')
def test_crafted_pickle_in_cache_is_refused(tmp_path):
    _write_pair(tmp_path / 'raw', num_links=30)
    _load(tmp_path / 'raw', tmp_path / 'proc')
    name = _processed_files(tmp_path / 'proc')[0]
    path = tmp_path / 'proc' / name
    marker = tmp_path / 'code-ran'
    torch.save({'format': _Payload(marker)}, path)
    with pytest.raises(UnsafeCacheError) as exc:
        _load(tmp_path / 'raw', tmp_path / 'proc')
    msg = str(exc.value)
    assert str(path) in msg and 'refused' in msg and '\n' not in msg
    assert not marker.exists()
    with open(path, 'wb') as f:  # a bare pickle, not a torch zip file
        pickle.dump(_Payload(marker), f)
    with pytest.raises(UnsafeCacheError):
        _load(tmp_path / 'raw', tmp_path / 'proc')
    assert not marker.exists()


@pytest.mark.parametrize('damage', ['truncate', 'empty', 'garbage'])
def test_corrupt_cache_is_rebuilt(tmp_path, damage):
    _write_pair(tmp_path / 'raw', num_links=30)
    ref = _load(tmp_path / 'raw', tmp_path / 'proc')[0]
    path = tmp_path / 'proc' / _processed_files(tmp_path / 'proc')[0]
    blob = path.read_bytes()
    path.write_bytes({'truncate': blob[:len(blob) // 2], 'empty': b'',
                      'garbage': b'not a cache'}[damage])
    with pytest.warns(UserWarning) as record:
        data = _load(tmp_path / 'raw', tmp_path / 'proc')[0]
    msgs = [str(w.message) for w in record if 'rebuilding' in
            str(w.message)]
    assert len(msgs) == 1 and str(path) in msgs[0] and '\n' not in msgs[0]
    _assert_same(ref.to_dict(), data.to_dict())
    with warnings.catch_warnings():  # rebuilt for good: no second warning
        warnings.simplefilter('error')
        _load(tmp_path / 'raw', tmp_path / 'proc')


def test_cache_follows_edited_links(tmp_path):
    folder = _write_pair(tmp_path / 'raw', num_links=1200)
    before = _load(tmp_path / 'raw', tmp_path / 'proc')[0]
    assert _num_pairs(before) == 1200
    links = (folder / 'ref_ent_ids').read_text().splitlines(True)
    (folder / 'ref_ent_ids').write_text(''.join(links[1000:]))
    after = _load(tmp_path / 'raw', tmp_path / 'proc')[0]  # no flag
    assert _num_pairs(after) == 200


def test_cache_follows_content_at_same_size_and_mtime(tmp_path):
    folder = _write_pair(tmp_path / 'raw', num_links=30)
    path = folder / 'ref_ent_ids'
    _load(tmp_path / 'raw', tmp_path / 'proc')
    st = os.stat(path)
    text = path.read_text()
    # Swap two targets: same bytes count, same mtime, other content.
    path.write_text(text.replace('0\t30\n1\t31\n', '0\t31\n1\t30\n', 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size
    data = _load(tmp_path / 'raw', tmp_path / 'proc')[0]
    pairs = torch.cat([data[ALIGN][k] for k in ('train_index', 'val_index',
                                                 'test_index')], 1)
    got = dict(zip(pairs[0].tolist(), pairs[1].tolist()))
    assert got[0] == 1 and got[1] == 0
    assert len(_processed_files(tmp_path / 'proc')) == 2


@pytest.mark.parametrize('pair', ['../x', '..', 'a/b', '/abs', '', '.hid'])
def test_pair_name_cannot_leave_the_cache(tmp_path, pair):
    with pytest.raises(ValueError, match='invalid pair name'):
        DBP15K(str(tmp_path / 'raw'), pair, names=None,
               processed_dir=str(tmp_path / 'proc'), log=False)
    assert not (tmp_path / 'x').exists()
    assert not (tmp_path / 'proc').exists()


def test_crafted_text_cache_never_runs_and_is_rebuilt(tmp_path):
    from ricea_pyg.data.text import CallableEncoder
    marker = tmp_path / 'ran'

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), 'w'))

    enc = CallableEncoder(lambda t: torch.ones(len(t), 2), 'ones',
                          cache_dir=str(tmp_path))
    texts = ['a', 'b']
    path = tmp_path / f'text_{enc.cache_key(texts)}.pt'
    torch.save({'x': Evil()}, path)
    with pytest.warns(UserWarning, match='rebuilding'):
        out = enc.encode(texts)
    assert not marker.exists()
    assert torch.equal(out, torch.ones(2, 2))
    assert torch.equal(torch.load(path, weights_only=True), out)


@pytest.mark.parametrize('content', ['42', 'null', '{"a": 1}'])
def test_names_json_that_is_not_a_list(tmp_path, content):
    from ricea_pyg.data import DataFormatError
    from ricea_pyg.data.readers import read_translated_names
    path = tmp_path / 'names.json'
    path.write_text(content)
    with pytest.raises(DataFormatError, match='not a list'):
        read_translated_names(str(path), {0: 0})


_KILL_DURING_SAVE = """
import io, os, signal, sys
import torch
real_save = torch.save


def torn_save(obj, f, *args, **kwargs):
    # Write half of the real bytes, make them durable, then die hard.
    buf = io.BytesIO()
    real_save(obj, buf, *args, **kwargs)
    blob = buf.getvalue()
    f.write(blob[:len(blob) // 2])
    f.flush()
    os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


torch.save = torn_save
from ricea_pyg.datasets import DBP15K
DBP15K(sys.argv[1], 'xx_en', names=None, train_ratio=0.3, val_ratio=0.1,
       processed_dir=sys.argv[2], log=False,
       force_reload=sys.argv[3] == 'force')
print('not killed')
"""


@pytest.mark.parametrize('previous', [False, True])
def test_sigkill_during_cache_write_never_tears_it(tmp_path, previous):
    import signal
    import subprocess
    import sys
    import time

    from ricea_pyg.datasets.base import STALE_TEMP_S
    raw, proc = tmp_path / 'raw', tmp_path / 'proc'
    _write_pair(raw, num_links=30)
    before = None
    if previous:  # an intact cache file that the killed rebuild replaces
        _load(raw, proc)
        name = _processed_files(proc)[0]
        before = (proc / name).read_bytes()
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    run = subprocess.run(
        [sys.executable, '-c', _KILL_DURING_SAVE, str(raw), str(proc),
         'force' if previous else 'plain'], capture_output=True, text=True,
        cwd=root, timeout=300)
    assert run.returncode == -signal.SIGKILL, run.stdout + run.stderr
    temps = [n for n in os.listdir(proc) if n.startswith('.tmp-')]
    assert len(temps) == 1  # the torn bytes went to a temporary name ...
    kept = _processed_files(proc)
    kept = [n for n in kept if not n.startswith('.tmp-')]
    if previous:  # ... and the cache file is the previous, intact one
        assert kept == [name] and (proc / name).read_bytes() == before
    else:  # ... or there is none
        assert kept == []
    # The next load in this process works (no warning: the temporary file is
    # never read), with every pair.
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        data = _load(raw, proc)[0]
    assert _num_pairs(data) == 30
    assert [n for n in os.listdir(proc) if n.startswith('.tmp-')] == temps
    # Once it is old, a load removes the dead writer's temporary file.
    old = time.time() - 2 * STALE_TEMP_S
    os.utime(proc / temps[0], (old, old))
    assert _num_pairs(_load(raw, proc)[0]) == 30
    assert [n for n in os.listdir(proc) if n.startswith('.tmp-')] == []
    assert len(_processed_files(proc)) == 1
