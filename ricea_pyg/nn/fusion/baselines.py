"""The fusions RICEA is compared against."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ricea_pyg.nn.fusion.base import (
    FusionAuxiliary,
    FusionOutput,
    ModalityFusion,
    _check_choice,
)
from ricea_pyg.nn.fusion.functional import masked_softmax, weighted_fusion
from ricea_pyg.nn.fusion.transformer import CrossModalTransformer

__all__ = ['ConcatFusion', 'GlobalWeightFusion', 'MEAformerFusion']


class ConcatFusion(ModalityFusion):
    r"""ℓ2-normalised concatenation:

    .. math::
        \mathbf{h} = [\mu_1 \hat{\mathbf{x}}_1; \dots; \mu_M
        \hat{\mathbf{x}}_M], \qquad \hat{\mathbf{x}} = \mathbf{x} /
        \|\mathbf{x}\|_2

    Every present modality counts equally in the cosine similarity of two
    fused vectors; the reported weights are :math:`\mu_m / K`.

    Args:
        num_modalities (int): The number of modalities :math:`M`.
        channels (int, optional): The size shared by all modalities; not
            needed, as modalities may differ in size. (default: :obj:`None`)
        scoring (str): ``'fused'`` or ``'pair_mean'``, see
            :class:`~ricea_pyg.nn.fusion.ModalityFusion`.
            (default: ``'fused'``)

    Shapes:
        - **input:** list of ``[N, F_m]`` or ``[N, M, F]``; mask ``[N, M]``
        - **output:** ``[N, sum_m F_m]``; weights ``[N, M]``
    """
    ragged = True
    aliases = ('concat', )

    def __init__(self, num_modalities: int, channels: Optional[int] = None,
                 scoring: str = 'fused'):
        super().__init__(num_modalities, channels, scoring)
        self.reset_parameters()

    def fuse(self, xs, mask: Tensor) -> FusionOutput:
        m = mask.to((xs if isinstance(xs, Tensor) else xs[0]).dtype)
        fused = weighted_fusion(xs, m, 'concat')
        return FusionOutput(fused, m / m.sum(-1, keepdim=True).clamp_min(1))


class GlobalWeightFusion(ModalityFusion):
    r"""EVA-style learnable global modality weights (`"Visual Pivoting for
    (Unsupervised) Entity Alignment" <https://arxiv.org/abs/2009.13603>`_):

    .. math::
        w_{n,m} = \frac{\mu_{n,m} \exp(\theta_m)}{\sum_{j} \mu_{n,j}
        \exp(\theta_j)}, \qquad
        \mathbf{h}_n = [w_{n,1} \hat{\mathbf{x}}_{n,1}; \dots]

    One weight vector for all entities, renormalised over each entity's
    present modalities.

    Args:
        num_modalities (int): The number of modalities :math:`M`.
        channels (int, optional): The size shared by all modalities; only
            ``'sum'`` needs equal sizes. (default: :obj:`None`)
        mode (str): ``'concat'`` to concatenate the weighted modalities or
            ``'sum'`` to add them. (default: ``'concat'``)
        scoring (str): ``'fused'`` or ``'pair_mean'``, see
            :class:`~ricea_pyg.nn.fusion.ModalityFusion`.
            (default: ``'fused'``)

    Shapes:
        - **input:** list of ``[N, F_m]`` or ``[N, M, F]``; mask ``[N, M]``
        - **output:** ``[N, sum_m F_m]`` (concat) or ``[N, F]`` (sum);
          weights ``[N, M]``
    """
    ragged = True
    aliases = ('global', 'eva')

    def __init__(self, num_modalities: int, channels: Optional[int] = None,
                 mode: str = 'concat', scoring: str = 'fused'):
        super().__init__(num_modalities, channels, scoring)
        _check_choice('mode', mode, ('concat', 'sum'))
        self.mode = mode
        self.logits = torch.nn.Parameter(torch.empty(num_modalities))
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.zeros_(self.logits)

    def fuse(self, xs, mask: Tensor) -> FusionOutput:
        scores = self.logits.expand(mask.size(0), -1)
        w = masked_softmax(scores, mask)
        return FusionOutput(weighted_fusion(xs, w, self.mode), w)


class MEAformerFusion(ModalityFusion):
    r"""MEAformer's meta-modality hybrid (`"MEAformer: Multi-modal Entity
    Alignment Transformer for Meta Modality Hybrid"
    <https://arxiv.org/abs/2212.14454>`_): per-entity weights are the softmax
    of the total attention each modality *receives* in a cross-modal
    transformer layer,

    .. math::
        w_{n,m} = \operatorname{softmax}_{m \in P_n}\Big(
        \frac{1}{\sqrt{MH}} \sum_{h} \sum_{i \in P_n} A_{n,h,i,m}\Big),
        \qquad \mathbf{h}_n = [w_{n,1} \hat{\mathbf{x}}_{n,1}; \dots]

    This uses attention *as* the weight, which is what RICEA criticises.

    Args:
        num_modalities (int): The number of modalities :math:`M`.
        channels (int): The size :math:`d` of every modality embedding.
        num_layers (int): The number of transformer layers.
            (default: :obj:`1`)
        heads (int): The number of attention heads :math:`H`.
            (default: :obj:`1`)
        ffn (bool): If :obj:`True`, each layer has a feed-forward block.
            (default: :obj:`False`)
        dropout (float): Dropout on the attention and the residual branches.
            (default: :obj:`0.0`)
        mode (str): ``'concat'`` to concatenate the weighted modalities or
            ``'sum'`` to add them. (default: ``'concat'``)
        scoring (str): ``'fused'`` or ``'pair_mean'``, see
            :class:`~ricea_pyg.nn.fusion.ModalityFusion`.
            (default: ``'fused'``)
        transformer_input_grad (bool): If :obj:`False`, the transformer
            reads :math:`\mathrm{sg}(\mathbf{x})`: a loss on its outputs
            :math:`Z` (RICEA's :math:`\mathcal{L}_{out}`) trains it and not
            the modality encoders, which the fused output still reaches
            through :math:`\hat{\mathbf{x}}`; the weights still train the
            attention. ``ADCFusion``'s option of the same name.
            (default: :obj:`True`)

    Shapes:
        - **input:** ``[N, M, d]`` or list of ``[N, d]``; mask ``[N, M]``
        - **output:** ``[N, M d]`` (concat) or ``[N, d]``; weights ``[N, M]``
    """

    aliases = ('meaformer', )

    def __init__(self, num_modalities: int, channels: int,
                 num_layers: int = 1, heads: int = 1, ffn: bool = False,
                 dropout: float = 0.0, mode: str = 'concat',
                 scoring: str = 'fused', transformer_input_grad: bool = True):
        super().__init__(num_modalities, channels, scoring)
        _check_choice('mode', mode, ('concat', 'sum'))
        self.transformer_input_grad = transformer_input_grad
        self.num_layers, self.heads, self.ffn, self.dropout = (
            num_layers, heads, ffn, dropout)
        self.mode = mode
        self.transformer = CrossModalTransformer(channels, num_layers, heads,
                                                 ffn, dropout=dropout)
        self.reset_parameters()

    def reset_parameters(self):
        self.transformer.reset_parameters()

    def fuse(self, x: Tensor, mask: Tensor) -> FusionOutput:
        z, attn = self.transformer(
            x if self.transformer_input_grad else x.detach(), mask)
        N, heads, M, _ = attn.shape
        rows = mask.view(N, 1, M, 1)  # present queries only
        received = torch.where(rows, attn, attn.new_zeros(())).sum(
            dim=(1, 2)) / math.sqrt(M * heads)
        w = masked_softmax(received, mask)
        return FusionOutput(weighted_fusion(x, w, self.mode), w,
                            aux=FusionAuxiliary(z=z, attention=attn))
