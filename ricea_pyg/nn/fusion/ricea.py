"""RICEA: relative interaction (RelativeInteraction) and attention-based
dynamic calibration (ADCFusion)."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ricea_pyg.nn.fusion import functional as RF
from ricea_pyg.nn.fusion.base import (
    FusionOutput,
    ModalityFusion,
    ModalityInput,
    prepare_modalities,
)
from ricea_pyg.nn.fusion.transformer import CrossModalTransformer

__all__ = ['ConfidenceMLP', 'InteractionOutput', 'RelativeInteraction',
           'ADCFusion']

PAPER = 'https://aclanthology.org/2025.acl-long.1384/'


class ConfidenceMLP(torch.nn.Module):
    r"""The confidence network :math:`g: d \to 2d \to d \to 1`, one per
    modality (or one shared), evaluated for all modalities in batched
    matrix products.

    Shapes:
        - **input:** ``[N, M, d]``
        - **output:** ``[N, M]`` logits
    """

    def __init__(self, channels: int, num_modalities: int,
                 shared: bool = False):
        super().__init__()
        self.channels, self.num_modalities, self.shared = (
            channels, num_modalities, shared)
        n = 1 if shared else num_modalities
        sizes = [channels, 2 * channels, channels, 1]
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
        return (f'{self.__class__.__name__}({self.channels}, '
                f'num_modalities={self.num_modalities}, shared={self.shared})')


class InteractionOutput(NamedTuple):
    """What :class:`RelativeInteraction` computes (method.md's Z, A, c, h, b),
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
    :math:`c` learns only from :func:`~ricea_pyg.nn.fusion.tcp_loss`.

    Args:
        num_modalities (int): :math:`M`.
        channels (int): :math:`d`.
        num_layers (int): Transformer layers. (default: :obj:`1`)
        heads (int): Attention heads. (default: :obj:`1`)
        ffn (bool): Feed-forward blocks. (default: :obj:`False`)
        dropout (float): (default: :obj:`0.0`)
        shared_confidence (bool): One confidence MLP for all modalities
            instead of one each. (default: :obj:`False`)
        detach_belief (bool): Stop the gradient in :math:`b`.
            (default: :obj:`True`)
        eps (float): :math:`\epsilon`. (default: :obj:`1e-6`)

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
                 detach_belief: bool = True, eps: float = 1e-6):
        super().__init__()
        self.num_modalities, self.channels = num_modalities, channels
        self.detach_belief, self.eps = detach_belief, eps
        self.transformer = CrossModalTransformer(channels, num_layers, heads,
                                                 ffn, dropout=dropout)
        self.confidence = ConfidenceMLP(channels, num_modalities,
                                        shared_confidence)
        self.reset_parameters()

    def reset_parameters(self):
        self.transformer.reset_parameters()
        self.confidence.reset_parameters()

    def forward(self, xs: ModalityInput, mask: Optional[Tensor] = None
                ) -> InteractionOutput:
        x, mask = prepare_modalities(xs, mask, self.num_modalities,
                                     name=self.__class__.__name__)
        z, attn = self.transformer(x, mask)
        c = RF.mono_confidence(self.confidence(x), mask, self.eps)
        h = RF.holo_confidence(c, mask, self.eps)
        b = RF.co_belief(c, h, self.detach_belief)
        return InteractionOutput(z, attn, c, h, b, x, mask)

    def __repr__(self) -> str:
        t = self.transformer
        return (f'{self.__class__.__name__}({self.num_modalities}, '
                f'{self.channels}, num_layers={t.num_layers}, '
                f'heads={t.heads})')


class ADCFusion(ModalityFusion):
    r"""The complete RICEA fusion: :class:`RelativeInteraction` followed by
    attention-based dynamic calibration (ADC), from `"Probing Relative
    Interaction and Dynamic Calibration in Multi-modal Entity Alignment"
    <https://aclanthology.org/2025.acl-long.1384/>`_.

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
    when :math:`K = 1`. By default (as in PDF) the weights are constants to
    the alignment loss.

    Args:
        num_modalities (int): :math:`M`.
        channels (int): :math:`d`.
        uncertainty (str): DU source: ``'row'``, ``'col'`` (MEAformer's
            received-attention columns) or ``'entity'`` (one DU per entity).
            (default: ``'row'``)
        calibration (str): ``'geo'`` or ``'pdf_remnant'`` (see
            :func:`~ricea_pyg.nn.fusion.relative_calibration`).
            (default: ``'geo'``)
        calibrate_in_train (bool): Apply RC in training too; if
            :obj:`False`, only in eval mode (as PDF). (default: :obj:`True`)
        temperature (float): :math:`T`. (default: :obj:`1.0`)
        mode (str): ``'concat'`` or ``'sum'``. (default: ``'concat'``)
        weights_grad (bool): Let the alignment loss's gradient through the
            weights (ablation). (default: :obj:`False`)
        detach_belief (bool, optional): Stop-gradient inside :math:`b`
            (default: ``not weights_grad``).
        shared_confidence (bool): One confidence MLP for all modalities.
            (default: :obj:`False`)
        num_layers (int): (default: :obj:`1`)
        heads (int): (default: :obj:`1`)
        ffn (bool): (default: :obj:`False`)
        dropout (float): (default: :obj:`0.0`)
        eps (float): (default: :obj:`1e-6`)

    Shapes:
        - **input:** list of ``M`` tensors ``[N, d]`` or ``[N, M, d]``;
          mask ``[N, M]``
        - **output:** ``[N, M d]`` (concat) or ``[N, d]`` (sum); with
          ``return_weights=True`` also ``(weights [N, M], uncertainty
          [N, M])``
    """

    def __init__(self, num_modalities: int, channels: int,
                 uncertainty: str = 'row', calibration: str = 'geo',
                 calibrate_in_train: bool = True, temperature: float = 1.0,
                 mode: str = 'concat', weights_grad: bool = False,
                 detach_belief: Optional[bool] = None,
                 shared_confidence: bool = False, num_layers: int = 1,
                 heads: int = 1, ffn: bool = False, dropout: float = 0.0,
                 eps: float = 1e-6):
        super().__init__(num_modalities, channels)
        for name, value, choices in (
                ('uncertainty', uncertainty, ('row', 'col', 'entity')),
                ('calibration', calibration, ('geo', 'pdf_remnant')),
                ('mode', mode, ('concat', 'sum'))):
            if value not in choices:
                raise ValueError(f'{name} must be one of {choices} (got '
                                 f'{value!r})')
        if temperature <= 0:
            raise ValueError('temperature must be positive')
        self.uncertainty, self.calibration = uncertainty, calibration
        self.calibrate_in_train, self.temperature = (calibrate_in_train,
                                                     temperature)
        self.mode, self.weights_grad = mode, weights_grad
        if detach_belief is None:
            detach_belief = not weights_grad
        self.interaction = RelativeInteraction(
            num_modalities, channels, num_layers, heads, ffn, dropout,
            shared_confidence, detach_belief, eps)
        self.reset_parameters()

    def reset_parameters(self):
        self.interaction.reset_parameters()

    def calibrate(self, out: InteractionOutput) -> FusionOutput:
        """The ADC step alone, on a :class:`RelativeInteraction` output."""
        mask = out.mask
        du, u = RF.distribution_uniformity(out.attention, mask,
                                           self.uncertainty)
        apply_rc = self.calibrate_in_train or not self.training
        if apply_rc:
            rc = RF.relative_calibration(du, mask, self.calibration)
        else:
            rc = mask.to(du.dtype)
        w = RF.masked_softmax(out.belief * rc / self.temperature, mask)
        if not self.weights_grad:
            w = w.detach()
        fused = RF.weighted_fusion(out.x, w, self.mode)
        extras = dict(z=out.z, attention=out.attention,
                      confidence=out.confidence, holo=out.holo,
                      belief=out.belief, du=du, rc=rc)
        return FusionOutput(fused, w, u, extras)

    def fuse(self, x: Tensor, mask: Tensor) -> FusionOutput:
        return self.calibrate(self.interaction(x, mask))

    def _extra_repr(self) -> str:
        return (f', {self.channels}, uncertainty={self.uncertainty}, '
                f'calibration={self.calibration}, mode={self.mode}')
