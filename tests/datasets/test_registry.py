import os
import shutil

import numpy as np
import pytest

from ricea_pyg.datasets import (
    dataset_fields,
    dataset_names,
    load_dataset,
    open_dataset,
    register_dataset,
)
from ricea_pyg.datasets.download import sha256_file
from ricea_pyg.datasets.registry import (
    _FIELDS,
    _REGISTRY,
    SPEC_FIELDS,
    unread_field_error,
)
from tests.datasets.test_dbp15k import _tiny_pair


def _spec(root, **kw):
    spec = dict(dataset='dbp15k', root=str(root), pair='xx_en',
                no_names=True, split_seed=0)
    spec.update(kw)
    return spec


def test_names_include_new_loaders():
    assert {'dbp15k', 'fbdb15k', 'openea', 'files', 'synthetic'} <= set(
        dataset_names())


def test_old_spec_without_new_keys_still_loads(tmp_path):
    _tiny_pair(str(tmp_path), 'xx_en')
    data = load_dataset(_spec(tmp_path))  # no fold / image_* keys
    assert data.modalities == ['graph', 'rel']


def test_dbp15k_image_features_add_img(tmp_path):
    _tiny_pair(str(tmp_path), 'xx_en')
    np.save(tmp_path / 'img.npy', np.eye(3, dtype=np.float32))
    (tmp_path / 'ids.txt').write_text('0\n4\n5\n')
    data = load_dataset(_spec(tmp_path, image_features=str(
        tmp_path / 'img.npy'), image_ids=str(tmp_path / 'ids.txt')))
    assert data.modalities == ['graph', 'rel', 'img']
    assert data['source'].mask_img.tolist() == [True, False, False]
    assert data['target'].mask_img.tolist() == [False, True, True]
    assert data['target'].x_img[2].tolist() == [0.0, 0.0, 1.0]


@pytest.mark.parametrize('extra, error, message', [
    (dict(image_ids='ids.txt'), ValueError, 'pass --image-features too'),
    (dict(image_features='nope.npy'), FileNotFoundError, 'nope.npy'),
    (dict(fold=2), ValueError, r'--fold applies to --dataset openea only '
     r'\(not dbp15k\)'),
])
def test_bad_extras_say_the_fix(extra, error, message, tmp_path):
    _tiny_pair(str(tmp_path), 'xx_en')
    extra = {k: os.path.join(str(tmp_path), v) if isinstance(v, str) else v
             for k, v in extra.items()}
    with pytest.raises(error, match=message):
        load_dataset(_spec(tmp_path, **extra))


def test_openea_and_files_need_a_root():
    for name in ('openea', 'files'):
        with pytest.raises(ValueError, match=f'--root is required for '
                           f'--dataset {name}'):
            load_dataset(dict(dataset=name, root=None, no_names=True,
                              split_seed=0))


def test_each_dataset_declares_its_fields():
    assert dataset_fields('synthetic') == ('entities', 'no_names',
                                           'split_seed')
    assert dataset_fields('dbp15k') == ('root', 'pair', 'no_names',
                                        'split_seed', 'download',
                                        'image_features', 'image_ids')
    assert dataset_fields('fbdb15k') == ('root', 'no_names', 'split_seed')
    assert dataset_fields('openea') == ('root', 'fold', 'split_seed',
                                        'image_features', 'image_ids')
    assert dataset_fields('files') == ('root', 'no_names', 'split_seed',
                                       'image_features', 'image_ids')
    for name in dataset_names():
        assert set(dataset_fields(name)) <= set(SPEC_FIELDS)
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        dataset_fields('nope')


def test_unread_field_error_names_flag_and_dataset():
    msg = unread_field_error('synthetic', 'root')
    assert msg.startswith('--root applies to --dataset ') and \
        '(not synthetic)' in msg and 'dbp15k' in msg and '\n' not in msg
    assert unread_field_error('openea', 'no_names') == (
        '--no-names applies to --dataset dbp15k, fbdb15k, files, synthetic '
        'only (not openea); drop it')
    assert 'not supported for --dataset fbdb15k' in unread_field_error(
        'fbdb15k', 'image_features')


def test_register_dataset_records_fields():
    try:
        @register_dataset('test-custom', fields=('root', 'split_seed'))
        def _custom(spec):
            return spec

        @register_dataset('test-default')
        def _default(spec):
            return spec
        assert dataset_fields('test-custom') == ('root', 'split_seed')
        assert dataset_fields('test-default') == SPEC_FIELDS
        # A loader returning the data itself has no file digests.
        data, digests = open_dataset(dict(dataset='test-custom', root='r'))
        assert data['root'] == 'r' and digests == {}
        with pytest.raises(ValueError, match='already'):
            register_dataset('test-custom')(_custom)
        with pytest.raises(ValueError, match='implied'):
            register_dataset('test-bad', fields=('dataset',))
    finally:
        for name in ('test-custom', 'test-default'):
            _REGISTRY.pop(name, None)
            _FIELDS.pop(name, None)


def test_open_dataset_returns_file_digests(tmp_path):
    files = _tiny_pair(str(tmp_path), 'xx_en')
    np.save(tmp_path / 'img.npy', np.eye(3, dtype=np.float32))
    (tmp_path / 'ids.txt').write_text('0\n4\n5\n')
    spec = _spec(tmp_path, image_features=str(tmp_path / 'img.npy'),
                 image_ids=str(tmp_path / 'ids.txt'))
    data, digests = open_dataset(spec)
    assert data.modalities == ['graph', 'rel', 'img']
    read = [f for f in files if not f.startswith('translated')]  # no names
    assert set(digests) == set(read) | {'option:image_features',
                                        'option:image_ids'}
    for name in read:
        assert digests[name] == sha256_file(str(tmp_path / name))
    assert digests['option:image_features'] == sha256_file(
        str(tmp_path / 'img.npy'))
    again, same = load_dataset(spec, return_digests=True)
    assert same == digests
    synthetic = dict(dataset='synthetic', entities=20, no_names=True,
                     split_seed=0)
    assert open_dataset(synthetic)[1] == {}


def test_moved_folder_has_the_same_digests(tmp_path):
    _tiny_pair(str(tmp_path / 'a'), 'xx_en')
    _, here = open_dataset(_spec(tmp_path / 'a'))
    shutil.copytree(tmp_path / 'a', tmp_path / 'b')
    _, there = open_dataset(_spec(tmp_path / 'b'))
    assert here == there and here
    with open(tmp_path / 'b' / 'xx_en' / 'triples_1', 'a') as f:
        f.write('2\t0\t0\n')
    _, edited = open_dataset(_spec(tmp_path / 'b'))
    assert {n for n in here if here[n] != edited[n]} == {'xx_en/triples_1'}


def test_input_digests_hash_each_file_once(tmp_path, monkeypatch):
    from ricea_pyg.datasets import DBP15K, base
    _tiny_pair(str(tmp_path / 'raw'), 'xx_en')
    calls = []
    real = base.sha256_file
    monkeypatch.setattr(base, 'sha256_file',
                        lambda p: calls.append(p) or real(p))
    ds = DBP15K(str(tmp_path / 'raw'), 'xx_en', names=None,
                processed_dir=str(tmp_path / 'proc'), log=False,
                train_ratio=0.34, val_ratio=0.33)
    ds.input_digests()
    ds.inputs_fingerprint()
    assert len(calls) == len(set(calls)) == len(ds.input_digests())
