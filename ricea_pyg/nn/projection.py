"""Per-modality linear projections to the shared hidden size."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

__all__ = ['ModalityProjection']


class ModalityProjection(torch.nn.Module):
    r"""One linear map per feature modality (``rel``, ``attr``, ``img``,
    ``name``, ``char``, ...), as in `"MEAformer: Multi-modal Entity Alignment
    Transformer for Meta Modality Hybrid" <https://arxiv.org/abs/2212.14454>`_:

    .. math::
        \mathbf{x}^{m} = \mathbf{W}_m \mathbf{f}^{m} + \mathbf{b}_m,
        \qquad \mathbf{W}_m \in \mathbb{R}^{d \times F_m}

    Args:
        in_channels (dict): The input size :math:`F_m` of each modality, by
            name.
        channels (int): The shared output size :math:`d`.
        bias (bool): If :obj:`False`, the maps learn no bias
            :math:`\mathbf{b}_m`. (default: :obj:`True`)

    Shapes:
        - **input:** ``{modality: [N, F_m]}`` (a subset is fine)
        - **output:** ``{modality: [N, d]}``
    """

    def __init__(self, in_channels: Dict[str, int], channels: int,
                 bias: bool = True):
        super().__init__()
        self.in_channels, self.channels = dict(in_channels), channels
        self.bias = bias
        self.lins = torch.nn.ModuleDict({
            m: torch.nn.Linear(f, channels, bias=bias)
            for m, f in self.in_channels.items()})
        self.reset_parameters()

    def reset_parameters(self):
        r"""Resets all learnable parameters of the module."""
        for lin in self.lins.values():
            lin.reset_parameters()

    def forward(self, xs: Dict[str, Tensor],
                index: Optional[Tensor] = None) -> Dict[str, Tensor]:
        r"""Projects each given modality.

        Args:
            xs (dict): ``[N, F_m]`` features of some or all modalities, by
                name.
            index (Tensor, optional): ``[n]`` rows to project; all rows if
                :obj:`None`. (default: :obj:`None`)
        """
        out = {}
        for m, x in xs.items():
            if m not in self.lins:
                raise KeyError(f'no projection for modality {m!r} (have '
                               f'{sorted(self.lins)})')
            lin = self.lins[m]
            x = x if index is None else x[index]
            # Features may be stored narrower than the weights (float16).
            out[m] = lin(x.to(lin.weight.dtype))
        return out

    def __repr__(self) -> str:
        dims = ', '.join(f'{m}={f}' for m, f in self.in_channels.items())
        bias = '' if self.bias else ', bias=False'
        return f'{self.__class__.__name__}({dims} -> {self.channels}{bias})'
