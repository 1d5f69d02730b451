r"""Alignment losses (method.md, "Losses").

The in-batch candidate set lives in :func:`in_batch_logits` only; the ICL loss
and the TCP target of :mod:`ricea_pyg.nn.fusion` both read it.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['in_batch_logits', 'icl_loss']


def in_batch_logits(anchor: Tensor, counterpart: Tensor, tau: float = 0.1
                    ) -> Tensor:
    r"""Logits of each anchor against its in-batch candidates.

    For ``B`` pairs, anchor ``i`` is scored against the ``B`` cross-KG
    candidates (``counterpart``; the true one is column ``i``) and the
    ``B - 1`` other same-KG entities (``anchor``, diagonal masked):

    .. math::
        \ell_{ij} = \frac{\langle \hat a_i, \hat c_j \rangle}{\tau}, \qquad
        \ell_{i,B+j} = \frac{\langle \hat a_i, \hat a_j\rangle}{\tau},\ j\ne i

    with ℓ2-normalised rows.

    Args:
        anchor (Tensor): ``[B, d]`` or ``[..., B, d]``.
        counterpart (Tensor): Same shape, row ``i`` aligned with anchor ``i``.
        tau (float): Temperature. (default: :obj:`0.1`)

    Returns:
        ``[..., B, 2B]``; the target of row ``i`` is column ``i``.
    """
    a = F.normalize(anchor, dim=-1)
    c = F.normalize(counterpart, dim=-1)
    cross = a @ c.transpose(-1, -2)
    same = a @ a.transpose(-1, -2)
    eye = torch.eye(a.size(-2), dtype=torch.bool, device=a.device)
    same = same.masked_fill(eye, float('-inf'))
    return torch.cat([cross, same], dim=-1) / tau


def icl_loss(source: Tensor, target: Tensor, tau: float = 0.1,
             alpha: float = 0.5, weight: Tensor = None) -> Tensor:
    r"""In-batch contrastive loss, both directions mixed by :obj:`alpha`.

    .. math::
        \mathcal{L} = \alpha\, \mathrm{CE}(\ell^{s\to t}) +
        (1-\alpha)\, \mathrm{CE}(\ell^{t\to s})

    Args:
        source, target (Tensor): ``[B, d]`` aligned rows.
        tau (float): Temperature. (default: :obj:`0.1`)
        alpha (float): Weight of the source→target direction.
            (default: :obj:`0.5`)
        weight (Tensor, optional): ``[B]`` per-pair weights (e.g. 0 where a
            modality is missing on either side); the loss is their weighted
            mean, and 0 when all weights are 0.
    """
    idx = torch.arange(source.size(0), device=source.device)
    l2r = F.cross_entropy(in_batch_logits(source, target, tau), idx,
                          reduction='none')
    r2l = F.cross_entropy(in_batch_logits(target, source, tau), idx,
                          reduction='none')
    per_pair = alpha * l2r + (1 - alpha) * r2l
    if weight is None:
        return per_pair.mean()
    weight = weight.to(per_pair.dtype)
    return (per_pair * weight).sum() / weight.sum().clamp(min=1.0)


def _pair_probability(anchor: Tensor, counterpart: Tensor, tau: float
                      ) -> Tensor:
    """Softmax probability of the true counterpart, ``[..., B]``."""
    logits = in_batch_logits(anchor, counterpart, tau)
    return logits.softmax(dim=-1).diagonal(dim1=-2, dim2=-1)


def true_counterpart_probability(source: Tensor, target: Tensor,
                                 tau: float = 0.1) -> Tuple[Tensor, Tensor]:
    """Per-direction probability of the true counterpart (see :func:`icl_loss`).

    Returns ``(p_source [..., B], p_target [..., B])``.
    """
    return (_pair_probability(source, target, tau),
            _pair_probability(target, source, tau))
