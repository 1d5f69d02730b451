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


def test_projection_without_bias_says_so():
    torch.manual_seed(0)
    proj = ModalityProjection({'rel': 5}, 4, bias=False)
    assert repr(proj) == 'ModalityProjection(rel=5 -> 4, bias=False)'
    assert proj.lins['rel'].bias is None
    x = torch.randn(3, 5)
    assert torch.equal(proj({'rel': x})['rel'], x @ proj.lins['rel'].weight.t())
    with torch.no_grad():
        proj.lins['rel'].weight.zero_()
    proj.reset_parameters()
    assert proj.lins['rel'].weight.abs().sum() > 0
