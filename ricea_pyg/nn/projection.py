"""Per-modality linear projections to the shared hidden size."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

__all__ = ['ModalityProjection']


class ModalityProjection(torch.nn.Module):
    r"""One linear map :math:`\mathbb{R}^{F_m} \to \mathbb{R}^d` per feature
    modality (``rel``, ``attr``, ``img``, ``name``, ``char``, ...), as in
    MEAformer.

    Args:
        in_channels (dict): Modality name to its input size :math:`F_m`.
        channels (int): :math:`d`.
        bias (bool): (default: :obj:`True`)

    Shapes:
        - **input:** ``{modality: [N, F_m]}`` (a subset is fine)
        - **output:** ``{modality: [N, d]}``
    """

    def __init__(self, in_channels: Dict[str, int], channels: int,
                 bias: bool = True):
        super().__init__()
        self.in_channels, self.channels = dict(in_channels), channels
        self.lins = torch.nn.ModuleDict({
            m: torch.nn.Linear(f, channels, bias=bias)
            for m, f in self.in_channels.items()})
        self.reset_parameters()

    def reset_parameters(self):
        for lin in self.lins.values():
            lin.reset_parameters()

    def forward(self, xs: Dict[str, Tensor],
                index: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Projects each given modality (rows :obj:`index` only, if given)."""
        out = {}
        for m, x in xs.items():
            if m not in self.lins:
                raise KeyError(f'no projection for modality {m!r} (have '
                               f'{sorted(self.lins)})')
            out[m] = self.lins[m](x if index is None else x[index])
        return out

    def __repr__(self) -> str:
        dims = ', '.join(f'{m}={f}' for m, f in self.in_channels.items())
        return f'{self.__class__.__name__}({dims} -> {self.channels})'
