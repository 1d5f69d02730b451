import pytest
import torch

from ricea_pyg.data import planted_embeddings, synthetic_pair
from ricea_pyg.data.pair import MODALITIES

ALIGN = ('source', 'aligned_with', 'target')


def test_schema_and_determinism():
    a = synthetic_pair(300, seed=7)
    b = synthetic_pair(300, seed=7)
    c = synthetic_pair(300, seed=8)
    assert a.modalities == list(MODALITIES)
    for side in ('source', 'target'):
        for m in MODALITIES[1:]:
            assert torch.equal(a[side][f'x_{m}'], b[side][f'x_{m}'])
            assert a[side][f'mask_{m}'].dtype == torch.bool
    assert not torch.equal(a['source'].x_img, c['source'].x_img)


def test_alignment_is_correct_and_ids_do_not_leak():
    data = synthetic_pair(500, unmatched=0.1, seed=1)
    pairs = torch.cat([data[ALIGN][k] for k in ('train_index', 'val_index',
                                                'test_index')], dim=1)
    s_lat = data['source'].orig_id[pairs[0]]
    t_lat = data['target'].orig_id[pairs[1]]
    assert torch.equal(s_lat, t_lat)
    assert pairs.size(1) < 500  # unmatched entities have no link
    assert (pairs[0] == pairs[1]).float().mean() < 0.05


def test_missing_modalities_are_masked_zeros():
    data = synthetic_pair(1000, missing={'img': 0.4, 'name': 0.2}, seed=2)
    for side in ('source', 'target'):
        mask = data[side].mask_img
        assert 0.3 < 1 - mask.float().mean() < 0.5
        assert data[side].x_img[~mask].abs().sum() == 0
        assert data[side].x_img[mask].abs().sum(1).min() > 0


def test_unknown_missing_modality():
    with pytest.raises(ValueError, match='not generated'):
        synthetic_pair(10, modalities=('rel',), missing={'img': 0.5})


def test_noise_controls_agreement():
    def agreement(noise):
        data = synthetic_pair(400, noise={'img': noise}, seed=0)
        p = data[ALIGN]['test_index']
        xs = torch.nn.functional.normalize(data['source'].x_img[p[0]], dim=1)
        xt = torch.nn.functional.normalize(data['target'].x_img[p[1]], dim=1)
        return (xs @ xt.t()).argmax(1).eq(torch.arange(p.size(1))).float(
        ).mean()
    assert agreement(0.05) > 0.9 > agreement(3.0)


def test_planted_embeddings():
    src, tgt, pairs = planted_embeddings(200, 16, noise=0.1, seed=0)
    assert src.shape == tgt.shape == (200, 16)
    assert torch.allclose(src.norm(dim=1), torch.ones(200))
    hit = (src @ tgt.t()).argmax(1) == pairs[1]
    assert hit.float().mean() > 0.95


def test_class_labels_and_homophily():
    data = synthetic_pair(2000, num_classes=4, homophily=0.9, seed=3)
    y = data['source'].y
    assert y.shape == (data['source'].num_nodes,) and y.max() == 3
    ei = data['source', 'rel', 'source'].edge_index
    assert (y[ei[0]] == y[ei[1]]).float().mean() > 0.85
    p = data[ALIGN]['test_index']
    assert torch.equal(y[p[0]], data['target'].y[p[1]])


def test_planted_embeddings_clustered():
    src, tgt, pairs = planted_embeddings(500, 16, noise=0.1, seed=0,
                                         num_clusters=5, cluster_spread=0.2)
    hit = (src @ tgt.t()).argmax(1) == pairs[1]
    assert hit.float().mean() > 0.9
    # Same-cluster rows are near each other; isotropic rows almost never.
    iso, _, _ = planted_embeddings(500, 16, seed=0)
    assert ((src @ src.t()) > 0.8).float().mean() > 0.1
    assert ((iso @ iso.t()) > 0.8).float().mean() < 0.01
