import numpy as np
import pytest
import torch

from ricea_pyg.data import CallableEncoder, MultiModalKGPair, PairInputs

ALIGN = ('source', 'aligned_with', 'target')


class CountingEncoder(CallableEncoder):
    def __init__(self, cache_dir=None):
        self.calls = []

        def fn(texts):
            self.calls.append(list(texts))
            return torch.tensor([[len(t), t.count('a') + 1.0] for t in texts])
        super().__init__(fn, 'counting', cache_dir)


@pytest.fixture
def files(tmp_path):
    def w(name, text):
        (tmp_path / name).write_text(text, encoding='utf-8')
        return str(tmp_path / name)
    return dict(
        source_triples=w('s.tsv', 'Paris\tcapitalOf\tFrance\n'
                         'Lyon\tlocatedIn\tFrance\nLyon\tnear\tParis\n'),
        target_triples=w('t.tsv', 'paris\tcapitalOf\tfrance\n'
                         'lyon\tlocatedIn\tfrance\nberlin\tcapitalOf\tde\n'),
        links=w('links.tsv', 'Paris\tparis\nFrance\tfrance\nLyon\tlyon\n'),
        source_names=w('sn.tsv', 'Paris\tParis\nFrance\tFrance\n'),
        target_names=w('tn.tsv', 'paris\tparis\nfrance\tfrance\n'
                       'berlin\tberlin\n'),
        source_attributes=w('sa.tsv', 'Paris\tpopulation\t2.1e6\n'),
        target_attributes=w('ta.tsv', 'paris\tpopulation\t2100000\n'
                            'de\tarea\t357000\n'),
        source_images=w('si.tsv', 'Paris\t1 0\nLyon\t0 1\n'),
        target_images=w('ti.tsv', 'paris\t1 0.1\n'))


def test_from_files_to_hetero_data(files, tmp_path):
    pair = MultiModalKGPair.from_files(**files)
    assert repr(pair) == 'MultiModalKGPair(source=3, target=5, links=3)'
    enc = CountingEncoder()
    data = pair.to_hetero_data(text_encoder=enc, train_ratio=0.34,
                               val_ratio=0.33, seed=0)
    assert data.modalities == ['graph', 'rel', 'attr', 'img', 'name', 'char']
    src, tgt = data['source'], data['target']
    assert src.uri == ['Paris', 'France', 'Lyon']
    assert tgt.uri == ['paris', 'france', 'lyon', 'berlin', 'de']
    assert data['source', 'rel', 'source'].edge_index.tolist() == [
        [0, 2, 2], [1, 1, 0]]
    # Relation strings share one id space across KGs.
    assert data['target', 'rel', 'target'].edge_type.tolist() == [0, 1, 0]
    assert src.mask_name.tolist() == [True, True, False]
    assert src.x_name[2].abs().sum() == 0
    assert src.mask_img.tolist() == [True, False, True]
    assert tgt.mask_attr.tolist() == [True, False, False, False, True]
    assert src.x_rel.tolist() == [[1, 0, 1], [1, 1, 0], [0, 1, 1]]
    pairs = torch.cat([data[ALIGN][k] for k in ('train_index', 'val_index',
                                                'test_index')], 1)
    assert sorted(map(tuple, pairs.t().tolist())) == [(0, 0), (1, 1), (2, 2)]
    # One encoder call over the distinct names of both sides.
    assert len(enc.calls) == 1
    assert enc.calls[0] == sorted({'Paris', 'France', 'paris', 'france',
                                   'berlin'})
    xs, mask = PairInputs.from_data(data).side('source')
    assert list(xs) == ['rel', 'attr', 'img', 'name', 'char']
    assert mask.shape == (3, 6)


def test_text_cache_prevents_second_encoder_run(files, tmp_path):
    pair = MultiModalKGPair.from_files(**files)
    enc = CountingEncoder(cache_dir=str(tmp_path / 'cache'))
    a = pair.to_hetero_data(modalities=['name'], text_encoder=enc)
    b = pair.to_hetero_data(modalities=['name', 'rel'], seed=4,
                            text_encoder=enc)
    assert len(enc.calls) == 1
    assert torch.equal(a['source'].x_name, b['source'].x_name)


def test_relation_key_by_name(files):
    pair = MultiModalKGPair.from_files(**files)
    data = pair.to_hetero_data(modalities=['rel'], relation_key='name')
    assert data['source'].x_rel.size(1) == 3


def test_unavailable_modality_is_an_error(files):
    del files['source_images']
    pair = MultiModalKGPair.from_files(**files)
    with pytest.raises(ValueError, match="'img' is not available"):
        pair.to_hetero_data(modalities=['img'], text_encoder=CountingEncoder())


def test_official_split_needs_one(files):
    pair = MultiModalKGPair.from_files(**files)
    with pytest.raises(ValueError, match='no official split'):
        pair.to_hetero_data(modalities=['rel'], split='official')


def test_feature_file_npy_roundtrip(tmp_path, files):
    np.save(tmp_path / 'img.npy', np.eye(2, dtype=np.float32))
    (tmp_path / 'ids').write_text('France\nParis\n')
    files['source_images'] = str(tmp_path / 'img.npy')
    files['source_image_ids'] = str(tmp_path / 'ids')
    pair = MultiModalKGPair.from_files(**files)
    x, mask = pair.source.image
    assert mask.tolist() == [True, True, False]
    assert x[1].tolist() == [1, 0]
