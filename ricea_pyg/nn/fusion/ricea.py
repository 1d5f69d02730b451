"""RICEA: relative interaction (:class:`RelativeInteraction`) and
attention-based dynamic calibration (:class:`ADCFusion`), from `"Probing
Relative Interaction and Dynamic Calibration in Multi-modal Entity Alignment"
<https://aclanthology.org/2025.acl-long.1384/>`_ (ACL 2025)."""
from __future__ import annotations

import math
from typing import List, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ricea_pyg.nn.fusion import functional as RF
from ricea_pyg.nn.fusion.base import (
    FusionAuxiliary,
    FusionOutput,
    ModalityFusion,
    ModalityInput,
    _check_choice,
    options_repr,
    prepare_modalities,
)
from ricea_pyg.nn.fusion.transformer import CrossModalTransformer

__all__ = ['ConfidenceMLP', 'InteractionOutput', 'RelativeInteraction',
           'ADCFusion']

class ConfidenceMLP(torch.nn.Module):
    r"""The confidence network :math:`g: d \to 2d \to d \to 1` of RICEA
    (ReLU between layers), one per modality (or one shared), evaluated for
    all modalities in batched matrix products.

    Its forward costs as much as the cross-modal transformer's projections
    (:math:`4d^2` multiply-adds per modality token each); ``hidden=[d //
    4]`` costs a sixteenth of that, see ``docs/fusion.md`` (Cost).

    Args:
        channels (int): The input size :math:`d`.
        num_modalities (int): The number of modalities :math:`M`.
        shared (bool): If :obj:`True`, one network serves all modalities;
            otherwise each has its own. (default: :obj:`False`)
        hidden (list of int, optional): The hidden layer sizes.
            (default: :obj:`None`, meaning :math:`[2d, d]`, the method's)

    Shapes:
        - **input:** ``[N, M, d]``
        - **output:** ``[N, M]`` logits
    """

    def __init__(self, channels: int, num_modalities: int,
                 shared: bool = False,
                 hidden: Optional[Sequence[int]] = None):
        super().__init__()
        self.channels, self.num_modalities, self.shared = (
            channels, num_modalities, shared)
        self.hidden = _check_hidden(hidden)
        n = 1 if shared else num_modalities
        sizes = [channels, *(self.hidden or (2 * channels, channels)), 1]
        self.weights = torch.nn.ParameterList([
            torch.nn.Parameter(torch.empty(n, a, b))
            for a, b in zip(sizes[:-1], sizes[1:])])
        self.biases = torch.nn.ParameterList([
            torch.nn.Parameter(torch.empty(n, 1, b)) for b in sizes[1:]])
        self.reset_parameters()

    def reset_parameters(self):
        # As torch.nn.Linear, per modality.
        for w, b in zip(self.weights, self.biases):
            bound = 1 / math.sqrt(w.size(1))
            torch.nn.init.uniform_(w, -bound, bound)
            torch.nn.init.uniform_(b, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        r"""Runs the forward pass of the module.

        Args:
            x (Tensor): ``[N, M, d]`` modality embeddings.
        """
        h = x.transpose(0, 1)  # [M, N, d]
        last = len(self.weights) - 1
        M = h.size(0)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            # A shared MLP is the per-modality one with its weights expanded.
            h = torch.baddbmm(b.expand(M, -1, -1), h, w.expand(M, -1, -1))
            if i < last:
                h = F.relu(h)
        return h.squeeze(-1).t()

    def __repr__(self) -> str:
        return options_repr(self, ('channels', 'num_modalities'))


def _check_hidden(hidden: Optional[Sequence[int]]) -> Optional[List[int]]:
    if hidden is None:
        return None
    if isinstance(hidden, int) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h > 0
            for h in hidden):
        raise ValueError(f'confidence hidden sizes must be a list of '
                         f'positive ints, e.g. [64] (got {hidden!r}); None '
                         f'gives the method\'s [2d, d]')
    return list(hidden)


class InteractionOutput(NamedTuple):
    """What :class:`RelativeInteraction` computes (:math:`Z, A, c, h, b`),
    plus the prepared input and mask that the calibration step reads."""
    z: Tensor           # [N, M, d]    transformer outputs
    attention: Tensor   # [N, H, M, M] last-layer attention
    confidence: Tensor  # [N, M]       mono-confidence c
    holo: Tensor        # [N, M]       relative (holo) confidence h
    belief: Tensor      # [N, M]       co-belief b
    x: Tensor           # [N, M, d]    input, zero where missing
    mask: Tensor        # [N, M]


class RelativeInteraction(torch.nn.Module):
    r"""Entity-level relative confidence from `"Probing Relative Interaction
    and Dynamic Calibration in Multi-modal Entity Alignment"
    <https://aclanthology.org/2025.acl-long.1384/>`_ (RICEA, ACL 2025).

    A cross-modal transformer attends over the :math:`M` modality tokens
    (key-padding mask for missing ones), giving :math:`Z` and the last-layer
    attention :math:`A`. Each modality gets a mono-confidence, a relative
    (holo) confidence and their co-belief:

    .. math::
        c_m &= \mathrm{clamp}(\sigma(g(\mathbf{x}_m)), \epsilon,
        1 - \epsilon) \cdot \mu_m

        h_m &= \frac{\sum_{j \in P, j \ne m} \log c_j}{\sum_{j \in P}
        \log c_j - \epsilon}

        b_m &= \mathrm{sg}(c_m) + \mathrm{sg}(h_m)

    where :math:`P` is the set of present modalities (:math:`K = |P|`,
    :math:`h = 1` if :math:`K = 1`) and :math:`\mathrm{sg}` the stop-gradient.
    :math:`c` learns only from :func:`~ricea_pyg.loss.tcp_loss`.

    Args:
        num_modalities (int): The number of modalities :math:`M`.
        channels (int): The size :math:`d` of every modality embedding.
        num_layers (int): The number of layers of the
            :class:`CrossModalTransformer`. (default: :obj:`1`)
        heads (int): The number of attention heads :math:`H`.
            (default: :obj:`1`)
        ffn (bool): If :obj:`True`, each transformer layer has a
            feed-forward block. (default: :obj:`False`)
        dropout (float): Dropout in the transformer. (default: :obj:`0.0`)
        shared_confidence (bool): If :obj:`True`, one
            :class:`ConfidenceMLP` serves all modalities; otherwise each has
            its own. (default: :obj:`False`)
        detach_belief (bool): If :obj:`True`, :math:`\mathrm{sg}` stops the
            gradient in :math:`b`. (default: :obj:`True`)
        eps (float): The clamp margin :math:`\epsilon` of :math:`c` and
            :math:`h`. (default: :obj:`1e-6`)
        confidence_hidden (list of int, optional): The hidden sizes of
            :math:`g`. (default: :obj:`None`, meaning :math:`[2d, d]`)
        transformer_input_grad (bool): If :obj:`False`, the transformer
            reads :math:`\mathrm{sg}(\mathbf{x})`: a loss on :math:`Z` or on
            the attention trains the transformer and not what made
            :math:`\mathbf{x}`. (default: :obj:`True`)

    Shapes:
        - **input:** list of ``M`` tensors ``[N, d]`` or ``[N, M, d]``;
          mask ``[N, M]``
        - **output:** :class:`InteractionOutput` with ``z [N, M, d]``,
          ``attention [N, H, M, M]``, ``confidence``, ``holo``, ``belief``
          ``[N, M]``
    """

    def __init__(self, num_modalities: int, channels: int,
                 num_layers: int = 1, heads: int = 1, ffn: bool = False,
                 dropout: float = 0.0, shared_confidence: bool = False,
                 detach_belief: bool = True, eps: float = 1e-6,
                 confidence_hidden: Optional[Sequence[int]] = None,
                 transformer_input_grad: bool = True):
        super().__init__()
        self.num_modalities, self.channels = num_modalities, channels
        self.transformer_input_grad = transformer_input_grad
        self.num_layers, self.heads, self.ffn, self.dropout = (
            num_layers, heads, ffn, dropout)
        self.shared_confidence = shared_confidence
        self.detach_belief, self.eps = detach_belief, eps
        self.transformer = CrossModalTransformer(channels, num_layers, heads,
                                                 ffn, dropout=dropout)
        self.confidence = ConfidenceMLP(channels, num_modalities,
                                        shared_confidence, confidence_hidden)
        self.confidence_hidden = self.confidence.hidden
        self.reset_parameters()

    def reset_parameters(self):
        self.transformer.reset_parameters()
        self.confidence.reset_parameters()

    def forward(self, xs: ModalityInput, mask: Optional[Tensor] = None
                ) -> InteractionOutput:
        r"""Runs the forward pass of the module.

        Args:
            xs (Tensor or list of Tensor): ``[N, M, d]``, or a list of ``M``
                tensors ``[N, d]``.
            mask (Tensor, optional): ``[N, M]`` bool, True where a modality
                is present. (default: :obj:`None`, all present)
        """
        x, mask = prepare_modalities(xs, mask, self.num_modalities,
                                     name=self.__class__.__name__)
        z, attn = self.transformer(
            x if self.transformer_input_grad else x.detach(), mask)
        c = RF.mono_confidence(self.confidence(x), mask, self.eps)
        h = RF.holo_confidence(c, mask, self.eps)
        b = RF.co_belief(c, h, self.detach_belief)
        return InteractionOutput(z, attn, c, h, b, x, mask)

    def __repr__(self) -> str:
        return options_repr(self, ('num_modalities', 'channels'))


class ADCFusion(ModalityFusion):
    r"""The complete RICEA fusion: :class:`RelativeInteraction` followed by
    attention-based dynamic calibration (ADC), from `"Probing Relative
    Interaction and Dynamic Calibration in Multi-modal Entity Alignment"
    <https://aclanthology.org/2025.acl-long.1384/>`_ (ACL 2025).

    Attention is not used as the weight; it measures how *uncertain* each
    modality's weight is. With :math:`\bar A` the head-mean attention over
    present modalities:

    .. math::
        DU_m &= \frac{1}{K} \sum_{j \in P} \left| \bar A_{m,j} -
        \frac{1}{K} \right|, \qquad u_m = 1 - \frac{DU_m}{2(K-1)/K^2}

        RC_m &= \min\!\big(1, DU_m / G_{-m}\big), \qquad
        G_{-m} = \Big(\prod_{j \in P, j \ne m} DU_j\Big)^{1/(K-1)}

        w &= \operatorname{softmax}_{P}\big(b \odot \mathrm{sg}(RC) / T\big)

        \mathbf{h} &= [w_1 \hat{\mathbf{x}}_1; \dots; w_M
        \hat{\mathbf{x}}_M] \ \text{(concat)} \quad \text{or} \quad
        \textstyle\sum_m w_m \hat{\mathbf{x}}_m \ \text{(sum)}

    Missing modalities get :math:`w = 0` and :math:`u = 1`; :math:`u = 0`
    when :math:`K = 1`. By default the weights are constants to the
    alignment loss and :math:`c` learns from
    :func:`~ricea_pyg.loss.tcp_loss` only, as in `"Predictive Dynamic
    Fusion" <https://arxiv.org/abs/2406.04802>`_ (ICML 2024), whose
    two-modality calibration rule :math:`RC` generalises.

    .. note::
        ``uncertainty='entity'`` is refused: one DU per entity gives all of
        its modalities the same DU, so :math:`RC` cannot tell them apart
        (:math:`RC = 1` with ``'geo'``, :math:`1/(K-1)` with
        ``'pdf_remnant'``, whatever the attention). Calibrate with
        ``'row'`` or ``'col'``; the entity-level uncertainty is
        :func:`~ricea_pyg.nn.fusion.distribution_uniformity` with
        ``source='entity'`` on ``forward_full(...).extras['attention']``.

    Args:
        num_modalities (int): The number of modalities :math:`M`.
        channels (int): The size :math:`d` of every modality embedding.
        uncertainty (str): The attention distribution :math:`DU_m` measures:
            ``'row'`` (the attention modality :math:`m` pays) or ``'col'``
            (the attention it receives, MEAformer's scores).
            (default: ``'row'``)
        calibration (str): ``'geo'`` (the geometric mean :math:`G_{-m}`
            above) or ``'pdf_remnant'`` (the sum of the other DUs), see
            :func:`~ricea_pyg.nn.fusion.relative_calibration`.
            (default: ``'geo'``)
        calibrate_in_train (bool): If :obj:`False`, :math:`RC` is applied in
            eval mode only, as in Predictive Dynamic Fusion.
            (default: :obj:`True`)
        temperature (float): The softmax temperature :math:`T`; larger is
            flatter. :obj:`1.0` is the method as specified; the default
            :obj:`4.0` is better in every setting measured, clean and
            corrupted (``docs/fusion.md``, "The switches on the robustness
            grid"). (default: :obj:`4.0`)
        mode (str): ``'concat'`` to concatenate the weighted modalities or
            ``'sum'`` to add them. (default: ``'concat'``)
        features (str): What the weights fuse: ``'x'``, the input embeddings
            (RICEA and MEAformer; the transformer then learns from a loss on
            :math:`Z`, as :class:`~ricea_pyg.loss.RICEALoss` has), or
            ``'z'``, the transformer outputs :math:`Z`, so that a task loss
            on the fused output trains the transformer (a drop-in layer).
            (default: ``'x'``)
        scoring (str): ``'fused'`` or ``'pair_mean'``, see
            :class:`~ricea_pyg.nn.fusion.ModalityFusion`.
            (default: ``'fused'``)
        weights_grad (bool): If :obj:`True`, the alignment loss's gradient
            flows through the weights (an ablation). (default: :obj:`False`)
        detach_belief (bool, optional): If :obj:`True`, stop the gradient
            inside :math:`b`. (default: :obj:`None`, meaning
            ``not weights_grad``)
        shared_confidence (bool): If :obj:`True`, one
            :class:`ConfidenceMLP` serves all modalities; otherwise each has
            its own. (default: :obj:`False`)
        num_layers (int): The number of transformer layers.
            (default: :obj:`1`)
        heads (int): The number of attention heads :math:`H`.
            (default: :obj:`1`)
        ffn (bool): If :obj:`True`, each transformer layer has a
            feed-forward block. (default: :obj:`False`)
        dropout (float): Dropout in the transformer. (default: :obj:`0.0`)
        eps (float): The clamp margin :math:`\epsilon` of :math:`c` and
            :math:`h`. (default: :obj:`1e-6`)
        confidence_hidden (list of int, optional): The hidden sizes of the
            confidence network :math:`g`; ``[channels // 4]`` cuts the
            drop-in layer's forward + backward (``features='z'``, with
            :func:`~ricea_pyg.loss.auxiliary_loss`) from about 1.8× to
            1.3× :class:`MEAformerFusion`'s. (default: :obj:`None`, meaning
            the method's :math:`[2d, d]`)
        transformer_input_grad (bool, optional): If :obj:`False`, the
            transformer reads :math:`\mathrm{sg}(\mathbf{x})`, so that the
            loss on :math:`Z` (:math:`\mathcal{L}_{out}` of
            :class:`~ricea_pyg.loss.RICEALoss`) and the uncertainty loss
            train the transformer alone, not the modality encoders; the
            fused output and the weights are the same. :obj:`True` is the
            method. :obj:`None` takes :obj:`True` with ``features='z'``
            (the fused output needs it) and :obj:`False` with ``'x'``,
            0.5-1.3 points of Hits@1 better under corrupted names on the
            robustness grid (``docs/fusion.md``). (default: :obj:`None`)

    Shapes:
        - **input:** list of ``M`` tensors ``[N, d]`` or ``[N, M, d]``;
          mask ``[N, M]``
        - **output:** ``[N, M d]`` (concat) or ``[N, d]`` (sum); with
          ``return_weights=True`` also ``(weights [N, M], uncertainty
          [N, M])``
    """
    aliases = ('adc', 'ricea')

    def __init__(self, num_modalities: int, channels: int,
                 uncertainty: str = 'row', calibration: str = 'geo',
                 calibrate_in_train: bool = True, temperature: float = 4.0,
                 mode: str = 'concat', features: str = 'x',
                 scoring: str = 'fused', weights_grad: bool = False,
                 detach_belief: Optional[bool] = None,
                 shared_confidence: bool = False, num_layers: int = 1,
                 heads: int = 1, ffn: bool = False, dropout: float = 0.0,
                 eps: float = 1e-6,
                 confidence_hidden: Optional[Sequence[int]] = None,
                 transformer_input_grad: Optional[bool] = None):
        super().__init__(num_modalities, channels, scoring)
        if uncertainty == 'entity':
            raise ValueError(
                f"uncertainty='entity' gives every modality of an entity the "
                f'same DU, so calibration={calibration!r} cannot tell them '
                f"apart (RC = 1 with 'geo', 1/(K-1) with 'pdf_remnant', "
                f"whatever the attention); use uncertainty='row' (the "
                f"default) or 'col', and read the entity-level uncertainty "
                f"with distribution_uniformity(attention, mask, "
                f"source='entity')")
        _check_choice('uncertainty', uncertainty, ('row', 'col'))
        _check_choice('calibration', calibration, ('geo', 'pdf_remnant'))
        _check_choice('mode', mode, ('concat', 'sum'))
        _check_choice('features', features, ('x', 'z'))
        if temperature <= 0:
            raise ValueError(f'temperature must be positive (got '
                             f'{temperature})')
        if features == 'z' and transformer_input_grad is False:
            raise ValueError(
                "features='z' fuses the transformer outputs, so with "
                'transformer_input_grad=False the fused output would pass '
                'no gradient to the modality encoders; use features=\'x\' '
                'or transformer_input_grad=True')
        self.transformer_input_grad = transformer_input_grad
        self.uncertainty, self.calibration = uncertainty, calibration
        self.calibrate_in_train, self.temperature = (calibrate_in_train,
                                                     temperature)
        self.mode, self.weights_grad = mode, weights_grad
        self.features = features
        self.detach_belief, self.shared_confidence = (detach_belief,
                                                      shared_confidence)
        self.num_layers, self.heads, self.ffn, self.dropout = (
            num_layers, heads, ffn, dropout)
        self.eps = eps
        self.interaction = RelativeInteraction(
            num_modalities, channels, num_layers, heads, ffn, dropout,
            shared_confidence,
            not weights_grad if detach_belief is None else detach_belief,
            eps, confidence_hidden,
            features == 'z' if transformer_input_grad is None
            else transformer_input_grad)
        self.confidence_hidden = self.interaction.confidence_hidden
        self.reset_parameters()

    def reset_parameters(self):
        r"""Resets all learnable parameters of the module."""
        self.interaction.reset_parameters()

    def calibrate(self, out: InteractionOutput) -> FusionOutput:
        """The ADC step alone, on a :class:`RelativeInteraction` output.

        Args:
            out (InteractionOutput): The interaction step's output.
        """
        mask = out.mask
        # u keeps its graph, so that an uncertainty loss can train the
        # attention; RC detaches it.
        du, u = RF.distribution_uniformity(out.attention, mask,
                                           self.uncertainty, detach=False)
        apply_rc = self.calibrate_in_train or not self.training
        if apply_rc:
            rc = RF.relative_calibration(du, mask, self.calibration)
        else:
            rc = mask.to(du.dtype)
        w = RF.masked_softmax(out.belief * rc / self.temperature, mask)
        if not self.weights_grad:
            w = w.detach()
        fused = RF.weighted_fusion(out.z if self.features == 'z' else out.x,
                                   w, self.mode)
        aux = FusionAuxiliary(z=out.z, attention=out.attention,
                              confidence=out.confidence, holo=out.holo,
                              belief=out.belief, du=du.detach(), rc=rc)
        return FusionOutput(fused, w, u, aux, mask)

    def fuse(self, x: Tensor, mask: Tensor) -> FusionOutput:
        return self.calibrate(self.interaction(x, mask))

    def fused_inputs(self, xs: Tensor, out: FusionOutput) -> Tensor:
        return out.aux.z if self.features == 'z' else xs
