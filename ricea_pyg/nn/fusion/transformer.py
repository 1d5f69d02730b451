"""A small post-LN transformer over the M modality tokens of each entity."""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import LayerNorm, Linear

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
    tokens of every entity, with a key-padding mask for missing modalities.

    Args:
        channels (int): Token size :math:`d`.
        num_layers (int): (default: :obj:`1`)
        heads (int): (default: :obj:`1`)
        ffn (bool): Add a feed-forward block per layer. (default:
            :obj:`False`)
        ffn_channels (int, optional): Its hidden size (default: :math:`2d`).
        dropout (float): (default: :obj:`0.0`)

    Shapes:
        - **input:** ``x [N, M, d]``, ``mask [N, M]``
        - **output:** ``z [N, M, d]`` (zero for missing modalities), last-layer
          attention ``[N, H, M, M]`` (zero on missing keys)
    """

    def __init__(self, channels: int, num_layers: int = 1, heads: int = 1,
                 ffn: bool = False, ffn_channels: int = None,
                 dropout: float = 0.0):
        super().__init__()
        if channels % heads != 0:
            raise ValueError(f'channels ({channels}) must be divisible by '
                             f'heads ({heads})')
        self.channels, self.num_layers, self.heads = channels, num_layers, heads
        self.layers = torch.nn.ModuleList([
            _Layer(channels, heads, ffn, ffn_channels or 2 * channels,
                   dropout) for _ in range(num_layers)])
        self.reset_parameters()

    def reset_parameters(self):
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, x: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        attn = None
        for layer in self.layers:
            x, attn = layer(x, mask)
        return x * mask.unsqueeze(-1).to(x.dtype), attn

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, '
                f'num_layers={self.num_layers}, heads={self.heads})')
