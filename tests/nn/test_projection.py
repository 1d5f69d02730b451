import pytest
import torch

from ricea_pyg.nn.projection import ModalityProjection


def test_projection_rows_and_repr():
    proj = ModalityProjection({'rel': 5, 'name': 3}, 4)
    xs = {'rel': torch.randn(6, 5), 'name': torch.randn(6, 3)}
    out = proj(xs)
    assert out['rel'].shape == (6, 4) and out['name'].shape == (6, 4)
    idx = torch.tensor([4, 1])
    assert torch.allclose(proj(xs, idx)['rel'], out['rel'][idx])
    assert repr(proj) == 'ModalityProjection(rel=5, name=3 -> 4)'
    with pytest.raises(KeyError, match='img'):
        proj({'img': torch.randn(2, 2)})
