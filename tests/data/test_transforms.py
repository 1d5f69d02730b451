import copy

import pytest
import torch

from ricea_pyg.data import (
    SIDES,
    CorruptModalities,
    DropTriples,
    PairInputs,
    corrupted_flags,
    relation_edge,
    synthetic_pair,
)

MODS = ['name', 'char']


@pytest.fixture(scope='module')
def data():
    # Some entities already lack a name: they must stay untouched.
    return synthetic_pair(400, missing={'name': 0.1}, seed=3)


def snapshot(data):
    return {(t, k): v.clone() for t in SIDES
            for k, v in data[t].items() if torch.is_tensor(v)}


def unchanged(data, snap):
    return all(torch.equal(data[t][k], v) for (t, k), v in snap.items()) \
        and not any(k.startswith('corrupted_') for t in SIDES
                    for k in data[t].keys())


@pytest.mark.parametrize('treatment', ['missing', 'noise', 'wrong'])
@pytest.mark.parametrize('keep', [0.0, 0.25, 0.6])
def test_kept_fraction_and_flags(data, treatment, keep):
    out = CorruptModalities(MODS, keep, treatment, seed=1)(data)
    for t in SIDES:
        for m in MODS:
            had = data[t][f'mask_{m}']
            flag = out[t][f'corrupted_{m}']
            assert flag.dtype == torch.bool and flag.shape == had.shape
            assert not flag[~had].any()  # already missing: not corrupted
            kept = int((had & ~flag).sum())
            assert abs(kept - keep * int(had.sum())) <= 1
            x0, x1 = data[t][f'x_{m}'], out[t][f'x_{m}']
            # Clean entities are untouched.
            assert torch.equal(x1[~flag], x0[~flag])
            # Already-missing entities stay missing.
            assert not out[t][f'mask_{m}'][~had].any()


def test_missing_flips_exactly_the_corrupted_masks(data):
    out = CorruptModalities(MODS, 0.5, 'missing', seed=0)(data)
    for t in SIDES:
        for m in MODS:
            flag = out[t][f'corrupted_{m}']
            assert flag.sum() > 0
            assert torch.equal(out[t][f'mask_{m}'],
                               data[t][f'mask_{m}'] & ~flag)
            assert out[t][f'x_{m}'][flag].abs().sum() == 0
    # The model-facing view sees the new masks.
    inputs = PairInputs.from_data(out, ['graph', 'name'])
    flags = corrupted_flags(out, 'name')  # in the model's entity order
    assert flags.dtype == torch.bool and flags.shape == (inputs.num_entities,)
    assert not inputs.mask[flags, 1].any()
    # Every other present name is still there.
    had = PairInputs.from_data(data, ['graph', 'name']).mask[:, 1]
    assert torch.equal(inputs.mask[:, 1], had & ~flags)
    assert torch.equal(corrupted_flags(out, 'name', ['target']),
                       out['target'].corrupted_name)


def test_corrupted_flags_need_the_transform(data):
    with pytest.raises(ValueError, match=r"corrupted_rel.*CorruptModalities"):
        corrupted_flags(data, 'rel')


def test_noise_has_kept_statistics(data):
    out = CorruptModalities(MODS, 0.5, 'noise', seed=0)(data)
    for t in SIDES:
        for m in MODS:
            flag = out[t][f'corrupted_{m}']
            had = data[t][f'mask_{m}']
            kept = had & ~flag
            x0, x1 = data[t][f'x_{m}'], out[t][f'x_{m}']
            assert torch.equal(out[t][f'mask_{m}'], had)  # still present
            noisy = x1[flag]
            assert (noisy != x0[flag]).any(dim=1).all()
            ref = x0[kept]
            tol_mean = 4 * ref.std(0) / flag.sum() ** 0.5 + 1e-6
            assert ((noisy.mean(0) - ref.mean(0)).abs() < tol_mean).all()
            ratio = noisy.std(0) / ref.std(0)
            assert ((ratio > 0.6) & (ratio < 1.4)).all()


def test_wrong_takes_another_entitys_row(data):
    out = CorruptModalities(MODS, 0.3, 'wrong', seed=0)(data)
    for t in SIDES:
        for m in MODS:
            flag = out[t][f'corrupted_{m}']
            had = data[t][f'mask_{m}']
            x0, x1 = data[t][f'x_{m}'], out[t][f'x_{m}']
            assert torch.equal(out[t][f'mask_{m}'], had)
            for i in flag.nonzero().view(-1).tolist():
                same = (x0 == x1[i]).all(dim=1)
                same[i] = False
                # A row of another entity that has the modality...
                assert (same & had).any()
                # ...and never its own.
                assert not torch.equal(x1[i], x0[i])


def test_keep_ratio_one_is_identity(data):
    out = CorruptModalities(MODS, 1.0, 'wrong', seed=0)(data)
    for t in SIDES:
        for m in MODS:
            assert torch.equal(out[t][f'x_{m}'], data[t][f'x_{m}'])
            assert torch.equal(out[t][f'mask_{m}'], data[t][f'mask_{m}'])
            assert not out[t][f'corrupted_{m}'].any()


@pytest.mark.parametrize('transform', [
    CorruptModalities(MODS, 0.4, 'missing'),
    CorruptModalities(MODS, 0.4, 'noise'),
    CorruptModalities(MODS, 0.4, 'wrong'),
    DropTriples(0.5),
])
def test_input_not_modified(transform):
    data = synthetic_pair(300, seed=1)
    snap = snapshot(data)
    edges = {e: (data[e].edge_index.clone(), data[e].edge_type.clone())
             for e in data.edge_types if e[1] == 'rel'}
    transform(data)
    assert unchanged(data, snap)
    for e, (ei, et) in edges.items():
        assert torch.equal(data[e].edge_index, ei)
        assert torch.equal(data[e].edge_type, et)


@pytest.mark.parametrize('treatment', ['missing', 'noise', 'wrong'])
def test_deterministic_in_seed(data, treatment):
    a = CorruptModalities(MODS, 0.5, treatment, seed=4)(data)
    b = CorruptModalities(MODS, 0.5, treatment, seed=4)(copy.copy(data))
    c = CorruptModalities(MODS, 0.5, treatment, seed=5)(data)
    for t in SIDES:
        for m in MODS:
            for key in (f'x_{m}', f'mask_{m}', f'corrupted_{m}'):
                assert torch.equal(a[t][key], b[t][key])
            assert not torch.equal(a[t][f'corrupted_{m}'],
                                   c[t][f'corrupted_{m}'])
    # Independent per node type and modality.
    assert not torch.equal(a['source'].corrupted_name[:300],
                           a['target'].corrupted_name[:300])
    # The choice for one modality does not depend on the others listed.
    d = CorruptModalities(['name'], 0.5, treatment, seed=4)(data)
    assert torch.equal(d['source'].corrupted_name,
                       a['source'].corrupted_name)


def test_node_types_subset(data):
    out = CorruptModalities('name', 0.0, 'missing',
                            node_types=('source', ))(data)
    assert not out['source'].mask_name.any()
    assert torch.equal(out['target'].mask_name, data['target'].mask_name)
    assert 'corrupted_name' not in out['target']


def test_flags_compose(data):
    once = CorruptModalities('name', 0.5, 'noise', seed=0)(data)
    twice = CorruptModalities('name', 0.5, 'noise', seed=1)(once)
    assert (twice['source'].corrupted_name >=
            once['source'].corrupted_name).all()


def test_repr():
    assert repr(CorruptModalities(MODS, 0.6, 'noise', seed=2)) == (
        "CorruptModalities(['name', 'char'], keep_ratio=0.6, "
        "treatment='noise', seed=2)")
    assert repr(DropTriples(0.25)) == 'DropTriples(ratio=0.25, seed=0)'


@pytest.mark.parametrize('ratio', [0.0, 0.25, 0.5, 1.0])
def test_drop_triples(data, ratio):
    out = DropTriples(ratio, seed=0)(data)
    for t in SIDES:
        e = relation_edge(t)
        ei, et = data[e].edge_index, data[e].edge_type
        n = ei.size(1)
        ei1, et1 = out[e].edge_index, out[e].edge_type
        assert ei1.size(1) == et1.numel() == n - round(ratio * n)
        # Every kept (head, tail, type) is an original triple, in order.
        key = (ei[0] * data[t].num_nodes + ei[1]) * 1000 + et
        key1 = (ei1[0] * data[t].num_nodes + ei1[1]) * 1000 + et1
        pos = {k: i for i, k in enumerate(key.tolist())}
        idx = [pos[k] for k in key1.tolist()]
        assert idx == sorted(idx)
        assert torch.equal(out[t].x_rel, data[t].x_rel)
    a = DropTriples(0.3, seed=1)(data)
    b = DropTriples(0.3, seed=1)(data)
    c = DropTriples(0.3, seed=2)(data)
    e = relation_edge('source')
    assert torch.equal(a[e].edge_index, b[e].edge_index)
    assert not torch.equal(a[e].edge_index, c[e].edge_index)


@pytest.mark.parametrize('kwargs, match', [
    (dict(modalities=['name'], keep_ratio=1.5), r'keep_ratio .*\[0, 1\]'),
    (dict(modalities=['name'], keep_ratio=-0.1), r'keep_ratio'),
    (dict(modalities=['name'], keep_ratio='0.5'), r'keep_ratio'),
    (dict(modalities=['name'], keep_ratio=0.5, treatment='zero'),
     r"unknown treatment 'zero'"),
    (dict(modalities=[], keep_ratio=0.5), 'modalities is empty'),
    (dict(modalities=['graph'], keep_ratio=0.5), "'graph' has no input"),
    (dict(modalities=['name', 'name'], keep_ratio=0.5), 'repeats'),
    (dict(modalities=['name'], keep_ratio=0.5, seed=1.5), 'seed'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CorruptModalities(**kwargs)


def test_bad_data(data):
    with pytest.raises(ValueError, match=r"modality 'img2' is not in this "
                       r"data \(has \['rel', 'attr', 'img', 'name', "
                       r"'char'\]\)"):
        CorruptModalities(['name', 'img2'], 0.5)(data)
    with pytest.raises(ValueError, match=r"node type\(s\) \['kg3'\]"):
        CorruptModalities('name', 0.5, node_types=('kg3', ))(data)
    with pytest.raises(ValueError, match='ratio'):
        DropTriples(2.0)
    with pytest.raises(ValueError, match=r"node type\(s\) \['kg3'\]"):
        DropTriples(0.5, node_types=['kg3'])(data)


def test_wrong_needs_two_entities():
    data = synthetic_pair(50, missing={'name': 0.0}, seed=0)
    mask = torch.zeros_like(data['source'].mask_name)
    mask[0] = True
    data['source'].mask_name = mask
    with pytest.raises(ValueError, match='at least 2'):
        CorruptModalities('name', 0.0, 'wrong',
                          node_types=('source', ))(data)
