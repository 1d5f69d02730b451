"""The base class every fusion shares: M modality embeddings -> one."""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ['ModalityFusion', 'FusionOutput', 'ModalityInput',
           'prepare_modalities']

ModalityInput = Union[Tensor, Sequence[Tensor]]


class FusionOutput(NamedTuple):
    """Everything a fusion computes; :meth:`ModalityFusion.forward` returns a
    view of it. ``extras`` holds layer-specific tensors (attention,
    confidences, ...)."""
    fused: Tensor
    weights: Tensor
    uncertainty: Optional[Tensor] = None
    extras: Optional[dict] = None


def prepare_modalities(xs: ModalityInput, mask: Optional[Tensor], M: int,
                       ragged: bool = False, name: str = 'fusion'
                       ) -> Tuple[Union[Tensor, List[Tensor]], Tensor]:
    """Validates the input; zeroes missing modalities; returns the mask."""
    if isinstance(xs, Tensor):
        if xs.dim() != 3 or xs.size(1) != M:
            raise ValueError(f'{name} expects '
                             f'[N, {M}, F] or a list of {M} tensors '
                             f'[N, F_m] (got shape {tuple(xs.shape)})')
        N = xs.size(0)
    else:
        xs = list(xs)
        if len(xs) != M or any(x.dim() != 2 for x in xs):
            raise ValueError(f'{name} expects '
                             f'{M} tensors [N, F_m]')
        N = xs[0].size(0)
        if any(x.size(0) != N for x in xs):
            raise ValueError('all modalities need the same N')
        dims = {x.size(1) for x in xs}
        if len(dims) == 1 and not ragged:
            xs = torch.stack(xs, dim=1)
        elif len(dims) > 1 and not ragged:
            raise ValueError(f'{name} needs equal '
                             f'sizes (got {[x.size(1) for x in xs]}); '
                             'project each modality to a common size '
                             'first (e.g. torch.nn.Linear)')
    if mask is None:
        first = xs if isinstance(xs, Tensor) else xs[0]
        mask = torch.ones(N, M, dtype=torch.bool, device=first.device)
    elif mask.shape != (N, M):
        raise ValueError(f'mask must be [N, M] = [{N}, {M}] (got '
                         f'{tuple(mask.shape)})')
    mask = mask.bool()
    if isinstance(xs, Tensor):
        xs = xs * mask.unsqueeze(-1).to(xs.dtype)
    else:
        xs = [x * mask[:, m:m + 1].to(x.dtype) for m, x in enumerate(xs)]
    return xs, mask


class ModalityFusion(torch.nn.Module):
    r"""Base class for fusing :math:`M` modality embeddings into one.

    Every fusion takes the same input and returns the same output:

    * ``xs``: a list of :math:`M` tensors ``[N, F_m]`` or a stacked
      ``[N, M, F]`` tensor;
    * ``mask`` (optional): ``[N, M]`` bool, True = present (default: all
      present). Missing modalities get weight exactly 0 and receive no
      gradient;
    * returns the fused tensor, and with ``return_weights=True`` also
      ``(weights [N, M], uncertainty [N, M] or None)``, like GATConv's
      ``return_attention_weights``.

    Subclasses implement :meth:`fuse` on the prepared ``[N, M, F]`` (or, with
    :attr:`ragged` set, the list) and mask; :meth:`forward_full` returns the
    whole :class:`FusionOutput`.

    Args:
        num_modalities (int): :math:`M`.
        channels (int, optional): :math:`F` where all modalities share it.
    """
    #: Whether the fusion accepts modalities of different sizes.
    ragged: bool = False

    def __init__(self, num_modalities: int, channels: Optional[int] = None):
        super().__init__()
        if num_modalities < 1:
            raise ValueError('num_modalities must be at least 1')
        self.num_modalities = num_modalities
        self.channels = channels

    def reset_parameters(self):
        pass

    def prepare(self, xs: ModalityInput, mask: Optional[Tensor]
                ) -> Tuple[Union[Tensor, List[Tensor]], Tensor]:
        return prepare_modalities(xs, mask, self.num_modalities, self.ragged,
                                  self.__class__.__name__)

    def fuse(self, xs, mask: Tensor) -> FusionOutput:
        raise NotImplementedError

    def forward_full(self, xs: ModalityInput,
                     mask: Optional[Tensor] = None) -> FusionOutput:
        xs, mask = self.prepare(xs, mask)
        return self.fuse(xs, mask)

    def forward(self, xs: ModalityInput, mask: Optional[Tensor] = None,
                return_weights: bool = False):
        out = self.forward_full(xs, mask)
        if return_weights:
            return out.fused, (out.weights, out.uncertainty)
        return out.fused

    def out_channels(self, in_channels: Union[int, Sequence[int]]) -> int:
        """Size of the fused output for the given modality sizes."""
        if isinstance(in_channels, int):
            in_channels = [in_channels] * self.num_modalities
        if getattr(self, 'mode', 'concat') == 'sum':
            return in_channels[0]
        return sum(in_channels)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_modalities}'
                f'{self._extra_repr()})')

    def _extra_repr(self) -> str:
        return ''
