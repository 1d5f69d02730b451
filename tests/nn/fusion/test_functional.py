import math

import pytest
import torch

from ricea_pyg.nn.fusion import functional as RF


def test_masked_softmax_exact_zeros_and_empty_rows():
    scores = torch.tensor([[1.0, 2.0, 3.0], [5.0, -1.0, 0.0],
                           [1.0, 1.0, 1.0]], requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, False, False],
                         [True, True, True]])
    w = RF.masked_softmax(scores, mask)
    assert w[0, 1] == 0 and torch.allclose(w[0].sum(), torch.tensor(1.0))
    assert torch.equal(w[1], torch.zeros(3))
    assert torch.allclose(w[2], torch.full((3,), 1 / 3))
    w.sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_holo_confidence_hand_computed():
    c = torch.tensor([[0.5, 0.25, 0.9, 0.0]])
    mask = torch.tensor([[True, True, False, False]])
    h = RF.holo_confidence(c, mask, eps=0.0)
    # h_0 = log .25 / (log .5 + log .25) = 2/3, h_1 = 1/3.
    assert torch.allclose(h, torch.tensor([[2 / 3, 1 / 3, 0, 0]]))
    assert torch.allclose(h.sum(), torch.tensor(1.0))  # K - 1


def test_holo_confidence_edge_cases():
    mask = torch.tensor([[True, False, False], [True, True, True],
                         [True, True, True]])
    c = torch.tensor([[0.3, 0.0, 0.0], [1 - 1e-9] * 3, [0.2, 0.4, 0.8]])
    h = RF.holo_confidence(c, mask)
    assert h[0].tolist() == [1.0, 0.0, 0.0]  # K = 1
    assert torch.allclose(h[1], torch.full((3,), 2 / 3))  # |sum log c| tiny
    assert torch.allclose(h[2].sum(), torch.tensor(2.0), atol=1e-5)
    assert h[2].argmax() == 2  # the most confident modality is the strongest


def test_mono_confidence_clamps_and_masks():
    logits = torch.tensor([[100.0, -100.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    c = RF.mono_confidence(logits, mask, eps=1e-3)
    assert torch.allclose(c, torch.tensor([[1 - 1e-3, 1e-3, 0.0]]))


def test_co_belief_stop_gradient():
    c = torch.rand(2, 3, requires_grad=True)
    h = torch.rand(2, 3, requires_grad=True)
    assert not RF.co_belief(c, h).requires_grad
    RF.co_belief(c, h, detach=False).sum().backward()
    assert torch.equal(c.grad, torch.ones(2, 3))


def test_distribution_uniformity_hand_computed():
    # One head, K = 3 present of M = 4.
    A = torch.zeros(1, 1, 4, 4)
    A[0, 0, 0, :3] = torch.tensor([1.0, 0.0, 0.0])    # peaked: DU = DU_max
    A[0, 0, 1, :3] = torch.tensor([1 / 3] * 3)        # uniform: DU = 0
    A[0, 0, 2, :3] = torch.tensor([0.5, 0.5, 0.0])
    mask = torch.tensor([[True, True, True, False]])
    du, u = RF.distribution_uniformity(A, mask, 'row')
    du_max = 2 * 2 / 9
    assert torch.allclose(du[0, :3], torch.tensor([du_max, 0.0, 2 / 9]))
    assert torch.allclose(u[0], torch.tensor([0.0, 1.0, 0.5, 1.0]))


def test_distribution_uniformity_k1_and_variants():
    A = torch.rand(3, 2, 3, 3).softmax(-1)
    mask = torch.tensor([[True, False, False], [True, True, False],
                         [True, True, True]])
    for source in ('row', 'col', 'entity'):
        du, u = RF.distribution_uniformity(A, mask, source)
        assert u[0].tolist() == [0.0, 1.0, 1.0]
        assert ((u >= 0) & (u <= 1)).all() and (du[~mask] == 0).all()
    du, _ = RF.distribution_uniformity(A, mask, 'entity')
    assert torch.allclose(du[2], du[2, :1].expand(3))
    with pytest.raises(ValueError):
        RF.distribution_uniformity(A, mask, 'diag')


def test_k2_calibration_equals_pdf_rule():
    # PDF (Cao et al., ICML 2024), two modalities:
    # RC_1 = min(1, DU_1 / DU_2), RC_2 = min(1, DU_2 / DU_1).
    A = torch.zeros(1, 1, 2, 2)
    A[0, 0, 0] = torch.tensor([0.9, 0.1])   # DU_1 = (.4 + .4) / 2 = 0.4
    A[0, 0, 1] = torch.tensor([0.3, 0.7])   # DU_2 = (.2 + .2) / 2 = 0.2
    mask = torch.ones(1, 2, dtype=torch.bool)
    du, u = RF.distribution_uniformity(A, mask)
    assert torch.allclose(du, torch.tensor([[0.4, 0.2]]))
    assert torch.allclose(u, torch.tensor([[0.2, 0.6]]))  # DU_max = 1/2
    for mode in ('geo', 'pdf_remnant'):
        rc = RF.relative_calibration(du, mask, mode, eps=0.0)
        assert torch.allclose(rc, torch.tensor([[1.0, 0.5]]))


def test_relative_calibration_geo_three_modalities():
    du = torch.tensor([[0.4, 0.1, 0.2, 0.0]])
    mask = torch.tensor([[True, True, True, False]])
    rc = RF.relative_calibration(du, mask, 'geo', eps=0.0)
    expected = [min(1, 0.4 / math.sqrt(0.02)), min(1, 0.1 / math.sqrt(0.08)),
                min(1, 0.2 / math.sqrt(0.04)), 0.0]
    assert torch.allclose(rc, torch.tensor([expected]))
    rem = RF.relative_calibration(du, mask, 'pdf_remnant', eps=0.0)
    assert torch.allclose(rem, torch.tensor([[1.0, 0.1 / 0.6, 0.2 / 0.5,
                                              0.0]]))
    assert not RF.relative_calibration(du.requires_grad_(), mask
                                       ).requires_grad


def test_weighted_fusion_modes():
    x = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])
    w = torch.tensor([[0.5, 0.5]])
    assert torch.allclose(RF.weighted_fusion(x, w, 'concat'),
                          torch.tensor([[0.3, 0.4, 0.0, 0.5]]))
    assert torch.allclose(RF.weighted_fusion(x, w, 'sum'),
                          torch.tensor([[0.3, 0.9]]))
    ragged = RF.weighted_fusion([x[:, 0], x[:, 1, :1]], w, 'concat')
    assert ragged.shape == (1, 3)
    with pytest.raises(ValueError):
        RF.weighted_fusion(x, w, 'max')


def test_distribution_uniformity_col_hand_computed():
    # Three of four modalities present; two heads whose mean is
    #   row 0: [.6, .2, .2]   row 1: [.6, .4, 0]   row 2: [.8, .2, 0].
    # The missing row 3 holds junk that must not enter the column sums.
    mean = torch.tensor([[.6, .2, .2, 0.], [.6, .4, 0., 0.],
                         [.8, .2, 0., 0.], [.1, .1, .1, .7]])
    shift = torch.tensor([[.2, -.2, 0., 0.], [-.2, .2, 0., 0.],
                          [.1, -.1, 0., 0.], [0., 0., 0., 0.]])
    A = torch.stack([mean + shift, mean - shift]).unsqueeze(0)
    mask = torch.tensor([[True, True, True, False]])
    du, u = RF.distribution_uniformity(A, mask, 'col')
    # Columns over present rows: [.6, .6, .8] / 2 = [.3, .3, .4],
    # [.2, .4, .2] / .8 = [.25, .5, .25], [.2, 0, 0] / .2 = [1, 0, 0];
    # DU = sum |a - 1/3| / 3 = [2/45, 1/9, 4/9]; DU_max = 4/9.
    assert torch.allclose(du, torch.tensor([[2 / 45, 1 / 9, 4 / 9, 0.0]]))
    assert torch.allclose(u, torch.tensor([[0.9, 0.75, 0.0, 1.0]]))
    # The rows of the same attention give other values: the switch matters.
    du_row, u_row = RF.distribution_uniformity(A, mask, 'row')
    assert torch.allclose(du_row, torch.tensor([[8 / 45, 2 / 9, 14 / 45,
                                                 0.0]]))
    assert torch.allclose(u_row, torch.tensor([[0.6, 0.5, 0.3, 1.0]]))


def test_entity_uncertainty_gives_no_relative_calibration():
    # Why ADCFusion refuses uncertainty='entity': equal DUs make RC blind
    # to the attention (1 with 'geo', 1 / (K - 1) with 'pdf_remnant').
    A = torch.rand(4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(4, 3, dtype=torch.bool)
    du, _ = RF.distribution_uniformity(A.softmax(-1), mask, 'entity')
    assert torch.allclose(du, du[:, :1].expand(4, 3))
    assert torch.allclose(RF.relative_calibration(du, mask, 'geo'),
                          torch.ones(4, 3))
    assert torch.allclose(RF.relative_calibration(du, mask, 'pdf_remnant'),
                          torch.full((4, 3), 0.5))


def test_safe_normalize_gives_a_zero_row_no_gradient():
    from torch.nn import functional as F
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, generator=gen)
    x[1] = 0.0
    x[2] *= 1e12  # entries beyond finfo.max ** 0.25
    x.requires_grad_()
    y = RF.safe_normalize(x)
    assert torch.equal(y[1], torch.zeros(5))
    assert torch.allclose(y[[0, 2]], F.normalize(x.detach()[[0, 2]], dim=1))
    (y * torch.randn(3, 5, generator=gen)).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad[1], torch.zeros(5))  # was 1 / epsilon ~ 1e38
