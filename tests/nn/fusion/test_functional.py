import math

import pytest
import torch

from ricea_pyg.loss import in_batch_logits
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


def test_tcp_target_and_loss_hand_checked():
    # B = 2 pairs, M = 1 modality, tau = 1.
    s = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    t = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    p_s, p_t = RF.tcp_target(s, t, tau=1.0)
    e = math.e
    # source 0: cross [1, 1], same-KG [masked, 0] -> p = e / (2e + 1)
    # source 1: cross [0, 0], same-KG [0, masked] -> p = 1 / 3
    assert torch.allclose(p_s[:, 0], torch.tensor([e / (2 * e + 1), 1 / 3]))
    # target 0: cross [1, 0], same-KG [masked, 1] -> e / (2e + 1)
    assert torch.allclose(p_t[0, 0], torch.tensor(e / (2 * e + 1)))
    logits = in_batch_logits(s[:, 0], t[:, 0], 1.0)
    assert logits.shape == (2, 4) and logits[0, 2] == float('-inf')
    c = torch.tensor([[0.5], [0.5]], requires_grad=True)
    valid = torch.tensor([[True], [False]])
    loss = RF.tcp_loss(c, p_s, valid)
    assert torch.allclose(loss, (0.5 - p_s[0, 0]).abs())
    loss.backward()
    assert c.grad[1, 0] == 0
    assert RF.tcp_loss(c, p_s, torch.zeros_like(valid)) == 0
