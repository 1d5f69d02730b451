import pytest
import torch

from ricea_pyg.data import split_alignment, unaligned_entities


def _pairs(n):
    return torch.stack([torch.arange(n), torch.arange(n) + 1000])


def test_split_is_disjoint_and_covering():
    parts = split_alignment(_pairs(1000), 0.3, 0.1, seed=3)
    sizes = [parts[k].size(1) for k in ('train_index', 'val_index',
                                        'test_index')]
    assert sizes == [300, 100, 600]
    src = torch.cat([parts[k][0] for k in parts])
    assert sorted(src.tolist()) == list(range(1000))
    for v in parts.values():
        assert torch.equal(v[1], v[0] + 1000)


def test_split_is_seeded_and_shuffled():
    a = split_alignment(_pairs(500), seed=1)
    b = split_alignment(_pairs(500), seed=1)
    c = split_alignment(_pairs(500), seed=2)
    assert torch.equal(a['train_index'], b['train_index'])
    assert not torch.equal(a['train_index'], c['train_index'])
    # Not the first 30% of the file order (DBP15K's ids leak the alignment).
    assert a['train_index'][0].max() > 200


def test_official_train_mask():
    mask = torch.arange(100) >= 70
    parts = split_alignment(_pairs(100), val_ratio=0.1, train_mask=mask)
    assert sorted(parts['train_index'][0].tolist()) == list(range(70, 100))
    assert parts['val_index'].size(1) == 10
    assert parts['test_index'][0].max() < 70


@pytest.mark.parametrize('train,val', [(0, 0.1), (0.95, 0.1), (0.3, -0.1)])
def test_bad_ratios(train, val):
    with pytest.raises(ValueError, match='train_ratio'):
        split_alignment(_pairs(10), train, val)


def test_unaligned_entities():
    pairs = torch.tensor([[0, 3], [2, 1]])
    free_s, free_t = unaligned_entities(pairs, 5, 4)
    assert free_s.tolist() == [1, 2, 4]
    assert free_t.tolist() == [0, 3]
