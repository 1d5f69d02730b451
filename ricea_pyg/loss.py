r"""Alignment losses: RICEA's (`ACL 2025
<https://aclanthology.org/2025.acl-long.1384/>`_, on MEAformer's
contrastive objective) and Dual-AMN's hard-negative loss.

The in-batch candidate set is defined by :func:`in_batch_logits` (the
readable form) and computed by :func:`icl_terms` (tested equal, no ``[B, 2B]``
logits); the ICL loss, the TCP target and :class:`RICEALoss` all read it.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ricea_pyg.search.embedding import Embeddings, query_key

__all__ = ['in_batch_logits', 'icl_terms', 'icl_loss',
           'true_counterpart_probability', 'tcp_target', 'tcp_loss',
           'uncertainty_loss', 'auxiliary_losses', 'auxiliary_loss',
           'UncertaintyWeighting', 'RICEALoss', 'dual_amn_loss',
           'hard_negative_ids']


def _same_kg_logits(query: Tensor, key: Tensor, tau: float) -> Tensor:
    """``<q_i, k_j> / tau`` with the diagonal masked (``[..., B, B]``)."""
    same = (query / tau) @ key.transpose(-1, -2)
    same.diagonal(dim1=-2, dim2=-1).fill_(float('-inf'))
    return same


def in_batch_logits(anchor: Embeddings, counterpart: Embeddings,
                    tau: float = 0.1, normalize: Optional[bool] = None
                    ) -> Tensor:
    r"""Logits of each anchor against its in-batch candidates.

    For ``B`` pairs, anchor ``i`` is scored against the ``B`` cross-KG
    candidates (``counterpart``; the true one is column ``i``) and the
    ``B - 1`` other same-KG entities (``anchor``, diagonal masked):

    .. math::
        \ell_{ij} = \frac{\langle \hat a_i, \hat c_j \rangle}{\tau}, \qquad
        \ell_{i,B+j} = \frac{\langle \hat a_i, \hat a_j\rangle}{\tau},\ j\ne i

    with ℓ2-normalised rows, or with :math:`\langle q(a_i), k(\cdot)
    \rangle` for :class:`~ricea_pyg.search.QueryKey` embeddings (the score
    search uses, :func:`~ricea_pyg.nn.fusion.pair_mean_query_key`).

    Args:
        anchor (Tensor or QueryKey): ``[B, d]`` or ``[..., B, d]``.
        counterpart (Tensor or QueryKey): Same shape, row ``i`` aligned
            with anchor ``i``.
        tau (float): Temperature. (default: :obj:`0.1`)
        normalize (bool, optional): ``False`` uses tensors as they are.
            (default: :obj:`None`, ℓ2-normalise tensors)

    Returns:
        ``[..., B, 2B]``; the target of row ``i`` is column ``i``.
    """
    aq, ak = query_key(anchor, normalize)
    _, ck = query_key(counterpart, normalize)
    return torch.cat([aq @ ck.transpose(-1, -2) / tau,
                      _same_kg_logits(aq, ak, tau)], dim=-1)


class _ICLTerms(torch.autograd.Function):
    """The two CE vectors of :func:`icl_terms` from the query and key rows of
    both sides (the same tensor twice for a cosine score: autograd adds the
    two gradients).

    Only the ``[B, d]`` inputs and the ``[B]`` log-sum-exps are saved; the
    ``[B, B]`` products are recomputed in backward (one extra product each),
    so a step holds no ``[B, B]`` matrix between forward and backward. The
    score is symmetric, so target ``j``'s logits against the sources are
    column ``j`` of the source-to-target block. Leading dimensions (one per
    modality in :class:`RICEALoss`) are taken one ``[B, B]`` block at a
    time, which bounds the peak at a few ``[B, B]`` matrices, not a few per
    modality.
    """

    @staticmethod
    def forward(ctx, sq: Tensor, sk: Tensor, tq: Tensor, tk: Tensor,
                tau: float):
        ctx.tau = tau
        lse_s, lse_t, pos = _blockwise(_ICLTerms._forward, sq, sk, tq, tk,
                                       tau=tau)
        ctx.save_for_backward(sq, sk, tq, tk, lse_s, lse_t)
        return lse_s - pos, lse_t - pos

    @staticmethod
    def _forward(sq: Tensor, sk: Tensor, tq: Tensor, tk: Tensor, tau: float
                 ) -> Tuple[Tensor, Tensor, Tensor]:
        cross = (sq / tau) @ tk.t()  # row i: source i
        pos = cross.diagonal().clone()
        lse_s, lse_t = cross.logsumexp(dim=-1), cross.logsumexp(dim=-2)
        del cross
        if sq.size(0) > 1:  # B = 1 has no same-KG candidate
            lse_s = torch.logaddexp(
                lse_s, _same_kg_logits(sq, sk, tau).logsumexp(-1))
            lse_t = torch.logaddexp(
                lse_t, _same_kg_logits(tq, tk, tau).logsumexp(-1))
        return lse_s, lse_t, pos

    @staticmethod
    def _same_kg_grad(q: Tensor, k: Tensor, lse: Tensor, g: Tensor,
                      tau: float) -> Tuple[Tensor, Tensor]:
        p = _same_kg_logits(q, k, tau).sub_(lse.unsqueeze(-1)).exp_()
        p.mul_(g.unsqueeze(-1))
        # logit[i, j] = <q_i, k_j> / tau: both factors get gradient.
        return p @ k / tau, p.t() @ q / tau

    @staticmethod
    def _backward(sq: Tensor, sk: Tensor, tq: Tensor, tk: Tensor,
                  lse_s: Tensor, lse_t: Tensor, g_s: Tensor, g_t: Tensor,
                  tau: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        # d CE / d cross = row softmax * g_s + column softmax * g_t - I.
        cross = (sq / tau) @ tk.t()
        grad = (cross - lse_s.unsqueeze(-1)).exp_().mul_(g_s.unsqueeze(-1))
        grad.add_(cross.sub_(lse_t.unsqueeze(-2)).exp_().mul_(
            g_t.unsqueeze(-2)))
        del cross
        grad.diagonal().sub_(g_s + g_t)
        grad_sq = grad @ tk / tau
        grad_tk = grad.t() @ sq / tau
        del grad
        if sq.size(0) == 1:
            return grad_sq, torch.zeros_like(sk), torch.zeros_like(tq), grad_tk
        gq, grad_sk = _ICLTerms._same_kg_grad(sq, sk, lse_s, g_s, tau)
        grad_tq, gk = _ICLTerms._same_kg_grad(tq, tk, lse_t, g_t, tau)
        return grad_sq + gq, grad_sk, grad_tq, grad_tk + gk

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_s: Tensor, g_t: Tensor):
        grads = _blockwise(_ICLTerms._backward, *ctx.saved_tensors, g_s, g_t,
                           tau=ctx.tau)
        return (*grads, None)


def _blockwise(fn, *tensors: Tensor, tau: float) -> Tuple[Tensor, ...]:
    """``fn`` on each ``[B, ·]`` block of ``[..., B, ·]`` inputs, one block at
    a time, its outputs stacked back to the leading shape."""
    lead = tensors[0].shape[:-2]
    if not lead:
        return fn(*tensors, tau=tau)
    flat = [t.reshape(-1, *t.shape[len(lead):]) for t in tensors]
    outs = [fn(*block, tau=tau) for block in zip(*flat)]
    return tuple(torch.stack(parts).reshape(*lead, *parts[0].shape)
                 for parts in zip(*outs))


def icl_terms(source: Embeddings, target: Embeddings, tau: float = 0.1,
              normalize: Optional[bool] = None) -> Tuple[Tensor, Tensor]:
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
        source, target (Tensor or QueryKey): ``[..., B, d]`` aligned rows.
        tau (float): Temperature. (default: :obj:`0.1`)
        normalize (bool, optional): ``False`` uses tensors as they are.
            (default: :obj:`None`, ℓ2-normalise tensors)

    Returns:
        ``(ce_source_to_target [..., B], ce_target_to_source [..., B])``.
    """
    sq, sk = query_key(source, normalize)
    tq, tk = query_key(target, normalize)
    shapes = {tuple(t.shape) for t in (sq, sk, tq, tk)}
    if len(shapes) > 1 or sq.dim() < 2:
        raise ValueError(f'icl_terms needs source and target rows of one '
                         f'shape [..., B, d], row i of each a pair (got '
                         f'{sorted(shapes)}); expand or index them to match')
    return _ICLTerms.apply(sq, sk, tq, tk, tau)


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
    if weight.dtype == torch.bool:  # a mask: select, never multiply
        kept = torch.where(weight, per_pair, per_pair.new_zeros(()))
        return kept.sum(-1) / weight.sum(-1).clamp(min=1).to(kept.dtype)
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


def tcp_target(source: Tensor, target: Tensor, tau: float = 0.1
               ) -> Tuple[Tensor, Tensor]:
    r"""True-class probability per modality, the target of the
    mono-confidence :math:`c_m` (as in `"Predictive Dynamic Fusion"
    <https://arxiv.org/abs/2406.04802>`_, ICML 2024).

    :math:`p_m(e)` is the probability that modality :math:`m` alone gives to
    the true counterpart of :math:`e` within the ICL candidate set (``B``
    cross-KG plus ``B - 1`` same-KG candidates, :func:`in_batch_logits`):
    :func:`true_counterpart_probability` per modality.

    Args:
        source (Tensor): ``[B, M, d]`` embeddings of the ``B`` source
            entities of aligned pairs.
        target (Tensor): ``[B, M, d]`` embeddings of their counterparts, row
            ``i`` aligned with source row ``i``.
        tau (float): Temperature of the candidate logits.
            (default: :obj:`0.1`)

    Returns:
        ``(p_source [B, M], p_target [B, M])``, detached.
    """
    with torch.no_grad():
        p_s, p_t = true_counterpart_probability(source.transpose(0, 1),
                                                target.transpose(0, 1), tau)
    return p_s.t(), p_t.t()


def tcp_loss(confidence: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    r"""The confidence loss :math:`\mathcal{L}_{tcp}` of `"Probing Relative
    Interaction and Dynamic Calibration in Multi-modal Entity Alignment"
    <https://aclanthology.org/2025.acl-long.1384/>`_ (ACL 2025), an L1
    regression of each confidence on its true-class probability:

    .. math::
        \mathcal{L}_{tcp} = \frac{1}{|V|}\sum_{(e,m) \in V}
        \big|c_m(e) - \mathrm{sg}(p_m(e))\big|

    over the valid (present) entries :math:`V`; 0 when none is valid.

    Args:
        confidence (Tensor): ``[N, M]`` mono-confidences :math:`c`.
        target (Tensor): ``[N, M]`` true-class probabilities :math:`p` (e.g.
            from :func:`tcp_target`); no gradient flows into it.
        valid (Tensor): ``[N, M]`` bool, True where the entry counts.
    """
    valid = valid.bool()
    zero = confidence.new_zeros(())
    # Invalid entries are replaced before the difference, so NaN/inf there
    # reach neither the loss nor the gradient.
    c = torch.where(valid, confidence, zero)
    p = torch.where(valid, target.detach().to(c.dtype), zero)
    diff = torch.where(valid, (c - p).abs(), zero)
    return diff.sum() / valid.sum().clamp_min(1).to(diff.dtype)


def uncertainty_loss(uncertainty: Tensor, target: Tensor, valid: Tensor
                     ) -> Tensor:
    r"""Teaches an uncertainty to predict that a modality fails on its own:
    a squared error against the probability of failure,

    .. math::
        \mathcal{L}_{u} = \frac{1}{|V|}\sum_{(e,m) \in V}
        \big(u_m(e) - (1 - \mathrm{sg}(p_m(e)))\big)^2

    over the valid entries :math:`V`; 0 when none is valid. With ADC's
    :math:`u`, read from the attention
    (:func:`~ricea_pyg.nn.fusion.distribution_uniformity`), it trains the
    attention so that a modality that cannot identify its entity (missing
    information, noise, another entity's data) gets a uniform attention
    row, hence a high :math:`u` and a low relative calibration.

    Args:
        uncertainty (Tensor): ``[N, M]`` uncertainties :math:`u \in [0, 1]`.
        target (Tensor): ``[N, M]`` true-class probabilities :math:`p`; no
            gradient flows into it.
        valid (Tensor): ``[N, M]`` bool, True where the entry counts.
    """
    valid = valid.bool()
    zero = uncertainty.new_zeros(())
    u = torch.where(valid, uncertainty, zero)
    p = torch.where(valid, target.detach().to(u.dtype), zero)
    diff = torch.where(valid, (u - (1 - p)).square(), zero)
    return diff.sum() / valid.sum().clamp_min(1).to(diff.dtype)


def auxiliary_losses(out, target_scores: Tensor, lambda_tcp: float = 1.0,
                     lambda_uncertainty: float = 1.0) -> Dict[str, Tensor]:
    r"""The auxiliary losses of a fusion's output, by name: what a model adds
    to its task loss so that every part of the fusion trains.

    * ``'tcp'``: :func:`tcp_loss` of the confidence
      (:attr:`~ricea_pyg.nn.fusion.FusionAuxiliary.confidence`), for fusions
      that have one (:class:`~ricea_pyg.nn.ADCFusion`);
    * ``'uncertainty'``: :func:`uncertainty_loss` of the uncertainty, for
      fusions whose uncertainty carries a gradient, over the entities with
      at least two present modalities (with one, :math:`u` is 0 by
      definition).

    Fusions without these terms (``concat``, ``global``) give an empty
    dict.

    Args:
        out (FusionOutput or ModelOutput): The fusion's output (it needs
            ``mask``, ``aux`` and ``uncertainty``).
        target_scores (Tensor): ``[N, M]`` probability that each modality
            alone gives the right answer: for a classifier, the softmax
            probability of the true class from a per-modality head; for
            alignment, :func:`tcp_target`. Detached here.
        lambda_tcp (float): Weight of ``'tcp'``. (default: :obj:`1.0`)
        lambda_uncertainty (float): Weight of ``'uncertainty'``.
            (default: :obj:`1.0`)
    """
    if out.mask is None:
        raise ValueError('auxiliary_losses needs the output of a fusion '
                         '(forward_full) or of a model: it has no mask')
    if target_scores.shape != out.mask.shape:
        raise ValueError(f'target_scores must be [N, M] = '
                         f'{list(out.mask.shape)} (got '
                         f'{list(target_scores.shape)})')
    mask = out.mask.bool()
    parts: Dict[str, Tensor] = {}
    aux = out.aux
    if aux is not None and aux.confidence is not None and lambda_tcp > 0:
        parts['tcp'] = lambda_tcp * tcp_loss(aux.confidence, target_scores,
                                             mask)
    u = out.uncertainty
    if u is not None and u.requires_grad and lambda_uncertainty > 0:
        several = mask & (mask.sum(dim=-1, keepdim=True) > 1)
        parts['uncertainty'] = lambda_uncertainty * uncertainty_loss(
            u, target_scores, several)
    return parts


def auxiliary_loss(out, target_scores: Tensor, lambda_tcp: float = 1.0,
                   lambda_uncertainty: float = 1.0) -> Tensor:
    r"""The sum of :func:`auxiliary_losses` (a zero scalar when the fusion has
    none): one call that a model adds to its task loss.

    .. code-block:: python

        out = fusion.forward_full(xs, mask)
        logits = head(out.fused)
        probs = per_modality_true_class_probability(xs)  # [N, M]
        loss = F.cross_entropy(logits, y) + auxiliary_loss(out, probs)

    Args:
        out (FusionOutput or ModelOutput): The fusion's output.
        target_scores (Tensor): ``[N, M]``, see :func:`auxiliary_losses`.
        lambda_tcp (float): (default: :obj:`1.0`)
        lambda_uncertainty (float): (default: :obj:`1.0`)
    """
    parts = auxiliary_losses(out, target_scores, lambda_tcp,
                             lambda_uncertainty)
    if not parts:
        return out.fused.new_zeros(())
    return torch.stack(list(parts.values())).sum()


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
    r"""The training objective of RICEA (`ACL 2025
    <https://aclanthology.org/2025.acl-long.1384/>`_):

    .. math::
        \mathcal{L} = \mathcal{L}_{joint} + \mathrm{UW}(\mathcal{L}_{in})
        + \mathrm{UW}(\mathcal{L}_{out}) + \lambda_{tcp}
        \mathcal{L}_{tcp} + \lambda_{u} \mathcal{L}_{u}

    * :math:`\mathcal{L}_{joint}`: :func:`icl_loss` on the fused embedding,
      by the score search uses (the model output's
      :attr:`~ricea_pyg.models.ModelOutput.embeddings`: the cosine of the
      fused vectors, or the query/key score of ``scoring='pair_mean'``);
    * :math:`\mathcal{L}_{in}`: :func:`icl_loss` on each modality embedding
      :math:`\mathbf{x}_m`, over the pairs where both sides have it;
    * :math:`\mathcal{L}_{out}`: the same on each transformer output
      :math:`Z_m` (fusions with a transformer only);
    * :math:`\mathcal{L}_{tcp}`:
      :func:`tcp_loss` between each present
      modality's confidence and the probability that the modality alone
      gives the true counterpart (fusions with a confidence only). A
      counterpart that lacks the modality makes that probability small, as
      the modality cannot identify it;
    * :math:`\mathcal{L}_{u}`: :func:`uncertainty_loss` of the fusion's
      uncertainty against the same probabilities (not in the method; off
      by default).

    The last two are :func:`auxiliary_losses`, averaged over both sides.
    :math:`\mathrm{UW}` is :class:`UncertaintyWeighting` (or a plain sum).

    Args:
        num_modalities (int): :math:`M`.
        tau (float): ICL temperature. (default: :obj:`0.1`)
        alpha (float): ICL direction mix. (default: :obj:`0.5`)
        lambda_tcp (float): (default: :obj:`1.0`)
        uncertainty_weighting (bool): (default: :obj:`True`)
        lambda_uncertainty (float): :math:`\lambda_u`. (default: :obj:`0.0`)
    """

    def __init__(self, num_modalities: int, tau: float = 0.1,
                 alpha: float = 0.5, lambda_tcp: float = 1.0,
                 uncertainty_weighting: bool = True,
                 lambda_uncertainty: float = 0.0):
        super().__init__()
        self.num_modalities = num_modalities
        self.tau, self.alpha, self.lambda_tcp = tau, alpha, lambda_tcp
        self.lambda_uncertainty = lambda_uncertainty
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

    def forward(self, source, target, joint: Optional[Tensor] = None
                ) -> Tuple[Tensor, Dict[str, float]]:
        r"""Args: the :class:`~ricea_pyg.models.ModelOutput` of ``B`` source
        rows and of their ``B`` counterparts, and optionally the
        :math:`\mathcal{L}_{joint}` term computed by the caller in place of
        the in-batch ICL (e.g. :func:`dual_amn_loss` over every entity).
        Returns the total loss and its parts (floats, for logging; the TCP
        part is logged as ``'tcp'``, the uncertainty part as
        ``'uncertainty'``)."""
        both = source.mask & target.mask
        parts: Dict[str, Tensor] = {}
        parts['joint'] = joint if joint is not None else icl_loss(
            source.embeddings, target.embeddings, self.tau, self.alpha)
        per_in, (ce_s, ce_t) = self._per_modality(source.x, target.x, both)
        l_in = self._combine(self.in_weighting, per_in)
        if l_in is not None:
            parts['in'] = l_in
        if source.aux is not None and source.aux.z is not None:
            per_out, _ = self._per_modality(source.aux.z, target.aux.z, both)
            l_out = self._combine(self.out_weighting, per_out)
            if l_out is not None:
                parts['out'] = l_out
        # tcp_target's p = exp(-CE) of the same candidate set as L_in:
        # reuse those CEs instead of recomputing the logits.
        p_s, p_t = (-ce_s.detach()).exp().t(), (-ce_t.detach()).exp().t()
        aux_s = auxiliary_losses(source, p_s, self.lambda_tcp,
                                 self.lambda_uncertainty)
        aux_t = auxiliary_losses(target, p_t, self.lambda_tcp,
                                 self.lambda_uncertainty)
        for name in aux_s:
            parts[name] = 0.5 * (aux_s[name] + aux_t[name])
        total = torch.stack(list(parts.values())).sum()
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_modalities}, '
                f'tau={self.tau}, lambda_tcp={self.lambda_tcp})')


def _check_rows(name: str, x: Tensor, dim: int) -> None:
    if x.dim() != 2 or x.size(1) != dim:
        raise ValueError(f'{name} must be [N, {dim}] (got shape '
                         f'{tuple(x.shape)})')


def _check_ids(name: str, ids: Optional[Tensor], batch: int, num: int,
               ndim: int) -> None:
    # ndim 2: [B, K] negatives (-1 = missing); 1: [B] or [B, J] exclusions.
    if ids is None:
        return
    dims = (2,) if ndim == 2 else (1, 2)
    if ids.dtype not in (torch.long, torch.int) or ids.dim() not in dims \
            or ids.size(0) != batch:
        want = '[B, K]' if ndim == 2 else '[B] or [B, J]'
        raise ValueError(f'{name} must be an integer tensor {want} with '
                         f'B = {batch} (got {ids.dtype} {tuple(ids.shape)})')
    low = -1 if ndim == 2 else 0  # -1 marks a missing negative
    if ids.numel() and (int(ids.max()) >= num or int(ids.min()) < low):
        raise ValueError(f'{name} holds ids outside [{low}, {num}), {num} '
                         'being the rows of its candidate table')


_NO_NEGATIVE = ('a query has no negative candidate left (all ids are -1 or '
                'its counterpart): pass more candidates')


class _DenseStandardisedLSE(torch.autograd.Function):
    r"""One direction of :func:`dual_amn_loss` against every row of the
    table, with its gradient written out: the ``[B, N]`` scores are built,
    standardised and turned into softmax weights in one buffer, and the
    backward pass is two matrix products. Autograd over the same formula
    keeps about ten ``[B, N]`` intermediates and took 1.6-2.1x as long on
    the whole-graph loss (``benchmarks/dual_amn_loss.py``); it stays the
    reference (the ``ids`` path of :func:`_standardised_lse` with every row,
    tested equal).

    With :math:`G_{be} = g_b \, p_{be} \, \gamma / \sigma_b` (the upstream
    gradient times the softmax over the candidates, the statistics held
    constant as in the forward pass) and
    :math:`d_{be} = \mathrm{pos}_b - \lVert q_b - t_e \rVert^2 + m`:
    :math:`\partial / \partial q_b = 2 (G T)_b - 2 q_b \sum_e G_{be}`,
    :math:`\partial / \partial t_e = 2 (G^\top Q)_e - 2 t_e \sum_b G_{be}`
    and :math:`\partial / \partial \mathrm{pos}_b = \sum_e G_{be}`.
    """

    @staticmethod
    def forward(ctx, query: Tensor, pos: Tensor, table: Tensor,
                exclude: Optional[Tensor], gamma: float, bias: float,
                margin: float) -> Tensor:
        b, n = query.size(0), table.size(0)
        t_sq = table.pow(2).sum(-1)
        row = pos - query.pow(2).sum(-1) + margin
        # d = pos - (|q|^2 + |t|^2 - 2 q.t) + m, built in place.
        d = torch.addmm(row.view(-1, 1), query, table.t(), alpha=2)
        d.sub_(t_sq)
        # Statistics in float32 at least (N does not fit bfloat16 exactly).
        acc = torch.promote_types(d.dtype, torch.float32)
        count = torch.full((b, ), float(n), dtype=acc, device=d.device)
        if exclude is not None:
            ex = exclude.view(b, -1).sort(1).values
            first = torch.ones_like(ex, dtype=torch.bool)
            first[:, 1:] = ex[:, 1:] != ex[:, :-1]  # each excluded row once
            keep = first.to(acc)
            count = count - keep.sum(1)
            if not bool((count > 0).all()):
                raise ValueError(_NO_NEGATIVE)
            gone = d.gather(1, ex).to(acc)
            mean = (d.sum(1, dtype=acc) - (gone * keep).sum(1)) / count
        else:
            mean = d.sum(1, dtype=acc) / count
        d.sub_(mean.view(-1, 1).to(d.dtype))
        sq = torch.linalg.vector_norm(d, dim=1, dtype=acc).pow(2)
        if exclude is not None:
            sq = sq - ((gone - mean.view(-1, 1)).pow(2) * keep).sum(1)
        std = (sq.clamp_min(0) / count).sqrt().clamp_min(
            torch.finfo(d.dtype).eps ** 0.5).to(d.dtype)
        scale = gamma / std
        d.mul_(scale.view(-1, 1)).add_(bias)
        if exclude is not None:
            d.scatter_(1, ex, float('-inf'))
        # log-sum-exp and softmax in the same buffer (torch.logsumexp
        # allocates its own [B, N] temporaries and took 3x as long here).
        # Terms over 60 below the row's top weigh < 1e-26 of the sum; the
        # floor keeps exp and the products after it out of subnormal floats,
        # which made them 5-10x slower on CPU.
        top = d.max(1).values
        prob = d.sub_(top.view(-1, 1)).clamp_min_(-60.0).exp_()
        total = prob.sum(1)
        prob.div_(total.view(-1, 1))
        if exclude is not None:
            prob.scatter_(1, ex, 0.0)  # the floor lifted them off zero
        lse = top + total.log()
        ctx.save_for_backward(query, table, prob, scale)
        return lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        query, table, prob, scale = ctx.saved_tensors
        coef = grad * scale
        weight = prob * coef.view(-1, 1)  # G
        grad_query = grad_table = None
        if ctx.needs_input_grad[0]:
            grad_query = 2 * (weight @ table - query * coef.view(-1, 1))
        if ctx.needs_input_grad[2]:
            grad_table = 2 * (weight.t() @ query
                              - table * weight.sum(0).view(-1, 1))
        grad_pos = coef if ctx.needs_input_grad[1] else None
        return grad_query, grad_pos, grad_table, None, None, None, None


def _standardised_lse(query: Tensor, pos: Tensor, table: Tensor,
                      ids: Optional[Tensor], exclude: Optional[Tensor],
                      gamma: float, bias: float, margin: float) -> Tensor:
    """One direction of :func:`dual_amn_loss`: ``[B]`` log-sum-exps."""
    if ids is None:  # every row of the table: [B, N]
        return _DenseStandardisedLSE.apply(query, pos, table, exclude, gamma,
                                           bias, margin)
    # The [B, K] chosen rows only, through autograd.
    q_sq = query.pow(2).sum(-1, keepdim=True)
    t_sq = table.pow(2).sum(-1)
    valid = ids >= 0
    ids = ids.clamp_min(0)
    dot = torch.einsum('bd,bkd->bk', query, table[ids])
    dist = q_sq + t_sq[ids] - 2 * dot
    if exclude is not None:
        valid &= (ids.unsqueeze(-1) != exclude.view(ids.size(0), 1, -1)
                  ).all(-1)
    if not valid.any(1).all():
        raise ValueError(_NO_NEGATIVE)
    d = pos.view(-1, 1) - dist + margin
    with torch.no_grad():  # statistics over the candidates, no gradient
        count = valid.sum(1, keepdim=True)
        mean = d.masked_fill(~valid, 0).sum(1, keepdim=True) / count
        std = ((d - mean).masked_fill(~valid, 0).pow(2).sum(
            1, keepdim=True) / count).sqrt()
        std = std.clamp_min(torch.finfo(d.dtype).eps ** 0.5)
    logits = gamma * (d - mean) / std + bias
    logits = logits.masked_fill(~valid, float('-inf'))
    return logits.logsumexp(1)


def dual_amn_loss(source: Tensor, target: Tensor, source_candidates: Tensor,
                  target_candidates: Tensor,
                  source_index: Optional[Tensor] = None,
                  target_index: Optional[Tensor] = None,
                  source_negatives: Optional[Tensor] = None,
                  target_negatives: Optional[Tensor] = None,
                  gamma: float = 30.0, bias: float = 10.0,
                  margin: float = 1.0) -> Tensor:
    r"""Dual-AMN's normalised log-sum-exp loss with hard negatives from the
    whole graph (Mao et al., 2021), in both directions.

    For a seed pair :math:`(l, r)` and each candidate :math:`e` of the
    other side,

    .. math::
        d_e = \lVert h_l - h_r \rVert^2 - \lVert h_l - h_e \rVert^2 + m,
        \qquad z_e = \frac{d_e - \mu}{\sigma}, \qquad
        \mathcal{L}_l = \log \sum_e \exp(\gamma z_e + \beta)

    with :math:`\mu`, :math:`\sigma` the mean and (population) standard
    deviation of :math:`d` over the query's candidates, without gradient
    (:math:`\sigma` is floored at :math:`\sqrt{\epsilon}` of the dtype, so
    equal distances give finite values). :math:`\mathcal{L}_r` is the same
    with :math:`h_r` as the query against source-side candidates. The loss
    is :math:`\frac{1}{B}\sum (\mathcal{L}_l + \mathcal{L}_r)` over the
    batch, as in Dual-AMN (which sums the two directions).

    Candidates are either every row of the tables (Dual-AMN uses every
    entity; memory :math:`O(B N)`) or, for graphs too large for that, the
    :math:`K` rows per query chosen by :obj:`source_negatives` /
    :obj:`target_negatives` (memory :math:`O(B K d)`), e.g. the hardest
    ones from :func:`hard_negative_ids` over cached, detached embeddings
    refreshed each epoch. Ids ``-1`` are skipped.

    The true counterpart is excluded from the candidates when its row is
    given (:obj:`target_index` for :math:`l`, :obj:`source_index` for
    :math:`r`). Without them it stays among them; when the table holds the
    same vector its :math:`d_e = m` is a constant term with no gradient
    except through the (detached) statistics, like Dual-AMN's zeroed
    entries.

    Args:
        source (Tensor): ``[B, d]`` embeddings :math:`h_l` of the pairs.
        target (Tensor): ``[B, d]`` embeddings :math:`h_r`.
        source_candidates (Tensor): ``[N_s, d]`` source-side entities,
            candidates of the target queries (usually all source-KG
            embeddings, with gradient).
        target_candidates (Tensor): ``[N_t, d]`` target-side entities,
            candidates of the source queries.
        source_index (Tensor, optional): ``[B]`` row of each pair's source
            in :obj:`source_candidates` (excluded for its target query), or
            ``[B, J]`` rows to exclude: with both KGs in one table (Dual-AMN's
            setting) pass the rows of the source and of the target, so the
            query itself is no negative either. (default: :obj:`None`)
        target_index (Tensor, optional): ``[B]`` or ``[B, J]``, the same for
            :obj:`target_candidates`. (default: :obj:`None`)
        source_negatives (Tensor, optional): ``[B, K]`` rows of
            :obj:`source_candidates` for each target query (default: all).
        target_negatives (Tensor, optional): ``[B, K]`` rows of
            :obj:`target_candidates` for each source query (default: all).
        gamma (float): Scale :math:`\gamma`. (default: :obj:`30.0`)
        bias (float): :math:`\beta`. (default: :obj:`10.0`)
        margin (float): :math:`m`. (default: :obj:`1.0`)

    Returns:
        The scalar loss.

    Shapes:
        - **input:** :math:`(B, d)`, :math:`(B, d)`, :math:`(N_s, d)`,
          :math:`(N_t, d)`, optional :math:`(B)`, :math:`(B)`,
          :math:`(B, K_s)`, :math:`(B, K_t)`
        - **output:** :math:`()`
    """
    if source.dim() != 2 or source.shape != target.shape or \
            source.size(0) == 0:
        raise ValueError(f'source and target must be the same non-empty '
                         f'[B, d] (got {tuple(source.shape)} and '
                         f'{tuple(target.shape)})')
    b, dim = source.shape
    _check_rows('source_candidates', source_candidates, dim)
    _check_rows('target_candidates', target_candidates, dim)
    n_s, n_t = source_candidates.size(0), target_candidates.size(0)
    _check_ids('source_index', source_index, b, n_s, 1)
    _check_ids('target_index', target_index, b, n_t, 1)
    _check_ids('source_negatives', source_negatives, b, n_s, 2)
    _check_ids('target_negatives', target_negatives, b, n_t, 2)
    pos = (source - target).pow(2).sum(-1)
    l_loss = _standardised_lse(source, pos, target_candidates,
                               target_negatives, target_index, gamma, bias,
                               margin)
    r_loss = _standardised_lse(target, pos, source_candidates,
                               source_negatives, source_index, gamma, bias,
                               margin)
    return (l_loss + r_loss).mean()


def hard_negative_ids(queries: Tensor, candidates, k: int,
                      exclude: Optional[Tensor] = None,
                      backend: str = 'auto') -> Tensor:
    r"""The :obj:`k` nearest candidates (squared ℓ2, the distance of
    :func:`dual_amn_loss`) of every query: the hardest negatives, as
    ``[B, k]`` ids for ``source_negatives`` / ``target_negatives``.

    Run it on detached embeddings cached once per epoch: build an exact
    :class:`~ricea_pyg.search.AlignmentIndex` (``metric='l2'``) over the
    candidates once and pass it instead of the tensor for every batch.

    Args:
        queries (Tensor): ``[B, d]`` (detached here).
        candidates (Tensor or AlignmentIndex): ``[N, d]`` embeddings, or an
            ``'l2'`` index over them.
        k (int): Negatives per query.
        exclude (Tensor, optional): ``[B]`` id of each query's true
            counterpart, never returned (one more neighbour is searched).
            (default: :obj:`None`)
        backend (str): :class:`~ricea_pyg.search.AlignmentIndex` backend
            when :obj:`candidates` is a tensor. (default: ``'auto'``)

    Returns:
        ``[B, k]`` ids, nearest first; ``-1`` where fewer exist.
    """
    from ricea_pyg.search.index import AlignmentIndex

    if k < 1:
        raise ValueError(f'k must be >= 1 (got {k})')
    if isinstance(candidates, AlignmentIndex):
        if candidates.metric != 'l2':
            raise ValueError("the candidate index must use metric='l2' (the "
                             "loss's distance); build AlignmentIndex('flat', "
                             "metric='l2')")
        index = candidates
    else:
        index = AlignmentIndex('flat', metric='l2', backend=backend).add(
            candidates.detach())
    extra = int(exclude is not None)
    _, ids = index.search(queries.detach(), k + extra)
    if exclude is None:
        return ids
    if exclude.shape != (queries.size(0),):
        raise ValueError(f'exclude must be [B] with B = {queries.size(0)} '
                         f'(got {tuple(exclude.shape)})')
    drop = ids == exclude.to(ids.device).view(-1, 1)
    drop[:, -1] |= ~drop.any(1)  # counterpart not found: drop the last
    return ids[~drop].view(-1, k)
