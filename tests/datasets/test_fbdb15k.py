import warnings

import torch

from ricea_pyg.datasets import FBDB15K
from tests.conftest import data_path

ALIGN = ('source', 'aligned_with', 'target')


def test_fbdb15k_partial_loader(tmp_path):
    root = data_path('fbdb15k')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        data = FBDB15K(root, names=False, processed_dir=str(tmp_path))[0]
    assert any('partial' in str(w.message) for w in caught)
    assert data['source'].num_nodes == 14951
    assert data['target'].num_nodes == 12842
    assert data['source', 'rel', 'source'].edge_index.size(1) == 109071
    assert data['target', 'rel', 'target'].edge_index.size(1) == 99028
    pairs = torch.cat([data[ALIGN][k] for k in ('train_index', 'val_index',
                                                'test_index')], 1)
    assert pairs.size(1) == 12846
    assert pairs[0].unique().numel() == 12846
    assert pairs[1].unique().numel() == 12842  # 4 DB15K entities, 2 mids
    assert data.modalities == ['graph', 'rel', 'attr']
    assert data['source'].mask_attr.sum() == 12493
    assert data['target'].mask_attr.sum() == 10985
