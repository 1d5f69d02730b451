r"""The equations of RICEA, each in exactly one place.

RICEA is the method of `"Probing Relative Interaction and Dynamic Calibration
in Multi-modal Entity Alignment"
<https://aclanthology.org/2025.acl-long.1384/>`_ (ACL 2025); its confidence
and calibration scheme follows `"Predictive Dynamic Fusion"
<https://arxiv.org/abs/2406.04802>`_ (PDF, ICML 2024). The modules of
:mod:`ricea_pyg.nn.fusion` only compose these functions.

Shapes: ``N`` entities, ``M`` modalities, ``H`` heads, ``d`` channels; a
boolean ``mask [N, M]`` is True where a modality is present, ``K`` = number of
present modalities of an entity.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    'masked_softmax', 'weighted_fusion', 'mono_confidence',
    'holo_confidence', 'co_belief', 'mean_attention', 'distribution_uniformity',
    'relative_calibration', 'pair_mean_query_key',
]

#: Names that moved out of this package, and their new module. They stay
#: importable from here (with a :class:`DeprecationWarning`) for one release.
_MOVED = {'tcp_target': 'ricea_pyg.loss', 'tcp_loss': 'ricea_pyg.loss'}


def _moved_attribute(module: str, name: str) -> Any:
    """The object :obj:`name` that moved from :obj:`module` to
    ``_MOVED[name]``, with a :class:`DeprecationWarning` naming the new place;
    :class:`AttributeError` for any other name (the contract of a module's
    ``__getattr__``)."""
    if name not in _MOVED:
        raise AttributeError(f'module {module!r} has no attribute {name!r}')
    warnings.warn(f'{module}.{name} moved to {_MOVED[name]}.{name}; import '
                  f'it from there (the old name goes in the next release)',
                  DeprecationWarning, stacklevel=3)
    # Deferred on purpose: `ricea_pyg.loss` must never be imported by
    # `ricea_pyg.nn` at import time (the dependency goes loss -> nn).
    from ricea_pyg import loss
    return getattr(loss, name)


def __getattr__(name: str) -> Any:
    return _moved_attribute(__name__, name)


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    r"""Softmax over the entries where :obj:`mask` is True.

    Masked entries are **exactly 0**, a fully masked slice is all zeros, and
    neither produces NaN in the forward or backward pass.

    Args:
        scores (Tensor): The scores, of any shape.
        mask (Tensor): Bool, broadcastable to :obj:`scores`; True where an
            entry takes part.
        dim (int): The dimension to normalise over. (default: :obj:`-1`)
    """
    info = torch.finfo(scores.dtype)
    # Masked entries are replaced (not multiplied) before the softmax, and
    # infinite scores are clamped to the dtype's range, so neither NaN nor
    # inf reaches the output or the gradient.
    safe = torch.where(mask, scores.clamp(info.min, info.max),
                       scores.new_full((), info.min))
    out = safe.softmax(dim=dim)
    return torch.where(mask, out, out.new_zeros(()))


def _tiny(x: Tensor) -> float:
    """The smallest normal number of :obj:`x`'s dtype."""
    return torch.finfo(x.dtype).tiny


def _margin(eps: float, x: Tensor) -> float:
    """:obj:`eps`, raised to the machine epsilon of :obj:`x`'s dtype where
    it is smaller (``1 - 1e-6`` is 1 in bfloat16)."""
    return max(eps, torch.finfo(x.dtype).eps)


def safe_normalize(x: Tensor, dim: int = -1) -> Tensor:
    r""":math:`x / \|x\|_2` that neither overflows (a row with entries
    beyond ``finfo.max ** 0.25``, ~4e9 in float32 and bfloat16, is first
    divided by its largest magnitude; other rows go through unchanged) nor
    divides by zero (a zero row stays zero, with a zero gradient: dividing
    it by an epsilon, as :func:`torch.nn.functional.normalize` does, gives
    it a gradient of 1 / epsilon, which overflowed into NaN weights in
    training)."""
    big = torch.finfo(x.dtype).max ** 0.25
    scale = x.detach().abs().amax(dim=dim, keepdim=True)
    x = x / torch.where(scale > big, scale, scale.new_ones(()))
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
    nonzero = norm > 0
    return torch.where(nonzero, x / torch.where(nonzero, norm,
                                                norm.new_ones(())),
                       x.new_zeros(()))


def weighted_fusion(xs: Union[Tensor, Sequence[Tensor]], weights: Tensor,
                    mode: str = 'concat') -> Tensor:
    r"""Fuses ℓ2-normalised modality embeddings with per-entity weights.

    .. math::
        \mathrm{concat}: [w_1 \hat x_1; \dots; w_M \hat x_M] \in
        \mathbb{R}^{\sum_m F_m}, \qquad
        \mathrm{sum}: \sum_m w_m \hat x_m \in \mathbb{R}^{d}

    Args:
        xs (Tensor or list of Tensor): ``[N, M, F]``, or a list of ``M``
            tensors ``[N, F_m]`` (``'sum'`` needs equal ``F_m``).
        weights (Tensor): ``[N, M]`` weight of each modality of each entity.
        mode (str): ``'concat'`` to concatenate the weighted modalities or
            ``'sum'`` to add them. (default: ``'concat'``)
    """
    if isinstance(xs, Tensor):
        x = safe_normalize(xs, dim=-1) * weights.unsqueeze(-1)
        if mode == 'concat':
            return x.flatten(1)
        if mode == 'sum':
            return x.sum(dim=1)
    else:
        parts = [safe_normalize(x, dim=-1) * weights[:, m:m + 1]
                 for m, x in enumerate(xs)]
        if mode == 'concat':
            return torch.cat(parts, dim=-1)
        if mode == 'sum':
            return torch.stack(parts, dim=1).sum(dim=1)
    raise ValueError(f"mode must be 'concat' or 'sum' (got {mode!r})")


def mono_confidence(logits: Tensor, mask: Tensor, eps: float = 1e-6
                    ) -> Tensor:
    r"""Mono-confidence :math:`c_m = \mathrm{clamp}(\sigma(g(x_m)), \epsilon,
    1-\epsilon)`, and :math:`c_m = 0` for a missing modality.

    Args:
        logits (Tensor): ``[N, M]`` output :math:`g(x_m)` of the confidence
            network.
        mask (Tensor): ``[N, M]`` bool, True where a modality is present.
        eps (float): The clamp margin :math:`\epsilon`, raised to the
            machine epsilon of the dtype where smaller. (default:
            :obj:`1e-6`)
    """
    eps = _margin(eps, logits)
    mask = mask.bool()
    logits = torch.where(mask, logits, logits.new_zeros(()))
    c = torch.sigmoid(logits).clamp(eps, 1 - eps)
    return torch.where(mask, c, c.new_zeros(()))


def holo_confidence(c: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    r"""Relative (holo) confidence:

    .. math::
        h_m = \frac{\sum_{j \in P, j \ne m} \log c_j}
                   {\sum_{j \in P} \log c_j - \epsilon}

    so :math:`h \in [0, 1]` and :math:`\sum_m h_m = K - 1`: a modality is
    strong when it holds a small share of the entity's total
    log-unconfidence. :math:`h = 1` when :math:`K = 1`. When
    :math:`|\sum \log c| < \epsilon` (all confidences ≈ 1) the formula is
    0/0 and its limit for equal shares, :math:`(K-1)/K`, is used (a plain
    :math:`1/K` agrees for :math:`K = 2` only, and would break
    :math:`\sum h = K-1` otherwise). Missing modalities get 0.

    Args:
        c (Tensor): ``[N, M]`` mono-confidences (:func:`mono_confidence`).
        mask (Tensor): ``[N, M]`` bool, True where a modality is present.
        eps (float): :math:`\epsilon`, which keeps the ratio finite.
            (default: :obj:`1e-6`)
    """
    eps = _margin(eps, c)
    k = mask.sum(dim=-1, keepdim=True).to(c.dtype)
    c = torch.where(mask, c, c.new_ones(()))
    log_c = torch.where(mask, c.clamp_min(eps).log(), torch.zeros_like(c))
    total = log_c.sum(dim=-1, keepdim=True)
    h = (total - log_c) / (total - eps)
    tiny = total.abs() < eps
    h = torch.where(tiny, (k - 1) / k.clamp_min(1), h)
    h = torch.where(k == 1, torch.ones_like(h), h)
    return torch.where(mask, h, h.new_zeros(()))


def co_belief(c: Tensor, h: Tensor, detach: bool = True) -> Tensor:
    r"""Co-belief :math:`b = \mathrm{sg}(c) + \mathrm{sg}(h)`.

    Args:
        c (Tensor): ``[N, M]`` mono-confidences.
        h (Tensor): ``[N, M]`` holo-confidences.
        detach (bool): If :obj:`True`, :math:`\mathrm{sg}` is the
            stop-gradient; otherwise the identity. (default: :obj:`True`)
    """
    if detach:
        return c.detach() + h.detach()
    return c + h


def mean_attention(attention: Tensor, mask: Tensor) -> Tensor:
    r""":math:`\bar A`: the head-mean of the attention restricted to present
    rows and columns, each row renormalised to sum to 1.

    Args:
        attention (Tensor): ``[N, H, M, M]``, or head-averaged
            ``[N, M, M]``.
        mask (Tensor): ``[N, M]`` bool, True where a modality is present.
    """
    a = attention.mean(dim=1) if attention.dim() == 4 else attention
    pair = mask.unsqueeze(-1) & mask.unsqueeze(-2)
    a = torch.where(pair, a, a.new_zeros(()))
    return a / a.sum(dim=-1, keepdim=True).clamp_min(_tiny(a))


def distribution_uniformity(attention: Tensor, mask: Tensor,
                            source: str = 'row', detach: bool = True
                            ) -> Tuple[Tensor, Tensor]:
    r"""Distribution uniformity and the uncertainty read from it.

    .. math::
        DU_m = \frac{1}{K} \sum_{j \in P} \left|\bar A_{m,j} -
        \frac{1}{K}\right|,\quad
        u_m = 1 - \frac{DU_m}{DU_{\max}},\quad
        DU_{\max} = \frac{2(K-1)}{K^2}

    A peaked attention distribution is a certain one (:math:`u \to 0`), a
    uniform one an uncertain one (:math:`u \to 1`).

    Args:
        attention (Tensor): ``[N, H, M, M]``, or head-averaged
            ``[N, M, M]``.
        mask (Tensor): ``[N, M]`` bool, True where a modality is present.
        source (str): Which distribution :math:`DU_m` measures: ``'row'``
            (the attention row of modality :math:`m`), ``'col'`` (its column,
            renormalised over present rows: the attention :math:`m`
            receives, MEAformer's scores), or ``'entity'`` (one DU per
            entity, the mean of its row DUs). (default: ``'row'``)
        detach (bool): If :obj:`True`, no gradient flows back into the
            attention; :obj:`False` lets a loss on :math:`u` (e.g.
            :func:`~ricea_pyg.loss.uncertainty_loss`) train it.
            (default: :obj:`True`)

    Returns:
        ``(du [N, M], u [N, M])``; :math:`u = 1` for a missing modality and
        :math:`u = 0` when :math:`K = 1`; :math:`du = 0` where missing.
    """
    a = mean_attention(attention.detach() if detach else attention, mask)
    if source == 'col':
        a = a.transpose(-1, -2)
        a = a / a.sum(dim=-1, keepdim=True).clamp_min(_tiny(a))
    elif source not in ('row', 'entity'):
        raise ValueError(f"source must be 'row', 'col' or 'entity' (got "
                         f'{source!r})')
    zero = a.new_zeros(())
    k = mask.sum(dim=-1, keepdim=True).to(a.dtype)
    inv_k = 1.0 / k.clamp_min(1)
    dev = torch.where(mask.unsqueeze(-2), (a - inv_k.unsqueeze(-1)).abs(),
                      zero)
    du = torch.where(mask, dev.sum(dim=-1) * inv_k, zero)
    if source == 'entity':
        du = torch.where(mask, du.sum(dim=-1, keepdim=True) * inv_k, zero)
    du_max = 2 * (k - 1) * inv_k * inv_k
    certainty = torch.where(k > 1, du / du_max.clamp_min(_tiny(du)),
                            torch.ones_like(du)).clamp(0, 1)
    u = torch.where(mask, 1 - certainty, torch.ones_like(certainty))
    return du, u


def relative_calibration(du: Tensor, mask: Tensor, mode: str = 'geo',
                         eps: float = 1e-8) -> Tensor:
    r"""Relative calibration, detached.

    * ``'geo'``: :math:`RC_m = \min(1, DU_m / G_{-m})`, with
      :math:`G_{-m}` the geometric mean of the other present DUs;
    * ``'pdf_remnant'``: :math:`RC_m = \min(1, DU_m / \sum_{j \in P,
      j \ne m} DU_j)`, the ratio to the remnant's total.

    Both equal the two-modality rule :math:`\min(1, DU_1/DU_2)` of
    `"Predictive Dynamic Fusion" <https://arxiv.org/abs/2406.04802>`_
    (ICML 2024) for :math:`K = 2`. :math:`RC = 1` when :math:`K = 1`, 0
    where missing. When every present DU is equal (e.g. ``'entity'`` DUs),
    ``'geo'`` gives :math:`RC = 1` and ``'pdf_remnant'``
    :math:`RC = 1/(K-1)`, whatever the attention.

    Args:
        du (Tensor): ``[N, M]`` distribution uniformities
            (:func:`distribution_uniformity`).
        mask (Tensor): ``[N, M]`` bool, True where a modality is present.
        mode (str): ``'geo'`` or ``'pdf_remnant'``, as above.
            (default: ``'geo'``)
        eps (float): Added to numerator and reference, so that all-zero DUs
            give :math:`RC = 1`. (default: :obj:`1e-8`)
    """
    du = du.detach()  # RC is a constant to every loss
    eps = max(eps, _tiny(du))
    zero = du.new_zeros(())
    du = torch.where(mask, du, zero)
    m = mask.to(du.dtype)
    k = m.sum(dim=-1, keepdim=True)
    others = (k - m).clamp_min(1)
    if mode == 'geo':
        log_du = torch.where(mask, (du + eps).log(), torch.zeros_like(du))
        ref = ((log_du.sum(dim=-1, keepdim=True) - log_du) / others).exp()
    elif mode == 'pdf_remnant':
        ref = du.sum(dim=-1, keepdim=True) - du
    else:
        raise ValueError(f"mode must be 'geo' or 'pdf_remnant' (got "
                         f'{mode!r})')
    rc = torch.minimum(torch.ones_like(du), (du + eps) / (ref + eps))
    rc = torch.where(k > 1, rc, torch.ones_like(rc))
    return torch.where(mask, rc, zero)


def pair_mean_query_key(xs: Union[Tensor, Sequence[Tensor]], weights: Tensor,
                        mask: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Query and key embeddings whose inner product weighs each modality by
    the *mean* weight of the two entities compared:

    .. math::
        \mathbf{q} = \tfrac{1}{\sqrt2}[w \odot \hat{\mathbf{x}};
        \hat{\mathbf{x}}], \quad
        \mathbf{k} = \tfrac{1}{\sqrt2}[\hat{\mathbf{x}}; w \odot
        \hat{\mathbf{x}}], \quad
        \langle \mathbf{q}(a), \mathbf{k}(b) \rangle = \sum_m
        \frac{w_m(a) + w_m(b)}{2} \cos_m(a, b)

    The cosine of two ℓ2-normalised weighted concatenations is instead
    :math:`\sum_m w_m(a) w_m(b) \cos_m / (\|w(a)\| \|w(b)\|)`: it
    rewards candidates whose weight *profile* resembles the query's, which
    says nothing about identity. The score above has no such term, is
    symmetric, and equals the cosine of the unweighted concatenation when
    all weights are :math:`1/M`.

    Args:
        xs (Tensor or list of Tensor): ``[N, M, F]`` or ``M`` tensors
            ``[N, F_m]``.
        weights (Tensor): ``[N, M]``, 0 where missing.
        mask (Tensor): ``[N, M]`` bool, True where a modality is present;
            a missing one contributes nothing, whatever its row holds.

    Returns:
        ``(query [N, 2 sum_m F_m], key [N, 2 sum_m F_m])``.
    """
    unit = weighted_fusion(xs, mask.to(weights.dtype), 'concat')
    weighted = weighted_fusion(xs, torch.where(mask, weights,
                                               weights.new_zeros(())),
                               'concat')
    scale = 2 ** -0.5
    return (torch.cat([weighted, unit], dim=-1) * scale,
            torch.cat([unit, weighted], dim=-1) * scale)
