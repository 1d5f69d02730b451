"""A small post-LN transformer over the M modality tokens of each entity."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import LayerNorm, Linear

from ricea_pyg.nn.fusion.base import options_repr
from ricea_pyg.nn.fusion.functional import masked_softmax

__all__ = ['CrossModalTransformer']


class _Layer(torch.nn.Module):
    def __init__(self, channels: int, heads: int, ffn: bool,
                 ffn_channels: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = Linear(channels, 3 * channels)
        self.out = Linear(channels, channels)
        self.norm1 = LayerNorm(channels)
        self.ffn = None
        if ffn:
            self.ffn = torch.nn.Sequential(Linear(channels, ffn_channels),
                                           torch.nn.GELU(),
                                           Linear(ffn_channels, channels))
            self.norm2 = LayerNorm(channels)
        self.dropout = dropout

    def reset_parameters(self):
        for module in self.modules():
            if module is not self and hasattr(module, 'reset_parameters'):
                module.reset_parameters()

    def forward(self, x: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        N, M, C = x.shape
        H = self.heads
        q, k, v = self.qkv(x).view(N, M, 3, H, C // H).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(C // H)
        key_mask = mask.view(N, 1, 1, M)  # key padding: hide missing ones
        attn = masked_softmax(scores, key_mask, dim=-1)
        h = F.dropout(attn, self.dropout, self.training) @ v
        h = self.out(h.transpose(1, 2).reshape(N, M, C))
        x = self.norm1(x + F.dropout(h, self.dropout, self.training))
        if self.ffn is not None:
            h = F.dropout(self.ffn(x), self.dropout, self.training)
            x = self.norm2(x + h)
        return x, attn


class CrossModalTransformer(torch.nn.Module):
    r"""Post-LN transformer layers attending over the :math:`M` modality
    tokens of every entity, with a key-padding mask for missing modalities,
    as in `"MEAformer: Multi-modal Entity Alignment Transformer for Meta
    Modality Hybrid" <https://arxiv.org/abs/2212.14454>`_ and RICEA
    (`"Probing Relative Interaction and Dynamic Calibration in Multi-modal
    Entity Alignment" <https://aclanthology.org/2025.acl-long.1384/>`_):

    .. math::
        \mathbf{A}^{(h)} &= \operatorname{softmax}_{j \in P}\Big(
        \frac{\mathbf{Q}^{(h)} \mathbf{K}^{(h)\top}}{\sqrt{d / H}}\Big),
        \qquad \mathbf{X}' = \mathrm{LN}\big(\mathbf{X} +
        [\mathbf{A}^{(1)} \mathbf{V}^{(1)}; \dots] \mathbf{W}_O\big)

        \mathbf{Z} &= \mathrm{LN}\big(\mathbf{X}' +
        \mathrm{FFN}(\mathbf{X}')\big) \quad \text{(with a feed-forward
        block, else } \mathbf{Z} = \mathbf{X}'\text{)}

    with :math:`P` the present modalities of the entity. Each layer is
    :class:`torch.nn.MultiheadAttention` (fused input projection) followed
    by :class:`torch.nn.LayerNorm`, tested equal to it.

    Args:
        channels (int): The token size :math:`d`.
        num_layers (int): The number of layers. (default: :obj:`1`)
        heads (int): The number of attention heads :math:`H`; must divide
            :obj:`channels`. (default: :obj:`1`)
        ffn (bool): If :obj:`True`, each layer has a feed-forward block
            (Linear, GELU, Linear). (default: :obj:`False`)
        ffn_channels (int, optional): The hidden size of the feed-forward
            block. (default: :obj:`None`, meaning :math:`2d`)
        dropout (float): Dropout on the attention and the residual branches.
            (default: :obj:`0.0`)

    Shapes:
        - **input:** ``x [N, M, d]``, ``mask [N, M]``
        - **output:** ``z [N, M, d]`` (zero for missing modalities), last-layer
          attention ``[N, H, M, M]`` (zero on missing keys)
    """

    def __init__(self, channels: int, num_layers: int = 1, heads: int = 1,
                 ffn: bool = False, ffn_channels: Optional[int] = None,
                 dropout: float = 0.0):
        super().__init__()
        if channels % heads != 0:
            raise ValueError(f'channels ({channels}) must be divisible by '
                             f'heads ({heads})')
        self.channels, self.num_layers, self.heads = channels, num_layers, heads
        self.ffn, self.ffn_channels, self.dropout = ffn, ffn_channels, dropout
        self.layers = torch.nn.ModuleList([
            _Layer(channels, heads, ffn, ffn_channels or 2 * channels,
                   dropout) for _ in range(num_layers)])
        self.reset_parameters()

    def reset_parameters(self):
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, x: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        r"""Runs the forward pass of the module.

        Args:
            x (Tensor): ``[N, M, d]`` modality tokens.
            mask (Tensor): ``[N, M]`` bool, True where a modality is
                present.
        """
        attn = None
        # Saturation guard: an entity whose tokens are so large that the
        # attention scores would overflow (beyond max ** 0.25 of the dtype,
        # ~4e9 in float32 and bfloat16) is divided by its largest magnitude
        # first; every other entity goes through bit for bit unchanged.
        big = torch.finfo(x.dtype).max ** 0.25
        scale = x.detach().abs().amax(dim=(1, 2), keepdim=True)
        x = x / torch.where(scale > big, scale, scale.new_ones(()))
        for layer in self.layers:
            x, attn = layer(x, mask)
        return torch.where(mask.unsqueeze(-1), x, x.new_zeros(())), attn

    def __repr__(self) -> str:
        return options_repr(self, ('channels', ))
