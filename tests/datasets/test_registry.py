import os

import numpy as np
import pytest

from ricea_pyg.datasets import dataset_names, load_dataset
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
    (dict(fold=2), ValueError, '--fold applies to --dataset openea'),
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
