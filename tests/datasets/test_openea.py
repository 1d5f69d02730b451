"""OpenEA layout, own-TSV folders, and DBP15K rewritten as OpenEA.

``python -m tests.datasets.test_openea DBP15K_PAIR_DIR OUT_DIR`` writes a
DBP15K pair (``ent_ids_*``, ``triples_*``, ``ref_ent_ids``) in the OpenEA
layout (the acceptance check of ``docs/data.md``).
"""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from ricea_pyg.data import DataFormatError
from ricea_pyg.datasets import OpenEA, TSVFolder, load_dataset
from ricea_pyg.datasets.openea import read_openea_pair

ALIGN = ('source', 'aligned_with', 'target')
SPLITS = ('train_index', 'val_index', 'test_index')


def dbp15k_to_openea(pair_dir: str, out: str) -> None:
    """Rewrites a DBP15K pair folder in the OpenEA layout: entity URIs as in
    ``ent_ids_*``, relations named ``rel_<id>``, links in ``ref_ent_ids``
    order, no attributes, no names, no ``721_5fold``."""
    os.makedirs(out, exist_ok=True)
    uri = {}
    for k in (1, 2):
        with open(os.path.join(pair_dir, f'ent_ids_{k}'),
                  encoding='utf-8') as f:
            for line in f:
                if line.strip():
                    i, u = line.rstrip('\n').split('\t')
                    uri[i] = u
    for k in (1, 2):
        with open(os.path.join(pair_dir, f'triples_{k}'),
                  encoding='utf-8') as f, \
                open(os.path.join(out, f'rel_triples_{k}'), 'w',
                     encoding='utf-8') as g:
            for line in f:
                if line.strip():
                    h, r, t = line.split()
                    g.write(f'{uri[h]}\trel_{r}\t{uri[t]}\n')
    with open(os.path.join(pair_dir, 'ref_ent_ids'), encoding='utf-8') as f, \
            open(os.path.join(out, 'ent_links'), 'w', encoding='utf-8') as g:
        for line in f:
            if line.strip():
                s, t = line.split()
                g.write(f'{uri[s]}\t{uri[t]}\n')


def _write(folder, files):
    os.makedirs(folder, exist_ok=True)
    for name, text in files.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w', encoding='utf-8') as f:
            f.write(text)


def _openea_files(n=10, seed=0):
    """A tiny OpenEA pair: a seeded random graph on ``n`` entities and its
    renamed copy (KG2 lists its triples in another order)."""
    gen = torch.Generator().manual_seed(seed)
    edges = torch.randint(0, n, (3 * n, 2), generator=gen).tolist()
    rels = torch.randint(0, 3, (3 * n,), generator=gen).tolist()
    t1 = [f'http://a/e{h}\thttp://a/r{r}\thttp://a/e{t}'
          for (h, t), r in zip(edges, rels)]
    t2 = [f'http://b/E{h}\thttp://b/R{r}\thttp://b/E{t}'
          for (h, t), r in zip(edges, rels)][::-1]
    ents = sorted({e for h_t in edges for e in h_t})
    return {
        'rel_triples_1': '\n'.join(t1) + '\n',
        'rel_triples_2': '\n'.join(t2) + '\n',
        'attr_triples_1': 'http://a/e0\thttp://a/birth\t"1990"\n'
                          'http://a/only_attr\thttp://a/name\tx y\n',
        'attr_triples_2': 'http://b/E0\thttp://b/born\t1990\n',
        'ent_links': ''.join(f'http://a/e{i}\thttp://b/E{i}\n'
                             for i in ents),
    }, ents


def test_openea_random_split_and_modalities(tmp_path):
    files, ents = _openea_files()
    _write(str(tmp_path / 'oe'), files)
    data = OpenEA(str(tmp_path / 'oe'), processed_dir=str(tmp_path / 'p'),
                  log=False)[0]
    assert data.modalities == ['graph', 'rel', 'attr']
    # Numbered by first appearance: rel triples first, then attr-only ones.
    first = files['rel_triples_1'].split('\t')[0]
    assert data['source'].uri[0] == first
    assert data['source'].uri[-1] == 'http://a/only_attr'
    assert data['source'].num_nodes == len(ents) + 1
    assert data['target'].num_nodes == len(ents)
    sizes = [data[ALIGN][k].size(1) for k in SPLITS]
    assert sum(sizes) == len(ents) and sizes[0] == round(0.3 * len(ents))
    pairs = torch.cat([data[ALIGN][k] for k in SPLITS], 1)
    s_uri = [data['source'].uri[i] for i in pairs[0]]
    t_uri = [data['target'].uri[i] for i in pairs[1]]
    assert all(s.replace('a/e', '') == t.replace('b/E', '')
               for s, t in zip(s_uri, t_uri))
    # Attribute types, both KGs' vocabularies: e0 has one, E0 has one.
    s0 = data['source'].uri.index('http://a/e0')
    assert data['source'].x_attr[s0].sum() == 1
    assert int(data['source'].mask_attr.sum()) == 2
    # The same graph twice: the relation bags agree up to the renaming.
    assert data['source'].x_rel.sum() == data['target'].x_rel.sum()


def test_openea_relation_names_kept(tmp_path):
    files, _ = _openea_files()
    _write(str(tmp_path), files)
    pair = read_openea_pair(str(tmp_path))
    assert set(pair.source.relation_names.values()) <= {
        f'http://a/r{r}' for r in range(3)}
    assert all(v.startswith('http://b/R')
               for v in pair.target.relation_names.values())
    assert pair.source.attributes[0][1] == 'http://a/birth'
    data = pair.to_hetero_data(relation_key='name', train_ratio=0.3)
    # r0 and R0 share the local name 'r0' (lower-cased): one column each.
    assert data['source'].x_rel.size(1) == 3


def test_openea_fold_split(tmp_path):
    files, ents = _openea_files()
    links = files['ent_links'].splitlines()
    for k, (a, b) in {1: (2, 3), 2: (3, 5)}.items():
        files[f'721_5fold/{k}/train_links'] = '\n'.join(links[:a]) + '\n'
        files[f'721_5fold/{k}/valid_links'] = '\n'.join(links[a:b]) + '\n'
        files[f'721_5fold/{k}/test_links'] = '\n'.join(links[b:]) + '\n'
    _write(str(tmp_path / 'oe'), files)
    d1 = OpenEA(str(tmp_path / 'oe'), processed_dir=str(tmp_path / 'p'),
                log=False)[0]
    d2 = OpenEA(str(tmp_path / 'oe'), fold=2,
                processed_dir=str(tmp_path / 'p'), log=False)[0]
    assert [d1[ALIGN][k].size(1) for k in SPLITS] == [2, 1, len(ents) - 3]
    assert [d2[ALIGN][k].size(1) for k in SPLITS] == [3, 2, len(ents) - 5]
    train = d1[ALIGN].train_index
    assert [d1['source'].uri[i] for i in train[0]] == [
        line.split('\t')[0] for line in links[:2]]
    with pytest.raises(FileNotFoundError, match='pass --fold'):
        OpenEA(str(tmp_path / 'oe'), fold=3,
               processed_dir=str(tmp_path / 'p'), log=False)


def test_openea_fold_without_folder_is_an_error(tmp_path):
    files, _ = _openea_files()
    _write(str(tmp_path), files)
    with pytest.raises(FileNotFoundError, match='drop --fold'):
        OpenEA(str(tmp_path), fold=1, log=False)


@pytest.mark.parametrize('name, text, line', [
    ('ent_links', 'http://a/e0\thttp://b/E0\nhttp://a/zz\thttp://b/E1\n', 2),
    ('rel_triples_1', 'http://a/e0\thttp://a/r0\n', 1),
    ('721_5fold/1/test_links', 'http://a/e1\thttp://b/E1\n'
                               'http://a/e0\thttp://b/E0\n', 2),
])
def test_openea_errors_name_file_and_line(name, text, line, tmp_path):
    files, _ = _openea_files()
    files['721_5fold/1/train_links'] = 'http://a/e0\thttp://b/E0\n'
    files['721_5fold/1/valid_links'] = 'http://a/e2\thttp://b/E2\n'
    files.setdefault('721_5fold/1/test_links', 'http://a/e3\thttp://b/E3\n')
    files[name] = text
    _write(str(tmp_path / 'oe'), files)
    with pytest.raises(DataFormatError) as e:
        OpenEA(str(tmp_path / 'oe'), processed_dir=str(tmp_path / 'p'),
               log=False)
    assert e.value.path.endswith(name) and e.value.line == line
    assert 'Fix:' in str(e.value)


def test_openea_missing_file_names_it(tmp_path):
    files, _ = _openea_files()
    del files['ent_links']
    _write(str(tmp_path), files)
    with pytest.raises(FileNotFoundError, match='ent_links'):
        OpenEA(str(tmp_path), processed_dir=str(tmp_path / 'p'), log=False)


def test_openea_image_features_npy(tmp_path):
    files, ents = _openea_files()
    _write(str(tmp_path / 'oe'), files)
    ids = [f'http://a/e{i}' for i in ents[:3]] + ['http://b/E0']
    np.save(tmp_path / 'img.npy', np.arange(8, dtype=np.float32).reshape(4,
                                                                         2))
    (tmp_path / 'ids.txt').write_text('\n'.join(ids) + '\n')
    data = OpenEA(str(tmp_path / 'oe'), image_features=str(
        tmp_path / 'img.npy'), image_ids=str(tmp_path / 'ids.txt'),
        processed_dir=str(tmp_path / 'p'), log=False)[0]
    assert 'img' in data.modalities
    assert int(data['source'].mask_img.sum()) == 3
    t0 = data['target'].uri.index('http://b/E0')
    assert data['target'].x_img[t0].tolist() == [6.0, 7.0]
    assert int(data['target'].mask_img.sum()) == 1


def test_image_features_npz_and_pickle_refused(tmp_path):
    files, _ = _openea_files()
    _write(str(tmp_path), files)
    np.savez(tmp_path / 'img.npz', x=np.ones((2, 3), dtype=np.float32),
             ids=np.array(['http://a/e0', 'http://b/E1']))
    pair = read_openea_pair(str(tmp_path), image_features=str(
        tmp_path / 'img.npz'))
    assert int(pair.source.image[1].sum()) == 1
    assert pair.target.image[0][pair.target.uris.index(
        'http://b/E1')].tolist() == [1.0, 1.0, 1.0]
    with open(tmp_path / 'img.pkl', 'wb') as f:
        pickle.dump({'http://a/e0': [1.0]}, f)
    with pytest.raises(DataFormatError, match='not read by default'):
        read_openea_pair(str(tmp_path), image_features=str(
            tmp_path / 'img.pkl'))


# -- --dataset files ------------------------------------------------------------
def _tsv_files():
    return {
        'triples_1.tsv': 'a\tr\tb\nb\ts\tc\n',
        'triples_2.tsv': 'A\tr\tB\nB\ts\tC\n',
        'links.tsv': 'a\tA\nb\tB\nc\tC\n',
        'names_1.tsv': 'a\talpha\nb\tbeta\n',
        'names_2.tsv': 'A\talpha\nC\tgamma\n',
        'attributes_1.tsv': 'a\tage\t3\n',
        'attributes_2.tsv': 'B\tage\t4\n',
        'images_1.tsv': 'a\t1 2\n',
        'images_2.tsv': 'C\t3 4\n',
    }


def test_tsv_folder_reads_every_file(tmp_path):
    _write(str(tmp_path / 'f'), _tsv_files())
    data = TSVFolder(str(tmp_path / 'f'), text_encoder=_encoder(),
                     train_ratio=0.34, val_ratio=0.33,
                     processed_dir=str(tmp_path / 'p'), log=False)[0]
    assert data.modalities == ['graph', 'rel', 'attr', 'img', 'name', 'char']
    assert data['source'].uri == ['a', 'b', 'c']
    assert data['source'].mask_name.tolist() == [True, True, False]
    assert data['target'].x_img[2].tolist() == [3.0, 4.0]
    assert data['target'].mask_img.tolist() == [False, False, True]


def test_tsv_folder_npz_images(tmp_path):
    files = _tsv_files()
    del files['images_1.tsv'], files['images_2.tsv']
    _write(str(tmp_path / 'f'), files)
    for k, ids in ((1, ['b', 'c']), (2, ['A'])):
        np.savez(tmp_path / 'f' / f'images_{k}.npz', ids=np.array(ids),
                 x=np.full((len(ids), 2), k, dtype=np.float32))
    data = TSVFolder(str(tmp_path / 'f'), names=False,
                     processed_dir=str(tmp_path / 'p'), log=False)[0]
    assert data['source'].mask_img.tolist() == [False, True, True]
    assert data['target'].x_img[0].tolist() == [2.0, 2.0]


def _encoder():
    from ricea_pyg.data import CallableEncoder
    return CallableEncoder(lambda t: torch.tensor([[float(len(s)), 1.0]
                                                   for s in t]), 'len')


@pytest.mark.parametrize('drop, message', [
    ('links.tsv', 'links.tsv: file not found'),
    ('triples_2.tsv', 'triples_2.tsv: file not found'),
    ('names_2.tsv', 'names_2.tsv: file not found, but'),
])
def test_tsv_folder_missing_file_is_named(drop, message, tmp_path):
    files = _tsv_files()
    del files[drop]
    _write(str(tmp_path), files)
    with pytest.raises(FileNotFoundError, match=message):
        TSVFolder(str(tmp_path), processed_dir=str(tmp_path / 'p'),
                  log=False)


def test_registry_files_and_openea(tmp_path):
    _write(str(tmp_path / 'f'), _tsv_files())
    spec = dict(dataset='files', root=str(tmp_path / 'f'), no_names=True,
                split_seed=1)
    data = load_dataset(spec)
    assert data.modalities == ['graph', 'rel', 'attr', 'img']
    files, _ = _openea_files()
    _write(str(tmp_path / 'oe'), files)
    data = load_dataset(dict(dataset='openea', root=str(tmp_path / 'oe'),
                             no_names=False, split_seed=0))
    assert data.modalities == ['graph', 'rel', 'attr']
    with pytest.raises(ValueError, match='--fold applies'):
        load_dataset(dict(spec, fold=1))
    with pytest.raises(ValueError, match='not supported for --dataset '
                       'synthetic'):
        load_dataset(dict(dataset='synthetic', entities=10, no_names=True,
                          split_seed=0, image_features='x.npy'))


# -- DBP15K rewritten as OpenEA ------------------------------------------------
def _tiny_dbp15k(folder):
    _write(folder, {
        'ent_ids_1': '0\thttp://zh/a\n1\thttp://zh/b\n2\thttp://zh/c\n',
        'ent_ids_2': '3\thttp://en/A\n4\thttp://en/B\n5\thttp://en/C\n',
        'triples_1': '2\t0\t1\n1\t1\t0\n',
        'triples_2': '5\t2\t4\n4\t3\t3\n',
        'ref_ent_ids': '0\t3\n1\t4\n2\t5\n',
    })


def test_dbp15k_to_openea_keeps_graph_and_links(tmp_path):
    from ricea_pyg.datasets import DBP15K
    _tiny_dbp15k(str(tmp_path / 'db' / 'xx_en'))
    dbp15k_to_openea(str(tmp_path / 'db' / 'xx_en'), str(tmp_path / 'oe'))
    a = DBP15K(str(tmp_path / 'db'), 'xx_en', names=None,
               processed_dir=str(tmp_path / 'p1'), log=False)[0]
    b = OpenEA(str(tmp_path / 'oe'), processed_dir=str(tmp_path / 'p2'),
               log=False)[0]
    assert b['source'].uri == ['http://zh/c', 'http://zh/b', 'http://zh/a']
    for key in SPLITS:  # links in the same order: the same seeded split
        ua = [(a['source'].uri[s], a['target'].uri[t])
              for s, t in a[ALIGN][key].t().tolist()]
        ub = [(b['source'].uri[s], b['target'].uri[t])
              for s, t in b[ALIGN][key].t().tolist()]
        assert ua == ub
    for side in ('source', 'target'):
        ea = a[side, 'rel', side].edge_index
        eb = b[side, 'rel', side].edge_index
        assert ({(a[side].uri[h], a[side].uri[t]) for h, t in ea.t().tolist()}
                == {(b[side].uri[h], b[side].uri[t])
                    for h, t in eb.t().tolist()})


def test_cli_openea_image_features_recorded(tmp_path):
    from ricea_pyg.cli import main
    files, ents = _openea_files(n=40)
    _write(str(tmp_path / 'oe'), files)
    rows = [f'http://a/e{i}\t{i % 3} 1' for i in ents] + [
        f'http://b/E{i}\t{i % 3} 1' for i in ents]
    (tmp_path / 'img.tsv').write_text('\n'.join(rows) + '\n')
    out = str(tmp_path / 'run')
    argv = ['train', '--dataset', 'openea', '--root', str(tmp_path / 'oe'),
            '--image-features', str(tmp_path / 'img.tsv'), '--channels', '8',
            '--epochs', '1', '--batch-size', '16', '--no-progress', '--out',
            out]
    assert main(argv) == 0
    spec = json.load(open(os.path.join(out, 'run.json')))['data']
    assert spec['image_features'] == str(tmp_path / 'img.tsv')
    assert spec['fold'] is None and spec['dataset'] == 'openea'
    state = torch.load(os.path.join(out, 'best.pt'), weights_only=False)
    assert 'img' in state['modalities']
    assert main(['evaluate', os.path.join(out, 'best.pt')]) == 0


@pytest.mark.slow
def test_real_zh_en_as_openea_matches_dbp15k(tmp_path):
    from ricea_pyg.datasets import DBP15K
    from tests.conftest import data_path
    pair_dir = data_path('dbp15k', 'zh_en')
    dbp15k_to_openea(pair_dir, str(tmp_path / 'oe'))
    a = DBP15K(os.path.dirname(pair_dir), 'zh_en', names=None,
               processed_dir=str(tmp_path / 'p1'), log=False)[0]
    b = OpenEA(str(tmp_path / 'oe'), processed_dir=str(tmp_path / 'p2'),
               log=False)[0]
    for side in ('source', 'target'):
        assert a[side].num_nodes == b[side].num_nodes
        assert sorted(a[side].uri) == sorted(b[side].uri)
    for key in SPLITS:
        ua = {a['source'].uri[s] for s in a[ALIGN][key][0].tolist()}
        ub = {b['source'].uri[s] for s in b[ALIGN][key][0].tolist()}
        assert ua == ub


# -- PyG's DBP15K (DGMC) ---------------------------------------------------------
def _pyg_dbp15k_like(rel=True):
    """A hand-built ``Data`` with the attribute names of
    ``torch_geometric.datasets.DBP15K``: ``x`` is ``[N, L, F]`` zero-padded
    word vectors."""
    from torch_geometric.data import Data
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(6, 3, 4, generator=gen)
    x1[0, 1:] = 0  # a one-word name
    x1[5] = 0  # no words at all
    x2 = x1[[3, 4, 5, 0, 1, 2]].clone()
    kw = dict(x1=x1, x2=x2,
              edge_index1=torch.tensor([[0, 1, 2], [1, 2, 0]]),
              edge_index2=torch.tensor([[3, 4, 5], [4, 5, 3]]),
              train_y=torch.tensor([[0, 1], [3, 4]]),
              test_y=torch.tensor([[2, 3, 4, 5], [5, 0, 1, 2]]))
    if rel:
        kw.update(rel1=torch.tensor([0, 1, 0]), rel2=torch.tensor([2, 3, 2]))
    return Data(**kw)


def test_from_pyg_dbp15k():
    from ricea_pyg.datasets.pyg import from_pyg_dbp15k
    data = from_pyg_dbp15k(_pyg_dbp15k_like(), val_ratio=1 / 6, seed=0)
    assert data.modalities == ['graph', 'rel', 'name']
    assert data['source'].num_nodes == 6
    x = data['source'].x_name
    assert torch.allclose(x[0], _pyg_dbp15k_like().x1[0, 0])
    assert torch.allclose(x[1], _pyg_dbp15k_like().x1[1].mean(0))
    assert data['source'].mask_name.tolist() == [True] * 5 + [False]
    # Train pairs kept, one test pair moved to validation.
    assert data[ALIGN].train_index.tolist() in ([[0, 1], [3, 4]],
                                                [[1, 0], [4, 3]])
    assert data[ALIGN].val_index.size(1) == 1
    assert data[ALIGN].test_index.size(1) == 3
    # Bag of relations: node 0 is head of a rel-0 edge and tail of another.
    assert data['source'].x_rel[0].sum() == 2
    assert data['source', 'rel', 'source'].edge_type.tolist() == [0, 1, 0]
    plain = from_pyg_dbp15k(_pyg_dbp15k_like(rel=False))
    assert plain.modalities == ['graph', 'name']
    with pytest.raises(ValueError, match='no \\[\'train_y\'\\]'):
        from ricea_pyg.datasets.pyg import from_pyg_dbp15k as f
        d = _pyg_dbp15k_like()
        del d.train_y
        f(d)


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    dbp15k_to_openea(sys.argv[1], sys.argv[2])
    subprocess.run(['wc', '-l'] + [os.path.join(sys.argv[2], f) for f in (
        'rel_triples_1', 'rel_triples_2', 'ent_links')], check=False)
