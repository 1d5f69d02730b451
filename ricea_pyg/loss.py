r"""Alignment losses (method.md, "Losses").

The in-batch candidate set is defined by :func:`in_batch_logits` (the
readable form) and computed by :func:`icl_terms` (tested equal, no ``[B, 2B]``
logits); the ICL loss, the TCP target and :class:`RICEALoss` all read it.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['in_batch_logits', 'icl_terms', 'icl_loss',
           'true_counterpart_probability',
           'UncertaintyWeighting', 'RICEALoss']


def _same_kg_logits(x: Tensor, tau: float) -> Tensor:
    """``<x_i, x_j> / tau`` with the diagonal masked (``[..., B, B]``)."""
    same = (x / tau) @ x.transpose(-1, -2)
    same.diagonal(dim1=-2, dim2=-1).fill_(float('-inf'))
    return same


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
    return torch.cat([a @ c.transpose(-1, -2) / tau,
                      _same_kg_logits(a, tau)], dim=-1)


class _ICLTerms(torch.autograd.Function):
    """The two CE vectors of :func:`icl_terms` on ℓ2-normalised rows.

    Only the ``[B, d]`` inputs and the ``[B]`` log-sum-exps are saved; the
    ``[B, B]`` products are recomputed in backward (one extra product each),
    so a step holds no ``[B, B]`` matrix between forward and backward.
    """

    @staticmethod
    def forward(ctx, s: Tensor, t: Tensor, tau: float):
        cross = (s / tau) @ t.transpose(-1, -2)  # row i: source i vs targets
        pos = cross.diagonal(dim1=-2, dim2=-1).clone()
        lse_s, lse_t = cross.logsumexp(dim=-1), cross.logsumexp(dim=-2)
        del cross
        if s.size(-2) > 1:  # B = 1 has no same-KG candidate
            lse_s = torch.logaddexp(lse_s,
                                    _same_kg_logits(s, tau).logsumexp(-1))
            lse_t = torch.logaddexp(lse_t,
                                    _same_kg_logits(t, tau).logsumexp(-1))
        ctx.tau = tau
        ctx.save_for_backward(s, t, lse_s, lse_t)
        return lse_s - pos, lse_t - pos

    @staticmethod
    def _same_kg_grad(x: Tensor, lse: Tensor, g: Tensor, tau: float
                      ) -> Tensor:
        p = _same_kg_logits(x, tau).sub_(lse.unsqueeze(-1)).exp_()
        p.mul_(g.unsqueeze(-1))
        # logit[i, j] = <x_i, x_j> / tau: both factors get gradient.
        return (p + p.transpose(-1, -2)) @ x / tau

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_s: Tensor, g_t: Tensor):
        s, t, lse_s, lse_t = ctx.saved_tensors
        tau = ctx.tau
        # d CE / d cross = row softmax * g_s + column softmax * g_t - I.
        cross = (s / tau) @ t.transpose(-1, -2)
        grad = (cross - lse_s.unsqueeze(-1)).exp_().mul_(g_s.unsqueeze(-1))
        grad.add_(cross.sub_(lse_t.unsqueeze(-2)).exp_().mul_(
            g_t.unsqueeze(-2)))
        del cross
        grad.diagonal(dim1=-2, dim2=-1).sub_(g_s + g_t)
        grad_s = grad @ t / tau
        grad_t = grad.transpose(-1, -2) @ s / tau
        if s.size(-2) > 1:
            grad_s += _ICLTerms._same_kg_grad(s, lse_s, g_s, tau)
            grad_t += _ICLTerms._same_kg_grad(t, lse_t, g_t, tau)
        return grad_s, grad_t, None


def icl_terms(source: Tensor, target: Tensor, tau: float = 0.1
              ) -> Tuple[Tensor, Tensor]:
    r"""Per-pair cross-entropy over the :func:`in_batch_logits` candidate set,
    in both directions, without building the ``[B, 2B]`` logits:

    .. math::
        \mathrm{CE}_i = \log\Big(\sum_j e^{\ell_{ij}} + \sum_{j \ne i}
        e^{\ell_{i,B+j}}\Big) - \ell_{ii}

    The cross-KG block is computed once and read by rows (source→target)
    and by columns (target→source); :math:`1/\tau` scales the ``[B, d]``
    rows instead of the ``[B, B]`` products; backward recomputes the
    products instead of keeping them (memory ``O(B d)`` between passes).

    Args:
        source, target (Tensor): ``[..., B, d]`` aligned rows.
        tau (float): Temperature. (default: :obj:`0.1`)

    Returns:
        ``(ce_source_to_target [..., B], ce_target_to_source [..., B])``.
    """
    return _ICLTerms.apply(F.normalize(source, dim=-1),
                           F.normalize(target, dim=-1), tau)


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
    l2r, r2l = icl_terms(source, target, tau)
    return _mix(l2r, r2l, alpha, weight)


def _mix(l2r: Tensor, r2l: Tensor, alpha: float, weight: Tensor = None
         ) -> Tensor:
    per_pair = alpha * l2r + (1 - alpha) * r2l
    if weight is None:
        return per_pair.mean(dim=-1)
    weight = weight.to(per_pair.dtype)
    return (per_pair * weight).sum(-1) / weight.sum(-1).clamp(min=1.0)


def true_counterpart_probability(source: Tensor, target: Tensor,
                                 tau: float = 0.1) -> Tuple[Tensor, Tensor]:
    r"""Per-direction softmax probability of the true counterpart in the
    :func:`in_batch_logits` candidate set, :math:`e^{-\mathrm{CE}}`.

    Returns ``(p_source [..., B], p_target [..., B])``.
    """
    l2r, r2l = icl_terms(source, target, tau)
    return (-l2r).exp(), (-r2l).exp()


class UncertaintyWeighting(torch.nn.Module):
    r"""Learnable uncertainty weighting of several losses (Kendall et al.,
    as MEAformer's ``CustomMultiLossLayer``):

    .. math::
        \mathcal{L} = \sum_{i} e^{-s_i}\, \mathcal{L}_i + s_i

    A term given as :obj:`None` (e.g. a modality absent from the batch)
    contributes 0, its :math:`s_i` included.

    Args:
        num_losses (int): Number of terms.
    """

    def __init__(self, num_losses: int):
        super().__init__()
        self.log_vars = torch.nn.Parameter(torch.zeros(num_losses))

    def reset_parameters(self):
        torch.nn.init.zeros_(self.log_vars)

    def forward(self, losses: Sequence[Optional[Tensor]]) -> Tensor:
        if len(losses) != self.log_vars.numel():
            raise ValueError(f'expected {self.log_vars.numel()} losses (got '
                             f'{len(losses)})')
        total = self.log_vars.new_zeros(())
        for s, loss in zip(self.log_vars, losses):
            if loss is not None:
                total = total + torch.exp(-s) * loss + s
        return total

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.log_vars.numel()})'


class RICEALoss(torch.nn.Module):
    r"""The training objective of method.md:

    .. math::
        \mathcal{L} = \mathcal{L}_{joint} + \mathrm{UW}(\mathcal{L}_{in})
        + \mathrm{UW}(\mathcal{L}_{out}) + \lambda_{tcp}
        \mathcal{L}_{tcp}

    * :math:`\mathcal{L}_{joint}`: :func:`icl_loss` on the fused embedding;
    * :math:`\mathcal{L}_{in}`: :func:`icl_loss` on each modality embedding
      :math:`\mathbf{x}_m`, over the pairs where both sides have it;
    * :math:`\mathcal{L}_{out}`: the same on each transformer output
      :math:`Z_m` (fusions with a transformer only);
    * :math:`\mathcal{L}_{tcp}`:
      :func:`~ricea_pyg.nn.fusion.tcp_loss` between each present
      modality's confidence and the probability that the modality alone
      gives the true counterpart (fusions with a confidence only). A
      counterpart that lacks the modality makes that probability small, as
      the modality cannot identify it.

    :math:`\mathrm{UW}` is :class:`UncertaintyWeighting` (or a plain sum).

    Args:
        num_modalities (int): :math:`M`.
        tau (float): ICL temperature. (default: :obj:`0.1`)
        alpha (float): ICL direction mix. (default: :obj:`0.5`)
        lambda_tcp (float): (default: :obj:`1.0`)
        uncertainty_weighting (bool): (default: :obj:`True`)
    """

    def __init__(self, num_modalities: int, tau: float = 0.1,
                 alpha: float = 0.5, lambda_tcp: float = 1.0,
                 uncertainty_weighting: bool = True):
        super().__init__()
        self.num_modalities = num_modalities
        self.tau, self.alpha, self.lambda_tcp = tau, alpha, lambda_tcp
        if uncertainty_weighting:
            self.in_weighting = UncertaintyWeighting(num_modalities)
            self.out_weighting = UncertaintyWeighting(num_modalities)
        else:
            self.in_weighting = self.out_weighting = None

    def _per_modality(self, xs: Tensor, xt: Tensor, both: Tensor):
        """ICL per modality (``None`` where no pair has it) and the
        per-direction CE ``[M, B]`` it came from, in one batched call."""
        l2r, r2l = icl_terms(xs.transpose(0, 1), xt.transpose(0, 1),
                             self.tau)
        losses = _mix(l2r, r2l, self.alpha, both.t())
        return [loss if both[:, m].any() else None
                for m, loss in enumerate(losses)], (l2r, r2l)

    def _combine(self, weighting, losses) -> Optional[Tensor]:
        present = [x for x in losses if x is not None]
        if not present:
            return None
        if weighting is None:
            return torch.stack(present).sum()
        return weighting(losses)

    def forward(self, source, target) -> Tuple[Tensor, Dict[str, float]]:
        """Args: the :class:`~ricea_pyg.models.ModelOutput` of ``B`` source
        rows and of their ``B`` counterparts. Returns the total loss and
        its parts (floats, for logging)."""
        # Imported here: the fusion functionals import this module.
        from ricea_pyg.nn.fusion.functional import tcp_loss

        both = source.mask & target.mask
        parts: Dict[str, Tensor] = {}
        parts['joint'] = icl_loss(source.fused, target.fused, self.tau,
                                  self.alpha)
        per_in, (ce_s, ce_t) = self._per_modality(source.x, target.x, both)
        l_in = self._combine(self.in_weighting, per_in)
        if l_in is not None:
            parts['in'] = l_in
        if 'z' in source.extras:
            per_out, _ = self._per_modality(source.extras['z'],
                                            target.extras['z'], both)
            l_out = self._combine(self.out_weighting, per_out)
            if l_out is not None:
                parts['out'] = l_out
        if 'confidence' in source.extras and self.lambda_tcp > 0:
            # tcp_target's p = exp(-CE) of the same candidate set as L_in:
            # reuse those CEs instead of recomputing the logits.
            p_s, p_t = (-ce_s.detach()).exp().t(), (-ce_t.detach()).exp().t()
            parts['tcp'] = self.lambda_tcp * 0.5 * (
                tcp_loss(source.extras['confidence'], p_s, source.mask)
                + tcp_loss(target.extras['confidence'], p_t, target.mask))
        total = torch.stack(list(parts.values())).sum()
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_modalities}, '
                f'tau={self.tau}, lambda_tcp={self.lambda_tcp})')
