"""Contract tests every registered fusion must pass, plus one specific test
per fusion (the meta-test checks that both exist)."""
import gc
import inspect
import math
import typing
from typing import Literal, Optional, Tuple

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import ricea_pyg.nn.fusion as fusion_pkg
from ricea_pyg.nn import (
    FUSIONS,
    ADCFusion,
    ConcatFusion,
    GlobalWeightFusion,
    MEAformerFusion,
    ModalityFusion,
    RelativeInteraction,
    fusion_resolver,
)
from ricea_pyg.nn.fusion import (
    DEFAULT_FUSION,
    ConfidenceMLP,
    CrossModalTransformer,
    InteractionOutput,
    fusion_classes,
)
from ricea_pyg.nn.fusion import base as base_module
from ricea_pyg.nn.fusion import functional as RF

M, C, N = 4, 8, 6

# Constructor and expected repr for each registered fusion.
CASES = {
    ConcatFusion: (dict(num_modalities=M), 'ConcatFusion(4)'),
    GlobalWeightFusion: (dict(num_modalities=M), 'GlobalWeightFusion(4)'),
    MEAformerFusion: (dict(num_modalities=M, channels=C),
                      'MEAformerFusion(4, 8)'),
    ADCFusion: (dict(num_modalities=M, channels=C), 'ADCFusion(4, 8)'),
}
ALL = list(CASES)

# A value other than the default for every constructor option of the
# fusions and their parts (a new option must be added here).
NON_DEFAULT = dict(mode='sum', uncertainty='col', calibration='pdf_remnant',
                   calibrate_in_train=False, temperature=1.0,
                   weights_grad=True, detach_belief=False,
                   shared_confidence=True, num_layers=2, heads=2, ffn=True,
                   dropout=0.1, eps=1e-4, ffn_channels=5, shared=True,
                   scoring='pair_mean', features='z', hidden=[3],
                   confidence_hidden=[3], transformer_input_grad=False)


def make(cls, **extra):
    torch.manual_seed(0)
    kwargs, _ = CASES[cls]
    return cls(**{**kwargs, **extra})


def inputs(n=N, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, M, C, generator=gen)
    mask = torch.rand(n, M, generator=gen) > 0.3
    mask[0] = False                       # nothing present
    mask[1] = torch.tensor([False, True, False, False])  # K = 1
    mask[2] = True
    return x, mask


def test_every_fusion_has_a_test_case():
    registered = set(FUSIONS.values())
    subclasses = {obj for _, obj in inspect.getmembers(fusion_pkg,
                                                       inspect.isclass)
                  if issubclass(obj, ModalityFusion) and obj is not
                  ModalityFusion}
    own = {cls for cls in fusion_classes()
           if cls.__module__.startswith('ricea_pyg.')}
    missing = (registered | subclasses | own) - set(CASES)
    assert not missing, f'fusions without a test case: {missing}'
    names = {n for n, _ in inspect.getmembers(
        inspect.getmodule(test_every_fusion_has_a_test_case),
        inspect.isfunction)}
    for cls in CASES:
        assert f'test_{cls.__name__.lower()}_specific' in names, cls


@pytest.mark.parametrize('cls', ALL)
def test_repr(cls):
    assert repr(make(cls)) == CASES[cls][1]


def _options(cls):
    return [name for name, p in inspect.signature(cls).parameters.items()
            if p.default is not p.empty and name != 'channels']


@pytest.mark.parametrize('cls', ALL)
def test_repr_shows_every_option_that_differs_from_its_default(cls):
    kwargs, default = CASES[cls]
    for name in _options(cls):
        assert name in NON_DEFAULT, f'add a non-default {name!r} here'
        value = NON_DEFAULT[name]
        f = make(cls, **{name: value})
        assert repr(f) == f'{default[:-1]}, {name}={value!r})', name
    # Options passed at their default value are not shown.
    defaults = {name: inspect.signature(cls).parameters[name].default
                for name in _options(cls)}
    assert repr(make(cls, **defaults)) == default


def test_adc_repr_shows_temperature_and_several_options():
    # The method's T = 1 is not the default (4).
    assert repr(make(ADCFusion, temperature=1)) == (
        'ADCFusion(4, 8, temperature=1)')
    assert repr(make(ADCFusion, temperature=4)) == 'ADCFusion(4, 8)'
    f = make(ADCFusion, heads=2, uncertainty='col', mode='sum')
    assert repr(f) == "ADCFusion(4, 8, uncertainty='col', mode='sum', heads=2)"


@pytest.mark.parametrize('module, positional', [
    (RelativeInteraction(M, C), 'RelativeInteraction(4, 8'),
    (CrossModalTransformer(C), 'CrossModalTransformer(8'),
    (ConfidenceMLP(C, M), 'ConfidenceMLP(8, 4'),
])
def test_parts_repr_shows_every_option_that_differs(module, positional):
    cls = type(module)
    assert repr(module) == positional + ')'
    args = [p for p in inspect.signature(cls).parameters.values()
            if p.default is p.empty]
    for name, p in inspect.signature(cls).parameters.items():
        if p.default is p.empty:
            continue
        value = NON_DEFAULT[name]
        part = cls(*[{'channels': C, 'num_modalities': M}[a.name]
                     for a in args], **{name: value})
        assert repr(part) == f'{positional}, {name}={value!r})'


def test_forward_overloads_type_return_weights():
    hints = [typing.get_type_hints(f, vars(base_module))
             for f in typing.get_overloads(ModalityFusion.forward)]
    returns = {h['return_weights']: h['return'] for h in hints}
    weights = Tuple[Tensor, Tuple[Tensor, Optional[Tensor]]]
    assert returns[Literal[False]] is Tensor
    assert returns[Literal[True]] == weights
    assert returns[bool] == typing.Union[Tensor, weights]
    # Every fusion inherits them: none overrides forward.
    assert all(cls.forward is ModalityFusion.forward for cls in ALL)


@pytest.mark.parametrize('cls', ALL)
def test_resolver(cls):
    name = next(k for k, v in FUSIONS.items() if v is cls)
    kwargs, _ = CASES[cls]
    assert isinstance(fusion_resolver(name, **kwargs), cls)
    assert isinstance(fusion_resolver(cls.__name__, **kwargs), cls)
    assert isinstance(fusion_resolver(cls, **kwargs), cls)
    for alias in cls.aliases:
        assert type(fusion_resolver(alias.upper(), **kwargs)) is cls
    inst = make(cls)
    assert fusion_resolver(inst) is inst


def test_resolver_names_defaults_and_arguments():
    assert sorted(FUSIONS) == ['adc', 'concat', 'global', 'meaformer']
    assert type(fusion_resolver('ricea', M, C)) is ADCFusion
    assert type(fusion_resolver('EVA', M)) is GlobalWeightFusion
    assert type(fusion_resolver('global_weight', M)) is GlobalWeightFusion
    assert type(fusion_resolver('MEAformer-Fusion', M, C)) is MEAformerFusion
    assert DEFAULT_FUSION == 'adc'
    f = fusion_resolver(None, num_modalities=M, channels=C, temperature=2.0)
    assert type(f) is ADCFusion and f.temperature == 2.0
    # Errors of the constructor reach the caller unchanged.
    with pytest.raises(ValueError, match="mode must be one of"):
        fusion_resolver('global', M, mode='max')


def test_resolver_unknown():
    with pytest.raises(ValueError, match="could not resolve fusion 'nope'.*"
                       "'adc', 'concat', 'global', 'meaformer'"):
        fusion_resolver('nope', 2)
    with pytest.raises(ValueError, match='could not resolve'):
        fusion_resolver(torch.nn.Linear, 2)


def test_resolver_finds_new_subclasses_by_itself():
    class TinyFusion(ConcatFusion):
        aliases = ('tiny', )

    class OtherTinyFusion(ConcatFusion):
        aliases = ('tiny', )

    class PlainFusion(ConcatFusion):  # no aliases of its own
        pass

    try:
        assert TinyFusion in fusion_classes()
        assert type(fusion_resolver('TinyFusion', M)) is TinyFusion
        assert type(fusion_resolver('other_tiny', M)) is OtherTinyFusion
        with pytest.raises(ValueError, match="'tiny' is ambiguous"):
            fusion_resolver('tiny', M)
        # Aliases are not inherited: 'concat' still means ConcatFusion.
        assert type(fusion_resolver('concat', M)) is ConcatFusion
        assert type(fusion_resolver('plain', M)) is PlainFusion
        assert TinyFusion not in FUSIONS.values()
    finally:
        del TinyFusion, OtherTinyFusion, PlainFusion
        gc.collect()
    assert all(c.__name__ not in ('TinyFusion', 'PlainFusion')
               for c in fusion_classes())


@pytest.mark.parametrize('cls', ALL)
def test_shapes_list_and_stacked(cls):
    f = make(cls)
    x, mask = inputs()
    out = f(x, mask=mask)
    out_list = f(list(x.unbind(1)), mask=mask)
    assert out.shape == (N, f.out_channels(C)) == (N, M * C)
    assert torch.allclose(out, out_list)
    fused, (w, u) = f(x, mask=mask, return_weights=True)
    assert torch.equal(fused, out) and w.shape == (N, M)
    assert u is None or u.shape == (N, M)


@pytest.mark.parametrize('cls', ALL)
def test_weights_normalised_and_exactly_zero_when_masked(cls):
    f = make(cls)
    x, mask = inputs()
    _, (w, u) = f(x, mask=mask, return_weights=True)
    assert (w[~mask] == 0).all()
    present = mask.any(-1)
    assert torch.allclose(w[present].sum(-1), torch.ones(int(present.sum())))
    if u is not None:
        assert (u[~mask] == 1).all() and ((u >= 0) & (u <= 1)).all()
        assert u[1, 1] == 0  # K = 1: no uncertainty


@pytest.mark.parametrize('cls', ALL)
def test_all_masked_row_is_zero_without_nan(cls):
    f = make(cls)
    x, mask = inputs()
    out, (w, _) = f(x, mask=mask, return_weights=True)
    assert torch.isfinite(out).all()
    assert (out[0] == 0).all() and (w[0] == 0).all()


@pytest.mark.parametrize('cls', ALL)
def test_gradients_reach_only_present_modalities(cls):
    f = make(cls)
    x, mask = inputs()
    x.requires_grad_()
    out = f(x, mask=mask)
    readout = torch.randn(out.shape, generator=torch.Generator()
                          .manual_seed(1))
    (out * readout).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[~mask] == 0).all()
    assert (x.grad[mask].abs().sum(-1) > 0).all()


@pytest.mark.parametrize('cls', ALL)
def test_permutation_equivariance(cls):
    f = make(cls)
    x, mask = inputs(n=10)
    perm = torch.randperm(10)
    assert torch.allclose(f(x, mask=mask)[perm], f(x[perm], mask=mask[perm]),
                          atol=1e-6)


@pytest.mark.parametrize('cls', ALL)
def test_determinism_under_seed(cls):
    x, mask = inputs()
    a, b = make(cls), make(cls)
    assert torch.equal(a(x, mask=mask), b(x, mask=mask))


@pytest.mark.parametrize('cls', [c for c in ALL if c is not ConcatFusion])
def test_reset_parameters_changes_parameters(cls):
    f = make(cls)
    params = list(f.parameters())
    assert params
    with torch.no_grad():
        for p in params:
            p.fill_(0.123)
    f.reset_parameters()
    assert all(not torch.all(p == 0.123) for p in params)


@pytest.mark.parametrize('cls', ALL)
def test_torch_compile(cls):
    f = make(cls)
    x, mask = inputs()
    compiled = torch.compile(f)
    assert torch.allclose(compiled(x, mask=mask), f(x, mask=mask),
                          atol=1e-5)


@pytest.mark.parametrize('cls', ALL)
def test_sum_mode_or_ragged(cls):
    f = make(cls)
    x, mask = inputs()
    if cls.ragged:
        xs = [x[:, m, :m + 2] for m in range(M)]
        out = f(xs, mask=mask)
        assert out.shape == (N, sum(m + 2 for m in range(M)))
        assert f.out_channels([m + 2 for m in range(M)]) == out.size(1)
    else:
        with pytest.raises(ValueError, match='common size'):
            f([x[:, m, :m + 2] for m in range(M)], mask=mask)
    if 'mode' in inspect.signature(cls).parameters:
        g = make(cls, mode='sum')
        assert g(x, mask=mask).shape == (N, C) and g.out_channels(C) == C


@pytest.mark.parametrize('cls', ALL)
def test_bad_input_shapes(cls):
    f = make(cls)
    x, mask = inputs()
    with pytest.raises(ValueError, match='expects'):
        f(x[:, :2])
    with pytest.raises(ValueError, match='mask must be'):
        f(x, mask=mask[:, :2])


finite_scales = st.sampled_from([0.0, 1e-8, 1.0, 1e3, 1e6])


@pytest.mark.parametrize('cls', ALL)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(scale=finite_scales, seed=st.integers(0, 10_000),
       k=st.integers(0, M), zero_vectors=st.booleans())
def test_extreme_inputs_stay_finite(cls, scale, seed, k, zero_vectors):
    f = make(cls)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(5, M, C, generator=gen) * scale
    if zero_vectors:
        x[:, 0] = 0
    mask = torch.zeros(5, M, dtype=torch.bool)
    mask[:, :k] = True
    x.requires_grad_()
    out, (w, u) = f(x, mask=mask, return_weights=True)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    assert u is None or torch.isfinite(u).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


# -- one specific test per fusion --------------------------------------------

def test_concatfusion_specific():
    f = make(ConcatFusion)
    x, mask = inputs()
    out, (w, _) = f(x, mask=mask, return_weights=True)
    norms = out.view(N, M, C).norm(dim=-1)
    assert torch.allclose(norms, mask.float(), atol=1e-6)
    assert torch.allclose(w[2], torch.full((M,), 0.25))


def test_globalweightfusion_specific():
    f = make(GlobalWeightFusion)
    with torch.no_grad():
        f.logits.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    x, mask = inputs()
    _, (w, _) = f(x, mask=mask, return_weights=True)
    assert torch.allclose(w[2], torch.tensor([0.0, 1.0, 2.0, 3.0]).softmax(0))
    x.requires_grad_()
    f(x, mask=mask).sum().backward()
    assert f.logits.grad is not None and f.logits.grad.abs().sum() > 0


def test_meaformerfusion_specific():
    f = make(MEAformerFusion)
    x, mask = inputs()
    out = f.forward_full(x, mask)
    attn = out.extras['attention']
    rows = mask.view(N, 1, M, 1).float()
    received = (attn * rows).sum(dim=(1, 2)) / (M ** 0.5)
    expected = received.masked_fill(~mask, float('-inf')).softmax(-1)
    assert torch.allclose(out.weights[2:], expected[2:], atol=1e-6)
    # Attention is the weight: the gradient reaches the transformer.
    out.fused.sum().backward()
    assert f.transformer.layers[0].qkv.weight.grad.abs().sum() > 0


def test_adcfusion_specific():
    torch.manual_seed(0)
    f = ADCFusion(num_modalities=4, channels=32)
    xs = [torch.randn(7, 32) for _ in range(4)]
    mask = torch.rand(7, 4) > 0.2
    fused, (w, u) = f(xs, mask=mask, return_weights=True)
    assert fused.shape == (7, 128) and w.shape == u.shape == (7, 4)
    # The calibration step alone, on a RelativeInteraction output.
    inter = f.interaction(xs, mask)
    assert isinstance(f.interaction, RelativeInteraction)
    step = f.calibrate(inter)
    assert torch.allclose(step.fused, fused) and torch.equal(step.weights, w)
    # w = softmax(b * RC / T) over present modalities.
    e = step.extras
    assert f.temperature == 4.0  # the default (the method's is 1)
    expected = (e['belief'] * e['rc'] / 4.0).masked_fill(~mask,
                                                         float('-inf'))
    rows = mask.any(-1)
    assert torch.allclose(w[rows], expected[rows].softmax(-1), atol=1e-6)


def test_adc_weights_are_constants_unless_weights_grad():
    x, mask = inputs()
    x.requires_grad_()
    f = make(ADCFusion)
    f(x, mask=mask).sum().backward()
    assert x.grad is not None
    assert f.interaction.confidence.weights[0].grad is None
    assert f.interaction.transformer.layers[0].qkv.weight.grad is None
    g = make(ADCFusion, weights_grad=True)
    out = g(x, mask=mask)
    (out * torch.randn(out.shape)).sum().backward()
    assert g.interaction.confidence.weights[0].grad.abs().sum() > 0


def test_adc_transformer_input_grad():
    # Without it, a loss on Z (L_out) or on the attention trains the
    # transformer and passes nothing to the inputs; what the layer outputs
    # is the same.
    x, mask = inputs()
    outs, grads = [], []
    for flag in (True, False):
        xg = x.clone().requires_grad_()
        f = make(ADCFusion, transformer_input_grad=flag)
        out = f.forward_full(xg, mask)
        (out.aux.z * torch.randn(out.aux.z.shape,
                                 generator=torch.Generator().manual_seed(1))
         ).sum().backward()
        outs.append(out)
        grads.append(xg.grad)
        qkv = f.interaction.transformer.layers[0].qkv.weight.grad
        assert qkv is not None and qkv.abs().sum() > 0
    assert grads[0] is not None and grads[0].abs().sum() > 0
    assert grads[1] is None
    assert torch.equal(outs[0].fused, outs[1].fused)
    assert torch.equal(outs[0].weights, outs[1].weights)
    assert torch.equal(outs[0].aux.z, outs[1].aux.z)
    # Fusing Z, the layer would pass no gradient to its inputs.
    with pytest.raises(ValueError, match="features='z'"):
        ADCFusion(M, C, features='z', transformer_input_grad=False)
    # The default: detached when the layer fuses x, not when it fuses Z;
    # the method (True) passes the gradient to x.
    assert make(ADCFusion).interaction.transformer_input_grad is False
    assert make(ADCFusion, features='z'
                ).interaction.transformer_input_grad is True
    assert RelativeInteraction(M, C).transformer_input_grad is True


def test_meaformer_transformer_input_grad():
    # Without it, a loss on Z trains the transformer only; the fused output
    # still reaches x directly and the attention through the weights.
    x, mask = inputs()
    outs, grads = [], []
    for flag in (True, False):
        f = make(MEAformerFusion, transformer_input_grad=flag)
        xg = x.clone().requires_grad_()
        out = f.forward_full(xg, mask)
        out.aux.z.sum().backward(retain_graph=True)
        grads.append(xg.grad)
        f.zero_grad()
        xg.grad = None
        out.fused.square().sum().backward()
        assert xg.grad is not None and xg.grad.abs().sum() > 0
        qkv = f.transformer.layers[0].qkv.weight.grad
        assert qkv is not None and qkv.abs().sum() > 0
        outs.append(out)
    assert grads[0] is not None and grads[0].abs().sum() > 0
    assert grads[1] is None
    assert torch.equal(outs[0].fused, outs[1].fused)
    assert torch.equal(outs[0].weights, outs[1].weights)
    assert repr(make(MEAformerFusion, transformer_input_grad=False)) == \
        'MEAformerFusion(4, 8, transformer_input_grad=False)'


def test_adc_calibration_only_in_eval():
    x, mask = inputs()
    f = make(ADCFusion, calibrate_in_train=False)
    train = f.train().forward_full(x, mask)
    assert torch.equal(train.extras['rc'], mask.float())
    evaluation = f.eval().forward_full(x, mask)
    assert not torch.equal(evaluation.extras['rc'], mask.float())


# -- ADCFusion: each switch, with values ------------------------------------

# One entity, three of four modalities present (from
# test_distribution_uniformity_col_hand_computed): the mean attention rows are
# [.6, .2, .2], [.6, .4, 0], [.8, .2, 0], so DU_row = [8/45, 2/9, 14/45] and
# DU_col = [2/45, 1/9, 4/9].
HAND_ATTENTION = torch.tensor([[[[.6, .2, .2, 0.], [.6, .4, 0., 0.],
                                 [.8, .2, 0., 0.], [.1, .1, .1, .7]]]])
HAND_MASK = torch.tensor([[True, True, True, False]])
HAND_DU = {'row': [8 / 45, 2 / 9, 14 / 45], 'col': [2 / 45, 1 / 9, 4 / 9]}
HAND_BELIEF = [1.2, 1.0, 0.8]


def interaction_output(attention, mask, confidence=None, holo=None,
                       belief=None, seed=0):
    """A hand-made RelativeInteraction output for ADCFusion.calibrate."""
    n, m = mask.shape
    x = torch.randn(n, m, C, generator=torch.Generator().manual_seed(seed))
    x = x * mask.unsqueeze(-1)
    if confidence is None:
        confidence = torch.full((n, m), 0.5) * mask
    if holo is None:
        holo = RF.holo_confidence(confidence, mask)
    if belief is None:
        belief = RF.co_belief(confidence, holo)
    return InteractionOutput(x, attention, confidence, holo, belief, x, mask)


def reference_weights(du, belief, calibration, temperature):
    """The ADC weights for one entity with every listed modality present,
    in plain Python: RC then softmax(b * RC / T)."""
    k = len(du)
    rc = []
    for m in range(k):
        others = [d for j, d in enumerate(du) if j != m]
        if calibration == 'geo':
            ref = math.prod(others) ** (1 / (k - 1))
        else:
            ref = sum(others)
        rc.append(min(1.0, du[m] / ref))
    logits = [b * r / temperature for b, r in zip(belief, rc)]
    z = sum(math.exp(v) for v in logits)
    return [math.exp(v) / z for v in logits], rc


@pytest.mark.parametrize('uncertainty', ['row', 'col'])
@pytest.mark.parametrize('calibration', ['geo', 'pdf_remnant'])
@pytest.mark.parametrize('temperature', [1.0, 0.5, 4.0])
def test_adc_switches_hand_computed(uncertainty, calibration, temperature):
    f = make(ADCFusion, uncertainty=uncertainty, calibration=calibration,
             temperature=temperature).eval()
    belief = torch.tensor([HAND_BELIEF + [0.0]])
    out = f.calibrate(interaction_output(HAND_ATTENTION, HAND_MASK,
                                         belief=belief))
    du = HAND_DU[uncertainty]
    w, rc = reference_weights(du, HAND_BELIEF, calibration, temperature)
    assert torch.allclose(out.extras['du'], torch.tensor([du + [0.0]]))
    assert torch.allclose(out.extras['rc'], torch.tensor([rc + [0.0]]),
                          atol=1e-6)
    assert torch.allclose(out.weights, torch.tensor([w + [0.0]]), atol=1e-6)
    du_max = 4 / 9
    assert torch.allclose(out.uncertainty, torch.tensor(
        [[1 - d / du_max for d in du] + [1.0]]))


def test_adc_each_switch_changes_the_weights():
    io = interaction_output(HAND_ATTENTION, HAND_MASK,
                            belief=torch.tensor([HAND_BELIEF + [0.0]]))
    weights = {}
    for key in [('row', 'geo', 1.0), ('col', 'geo', 1.0),
                ('row', 'pdf_remnant', 1.0), ('row', 'geo', 4.0)]:
        f = make(ADCFusion, uncertainty=key[0], calibration=key[1],
                 temperature=key[2]).eval()
        weights[key] = f.calibrate(io).weights
    keys = list(weights)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            assert not torch.allclose(weights[a], weights[b], atol=1e-4), (
                a, b)
    # A higher temperature flattens the weights.
    entropy = {k: -(w[w > 0] * w[w > 0].log()).sum()
               for k, w in weights.items()}
    assert entropy[('row', 'geo', 4.0)] > entropy[('row', 'geo', 1.0)]


def test_adc_sum_mode_is_the_weighted_sum_of_normalised_inputs():
    x, mask = inputs()
    f = make(ADCFusion, mode='sum')
    out = f.forward_full(x, mask)
    expected = (torch.nn.functional.normalize(x, dim=-1)
                * out.weights.unsqueeze(-1)).sum(1)
    assert out.fused.shape == (N, C)
    assert torch.allclose(out.fused, expected, atol=1e-6)
    concat = make(ADCFusion).forward_full(x, mask)
    assert torch.allclose(concat.fused.view(N, M, C).sum(1), expected,
                          atol=1e-6)


def test_adc_transformer_switches():
    x, mask = inputs()
    out = make(ADCFusion, heads=2).forward_full(x, mask)
    assert out.extras['attention'].shape == (N, 2, M, M)
    # num_layers: the attention returned is the last layer's.
    f = make(ADCFusion, num_layers=2)
    layers = f.interaction.transformer.layers
    assert len(layers) == 2
    x_in = x * mask.unsqueeze(-1)
    z1, a1 = layers[0](x_in, mask)
    _, a2 = layers[1](z1, mask)
    out = f.forward_full(x, mask)
    assert torch.allclose(out.extras['attention'], a2)
    assert not torch.allclose(a1, a2)
    # ffn: a feed-forward block per layer (its values: the reference test).
    assert all(layer.ffn is not None for layer in
               make(ADCFusion, ffn=True).interaction.transformer.layers)
    assert make(ADCFusion).interaction.transformer.layers[0].ffn is None
    # dropout: random in training, off in evaluation.
    f = make(ADCFusion, dropout=0.5)
    torch.manual_seed(1)
    a, b = f.forward_full(x, mask), f.forward_full(x, mask)
    assert not torch.allclose(a.extras['z'], b.extras['z'])
    f.eval()
    a, b = f.forward_full(x, mask), f.forward_full(x, mask)
    assert torch.equal(a.extras['z'], b.extras['z'])


def test_confidence_hidden_sizes_shape_the_network():
    f = make(ADCFusion, confidence_hidden=[5])
    mlp = f.interaction.confidence
    assert [tuple(w.shape) for w in mlp.weights] == [(M, C, 5), (M, 5, 1)]
    assert [tuple(w.shape) for w in ConfidenceMLP(C, M).weights] == [
        (M, C, 2 * C), (M, 2 * C, C), (M, C, 1)]
    x = torch.randn(N, M, C)
    out = f.forward_full(x, torch.ones(N, M, dtype=torch.bool))
    assert out.extras['confidence'].shape == (N, M)
    # The per-modality batched network equals M separate Linear stacks.
    lin = [torch.nn.Linear(C, 5), torch.nn.Linear(5, 1)]
    for m in range(M):
        with torch.no_grad():
            for layer, w, b in zip(lin, mlp.weights, mlp.biases):
                layer.weight.copy_(w[m].t())
                layer.bias.copy_(b[m, 0])
        ref = lin[1](torch.relu(lin[0](x[:, m]))).squeeze(-1)
        assert torch.allclose(mlp(x)[:, m], ref, atol=1e-6)
    for bad in (5, [0], [2.5], [True]):
        with pytest.raises(ValueError, match='list of positive ints'):
            ConfidenceMLP(C, M, hidden=bad)


def test_adc_confidence_switches():
    x = torch.randn(N, 1, C).expand(N, M, C)  # the same vector everywhere
    mask = torch.ones(N, M, dtype=torch.bool)
    shared = make(ADCFusion, shared_confidence=True).forward_full(x, mask)
    c = shared.extras['confidence']
    assert torch.allclose(c, c[:, :1].expand(N, M))
    c = make(ADCFusion).forward_full(x, mask).extras['confidence']
    assert not torch.allclose(c, c[:, :1].expand(N, M))
    # eps: the clamp margin of c.
    f = make(ADCFusion, eps=1e-2)
    with torch.no_grad():
        f.interaction.confidence.biases[-1].fill_(100.0)
    c = f.forward_full(x, mask).extras['confidence']
    assert torch.allclose(c, torch.full((N, M), 0.99))
    # detach_belief=False: b carries the gradient of c and h.
    out = make(ADCFusion, detach_belief=False).forward_full(x, mask)
    assert out.extras['belief'].requires_grad
    assert not make(ADCFusion).forward_full(x, mask).extras[
        'belief'].requires_grad


def test_adc_entity_uncertainty_is_refused_with_the_alternative():
    for calibration in ('geo', 'pdf_remnant'):
        with pytest.raises(ValueError, match=(
                r"uncertainty='entity'.*RC = 1 with 'geo'.*"
                r"use uncertainty='row'.*source='entity'")):
            make(ADCFusion, uncertainty='entity', calibration=calibration)
    with pytest.raises(ValueError, match=r"uncertainty must be one of "
                       r"\('row', 'col'\) \(got 'bad'\)"):
        make(ADCFusion, uncertainty='bad')
    with pytest.raises(ValueError, match='calibration must be one of'):
        make(ADCFusion, calibration='bad')
    with pytest.raises(ValueError, match='temperature must be positive'):
        make(ADCFusion, temperature=0)


# -- ADCFusion: the direction of each input ----------------------------------

BASE_ATTENTION = torch.tensor([[[[.4, .3, .3], [.1, .8, .1],
                                 [.2, .2, .6]]]])


@pytest.mark.parametrize('uncertainty', ['row', 'col'])
def test_higher_mono_confidence_raises_the_weight(uncertainty):
    f = make(ADCFusion, uncertainty=uncertainty).eval()
    mask = torch.ones(1, 3, dtype=torch.bool)
    low = interaction_output(BASE_ATTENTION, mask,
                             torch.tensor([[0.5, 0.5, 0.5]]))
    high = interaction_output(BASE_ATTENTION, mask,
                              torch.tensor([[0.8, 0.5, 0.5]]))
    assert high.holo[0, 0] > low.holo[0, 0]  # c_0 up moves h_0 up as well
    a, b = f.calibrate(low), f.calibrate(high)
    assert b.weights[0, 0] > a.weights[0, 0]
    assert (b.weights[0, 1:] < a.weights[0, 1:]).all()
    assert torch.equal(a.uncertainty, b.uncertainty)  # u reads attention


def test_higher_holo_confidence_raises_the_weight():
    f = make(ADCFusion).eval()
    mask = torch.ones(1, 3, dtype=torch.bool)
    c = torch.tensor([[0.5, 0.5, 0.5]])
    even = interaction_output(BASE_ATTENTION, mask, c,
                              holo=torch.tensor([[2 / 3, 2 / 3, 2 / 3]]))
    strong = interaction_output(BASE_ATTENTION, mask, c,
                                holo=torch.tensor([[0.9, 0.55, 0.55]]))
    a, b = f.calibrate(even), f.calibrate(strong)
    assert b.weights[0, 0] > a.weights[0, 0]
    assert torch.equal(a.uncertainty, b.uncertainty)


@pytest.mark.parametrize('uncertainty', ['row', 'col'])
@pytest.mark.parametrize('calibration', ['geo', 'pdf_remnant'])
def test_sharper_attention_lowers_uncertainty_and_raises_weight(
        uncertainty, calibration):
    f = make(ADCFusion, uncertainty=uncertainty,
             calibration=calibration).eval()
    mask = torch.ones(1, 3, dtype=torch.bool)
    sharp = BASE_ATTENTION.clone()
    sharp[0, 0, 0] = torch.tensor([.8, .1, .1])  # row 0: peaked
    outs = []
    for attention in (BASE_ATTENTION, sharp):
        if uncertainty == 'col':  # column m of A^T is row m of A
            attention = attention.transpose(-1, -2)
        outs.append(f.calibrate(interaction_output(attention, mask)))
    a, b = outs
    assert b.extras['du'][0, 0] > a.extras['du'][0, 0]
    assert b.uncertainty[0, 0] < a.uncertainty[0, 0]
    assert b.extras['rc'][0, 0] > a.extras['rc'][0, 0]
    assert b.weights[0, 0] > a.weights[0, 0]


def test_confidence_network_output_moves_the_fused_weights():
    """Through the whole module: raising modality 0's confidence logit
    raises its weight wherever it competes with another modality, and leaves
    the uncertainty alone."""
    x, mask = inputs(n=20)
    f = make(ADCFusion).eval()
    a = f.forward_full(x, mask)
    with torch.no_grad():
        f.interaction.confidence.biases[-1][0] += 2.0
    b = f.forward_full(x, mask)
    assert (b.extras['confidence'][:, 0] >= a.extras['confidence'][:, 0]
            ).all()
    competing = mask[:, 0] & (mask.sum(-1) > 1)
    assert competing.sum() >= 5
    assert (b.weights[competing, 0] > a.weights[competing, 0]).all()
    assert torch.equal(a.uncertainty, b.uncertainty)


# -- CrossModalTransformer against torch.nn.MultiheadAttention --------------

@pytest.mark.parametrize('heads', [1, 2])
@pytest.mark.parametrize('ffn', [False, True])
def test_cross_modal_transformer_matches_torch_multihead_attention(heads,
                                                                   ffn):
    torch.manual_seed(0)
    t = CrossModalTransformer(C, heads=heads, ffn=ffn).eval()
    layer = t.layers[0]
    ref = torch.nn.TransformerEncoderLayer(
        C, heads, dim_feedforward=2 * C, dropout=0.0, activation='gelu',
        batch_first=True, norm_first=False).eval()
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(layer.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(layer.qkv.bias)
        ref.self_attn.out_proj.weight.copy_(layer.out.weight)
        ref.self_attn.out_proj.bias.copy_(layer.out.bias)
        ref.norm1.load_state_dict(layer.norm1.state_dict())
        if ffn:
            ref.linear1.load_state_dict(layer.ffn[0].state_dict())
            ref.linear2.load_state_dict(layer.ffn[2].state_dict())
            ref.norm2.load_state_dict(layer.norm2.state_dict())
    x, mask = inputs(n=12)
    keep = mask.any(-1)  # torch gives NaN where no key is present
    z, attn = t(x, mask)
    xk, pad = x[keep], ~mask[keep]
    with torch.no_grad():
        h, ref_attn = ref.self_attn(xk, xk, xk, key_padding_mask=pad,
                                    need_weights=True,
                                    average_attn_weights=False)
        # Without a feed-forward block the layer is attention + LayerNorm;
        # with one, it is torch's post-LN encoder layer.
        expected = (ref(xk, src_key_padding_mask=pad) if ffn
                    else ref.norm1(xk + h))
    assert torch.allclose(attn[keep], ref_attn, atol=1e-6)
    assert torch.allclose(z[keep][~pad], expected[~pad], atol=1e-5)
    assert (z[~mask] == 0).all() and (attn[keep][pad.view(
        -1, 1, 1, M).expand_as(ref_attn)] == 0).all()


def test_relative_interaction_outputs():
    torch.manual_seed(0)
    ri = RelativeInteraction(M, C, heads=2)
    assert repr(ri) == 'RelativeInteraction(4, 8, heads=2)'
    x, mask = inputs()
    out = ri(x, mask)
    assert out.z.shape == (N, M, C) and out.attention.shape == (N, 2, M, M)
    assert (out.z[~mask] == 0).all() and (out.confidence[~mask] == 0).all()
    k = mask.sum(-1)
    assert torch.allclose(out.holo.sum(-1)[k > 0], (k - 1).clamp_min(1)
                          .float()[k > 0] * (k[k > 0] > 1) + (k[k > 0] == 1),
                          atol=1e-5)
    assert torch.allclose(out.belief, out.confidence + out.holo)
    assert not out.belief.requires_grad
    # Attention puts no mass on missing keys.
    keys = (~mask).view(N, 1, 1, M).expand_as(out.attention)
    assert (out.attention[keys] == 0).all()
    # The confidence MLP learns from a loss on c (L_tcp).
    out.confidence.sum().backward()
    assert ri.confidence.weights[0].grad.abs().sum() > 0


def test_per_modality_confidence_mlp_is_separate():
    ri = RelativeInteraction(M, C)
    x, mask = inputs()
    x = x.clone()
    mask = torch.ones_like(mask)
    c1 = ri(x, mask).confidence
    x[:, 0] += 1.0
    c2 = ri(x, mask).confidence
    assert not torch.allclose(c1[:, 0], c2[:, 0])
    assert torch.allclose(c1[:, 1:], c2[:, 1:])
