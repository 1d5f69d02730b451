import pytest
import torch

from ricea_pyg.data import planted_embeddings, synthetic_pair
from ricea_pyg.data.pair import MODALITIES
from ricea_pyg.data.synthetic import SCALE_PROFILE, scale_pair

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


def _degrees(data, side='source'):
    ei = data[side, 'rel', side].edge_index
    return torch.bincount(ei.reshape(-1), minlength=data[side].num_nodes)


def test_tail_degree_is_the_unchanged_default():
    a = synthetic_pair(300, seed=7)
    b = synthetic_pair(300, degree='tail', degree_exponent=3.0,
                       relation_skew=0.0, rel_vocab=None, seed=7)
    for side in ('source', 'target'):
        ei = (side, 'rel', side)
        assert torch.equal(a[ei].edge_index, b[ei].edge_index)
        assert torch.equal(a[ei].edge_type, b[ei].edge_type)
        assert torch.equal(a[side].x_img, b[side].x_img)
        assert a[side].x_rel.size(1) == 20
    # Pinned draw of the historical generator (any change of its RNG order
    # shows here).
    ei = a['source', 'rel', 'source'].edge_index
    assert ei.size(1) == 495


def test_powerlaw_degrees_are_skewed():
    def skew(data):
        deg = _degrees(data).float()
        return deg.max() / deg[deg > 0].median()
    tail = synthetic_pair(20000, avg_degree=6.0, modalities=('rel',), seed=0)
    power = synthetic_pair(20000, avg_degree=6.0, modalities=('rel',),
                           degree='powerlaw', degree_exponent=2.2, seed=0)
    assert skew(power) > 3 * skew(tail)
    # Tail slope of the degree distribution: P(deg >= k) ~ k^(1 - gamma).
    deg = _degrees(power).float()
    ks = torch.tensor([8.0, 16.0, 32.0, 64.0])
    ccdf = torch.stack([(deg >= k).float().mean() for k in ks])
    x, y = ks.log(), ccdf.log()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2
                                                        ).sum()
    assert 1.6 < 1 - slope < 3.2


def test_relation_skew():
    def counts(skew):
        data = synthetic_pair(3000, num_relations=50, relation_skew=skew,
                              modalities=('rel',), seed=0)
        c = torch.bincount(data['source', 'rel', 'source'].edge_type,
                           minlength=50).float()
        return c.max() / c.median()
    assert counts(1.0) > 10
    assert counts(0.0) < 2


def test_rel_vocab_caps_width_and_masks_empty_rows():
    full = synthetic_pair(2000, num_relations=200, relation_skew=1.0,
                          seed=4)
    capped = synthetic_pair(2000, num_relations=200, relation_skew=1.0,
                            rel_vocab=5, seed=4)
    assert full['source'].x_rel.size(1) == 200
    for side in ('source', 'target'):
        x, mask = capped[side].x_rel, capped[side].mask_rel
        assert x.size(1) == 5
        assert torch.equal(mask, (x != 0).any(1))
        assert 0 < (~mask).sum() and (~mask).sum() > (
            ~full[side].mask_rel).sum()
    # Column 0 counts the most frequent relation type (0 under Zipf).
    et = capped['source', 'rel', 'source'].edge_type
    assert capped['source'].x_rel[:, 0].sum() == 2 * (et == 0).sum()


def test_scale_pair_is_deterministic_and_uses_the_profile():
    a = scale_pair(3000, seed=1)
    b = scale_pair(3000, seed=1)
    c = scale_pair(3000, seed=2)
    for side in ('source', 'target'):
        for key in ('x_rel', 'x_name', 'orig_id'):
            assert torch.equal(a[side][key], b[side][key])
    assert not torch.equal(a['source'].x_name, c['source'].x_name)
    assert a['source'].x_rel.size(1) == SCALE_PROFILE['rel_vocab']
    small = scale_pair(3000, seed=1, rel_vocab=10, modalities=('rel',))
    assert small['source'].x_rel.size(1) == 10
    assert small.modalities == ['graph', 'rel']


@pytest.mark.parametrize('kwargs, match', [
    (dict(degree='zipf'), "degree 'tail' or 'powerlaw'"),
    (dict(degree='powerlaw', degree_exponent=1.0), 'degree_exponent > 1'),
    (dict(degree_exponent=float('nan')), 'degree_exponent'),
    (dict(relation_skew=-1.0), 'relation_skew >= 0'),
    (dict(rel_vocab=0), 'rel_vocab >= 1'),
    (dict(rel_vocab=2.5), 'rel_vocab'),
    (dict(family_size=0), 'family_size >= 1'),
    (dict(family_spread=-0.1), 'family_spread >= 0'),
])
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_pair(50, **kwargs)


def test_families_make_features_ambiguous():
    def hits(**kw):
        data = synthetic_pair(2000, latent_dim=32, val_ratio=0.5,
                              noise={'name': 0.2}, seed=0, **kw)
        p = data[ALIGN]['val_index']
        xs = torch.nn.functional.normalize(data['source'].x_name[p[0]], dim=1)
        xt = torch.nn.functional.normalize(data['target'].x_name[p[1]], dim=1)
        return (xs @ xt.t()).argmax(1).eq(torch.arange(p.size(1))).float(
        ).mean()
    assert hits(family_size=32, family_spread=0.05) < 0.5 < hits()
