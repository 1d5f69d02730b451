"""Masks are exact: what masked rows hold never reaches a fusion's output or
gradient (issue 16)."""
import pytest
import torch

from ricea_pyg.nn import fusion_resolver

N, M, D = 6, 4, 8
FUSIONS = ['adc', 'meaformer', 'global', 'concat']


def _inputs(seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, M, D, generator=g) * scale
    mask = torch.ones(N, M, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = mask[1, 3] = mask[2, 2] = False
    mask[3, 1:] = False  # one modality left
    return x, mask


def _build(name, seed=0):
    torch.manual_seed(seed)
    return fusion_resolver(name, num_modalities=M, channels=D).eval()


def _run(fusion, x, mask, fill):
    x = x.clone()
    x[~mask] = fill
    x.requires_grad_(True)
    out, (w, _) = fusion(x, mask, return_weights=True)
    out.square().sum().backward()
    params = [p.grad for p in fusion.parameters() if p.grad is not None]
    return out.detach(), w.detach(), x.grad, params


@pytest.mark.parametrize('name', FUSIONS)
@pytest.mark.parametrize('fill', [float('nan'), float('inf'),
                                  float('-inf'), 1e30])
def test_masked_rows_never_leak(name, fill):
    x, mask = _inputs()
    ref = _run(_build(name), x, mask, 0.0)
    got = _run(_build(name), x, mask, fill)
    assert torch.isfinite(ref[0]).all()
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], ref[1], rtol=0, atol=0)
    assert torch.isfinite(got[2]).all()
    assert got[2][~mask].eq(0).all()  # no gradient into missing rows
    torch.testing.assert_close(got[2], ref[2], rtol=0, atol=0)
    for a, b in zip(got[3], ref[3]):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize('name', FUSIONS)
def test_list_input_is_exact_too(name):
    x, mask = _inputs(1)
    fusion = _build(name)
    bad = x.clone()
    bad[~mask] = float('nan')
    ref = fusion(list(x.unbind(1)), mask)
    got = fusion(list(bad.unbind(1)), mask)
    assert torch.equal(got, ref)


@pytest.mark.parametrize('name', FUSIONS)
def test_huge_inputs_stay_finite(name):
    x, mask = _inputs(2, scale=1e30)
    out, w, grad, params = _run(_build(name), x, mask, float('nan'))
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    assert torch.isfinite(grad).all()
    assert all(torch.isfinite(p).all() for p in params)
    # Scaling every present row does not change the normalised output.
    small = _run(_build(name), x / 1e30, mask, 0.0)
    if name in ('global', 'concat'):
        torch.testing.assert_close(out, small[0])


@pytest.mark.parametrize('name', FUSIONS)
def test_bfloat16_autocast_is_exact_and_finite(name):
    x, mask = _inputs(3)
    fusion = _build(name)
    outs = []
    for fill in (0.0, float('nan'), float('inf')):
        xx = x.clone()
        xx[~mask] = fill
        xx.requires_grad_(True)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = fusion(xx, mask)
        out.float().square().sum().backward()
        assert torch.isfinite(out.float()).all()
        assert torch.isfinite(xx.grad).all() and xx.grad[~mask].eq(0).all()
        outs.append(out.detach())
    assert all(torch.equal(o, outs[0]) for o in outs[1:])


def test_masks_still_matter():
    # The test above would pass for a fusion that ignored its input; check
    # that present rows do change the output.
    x, mask = _inputs()
    for name in FUSIONS:
        fusion = _build(name)
        y = x.clone()
        y[mask] += 1
        assert not torch.equal(fusion(x, mask), fusion(y, mask))


def test_tcp_loss_ignores_invalid_entries():
    from ricea_pyg.loss import tcp_loss
    g = torch.Generator().manual_seed(0)
    c = torch.rand(5, 3, generator=g)
    p = torch.rand(5, 3, generator=g)
    valid = torch.rand(5, 3, generator=g) > 0.4
    grads, values = [], []
    for fill in (0.0, float('nan'), float('inf')):
        cc = c.clone()
        cc[~valid] = fill
        pp = p.clone()
        pp[~valid] = fill
        cc.requires_grad_(True)
        loss = tcp_loss(cc, pp, valid)
        loss.backward()
        values.append(loss.detach())
        grads.append(cc.grad)
    expect = (c - p).abs()[valid].mean()
    torch.testing.assert_close(values[0], expect)
    for v, gr in zip(values, grads):
        assert torch.equal(v, values[0]) and torch.equal(gr, grads[0])
        assert torch.isfinite(gr).all() and gr[~valid].eq(0).all()


def test_masked_icl_mix_ignores_invalid_pairs():
    from ricea_pyg.loss import _mix
    l2r = torch.tensor([[1.0, float('nan'), 3.0]])
    r2l = torch.tensor([[1.0, float('inf'), 1.0]])
    weight = torch.tensor([[True, False, True]])
    assert _mix(l2r, r2l, 0.5, weight).item() == 1.5
