"""The base class every fusion shares: M modality embeddings -> one."""
from __future__ import annotations

import inspect
from typing import (
    Any,
    ClassVar,
    List,
    Literal,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
    overload,
)

import torch
from torch import Tensor

from ricea_pyg.nn.fusion.functional import pair_mean_query_key

__all__ = ['ModalityFusion', 'FusionOutput', 'FusionAuxiliary',
           'ModalityInput', 'SCORINGS', 'prepare_modalities',
           'options_repr']

ModalityInput = Union[Tensor, Sequence[Tensor]]


class FusionAuxiliary(NamedTuple):
    """The typed auxiliary terms of a fusion, read by its losses
    (:func:`~ricea_pyg.loss.auxiliary_loss`,
    :class:`~ricea_pyg.loss.RICEALoss`); a fusion leaves :obj:`None` what it
    does not compute.

    Attributes:
        z (Tensor, optional): ``[N, M, d]`` cross-modal transformer outputs.
        attention (Tensor, optional): ``[N, H, M, M]`` last-layer attention.
        confidence (Tensor, optional): ``[N, M]`` mono-confidence :math:`c`,
            trained by the TCP loss.
        holo (Tensor, optional): ``[N, M]`` relative (holo) confidence.
        belief (Tensor, optional): ``[N, M]`` co-belief.
        du (Tensor, optional): ``[N, M]`` distribution uniformity.
        rc (Tensor, optional): ``[N, M]`` relative calibration.
    """
    z: Optional[Tensor] = None
    attention: Optional[Tensor] = None
    confidence: Optional[Tensor] = None
    holo: Optional[Tensor] = None
    belief: Optional[Tensor] = None
    du: Optional[Tensor] = None
    rc: Optional[Tensor] = None

    def terms(self) -> dict:
        """The terms that are not :obj:`None`, by name."""
        return {k: v for k, v in self._asdict().items() if v is not None}

    def select(self, index) -> FusionAuxiliary:
        """The same terms for the rows :obj:`index`."""
        return FusionAuxiliary(*(None if t is None else t[index]
                                 for t in self))


class FusionOutput(NamedTuple):
    r"""Everything a fusion computes; :meth:`ModalityFusion.forward` returns a
    view of it.

    Attributes:
        fused (Tensor): ``[N, F_out]`` the fused embedding.
        weights (Tensor): ``[N, M]`` weight of each modality, 0 where
            missing.
        uncertainty (Tensor, optional): ``[N, M]`` uncertainty of each
            weight, for fusions that estimate one (1 where missing).
        aux (FusionAuxiliary, optional): The terms the fusion's losses read
            (a dict of them, as the ``extras`` of earlier releases, is
            converted by :meth:`ModalityFusion.forward_full`).
        mask (Tensor, optional): ``[N, M]`` the presence mask used.
        query, key (Tensor, optional): ``[N, D]`` search embeddings with
            ``scoring='pair_mean'`` (see
            :func:`~ricea_pyg.nn.fusion.pair_mean_query_key`): two entities
            score :math:`\langle q(a), k(b) \rangle`, never re-normalised.
            :obj:`None` means the ℓ2-normalised :obj:`fused` is the search
            embedding.
    """
    fused: Tensor
    weights: Tensor
    uncertainty: Optional[Tensor] = None
    aux: Optional[FusionAuxiliary] = None
    mask: Optional[Tensor] = None
    query: Optional[Tensor] = None
    key: Optional[Tensor] = None

    @property
    def extras(self) -> dict:
        """The non-empty terms of :attr:`aux` by name (read-only view)."""
        return {} if self.aux is None else self.aux.terms()

    def select(self, index) -> FusionOutput:
        """The same output for the rows :obj:`index` (e.g. the training
        nodes, before :func:`~ricea_pyg.loss.auxiliary_loss`)."""
        return FusionOutput(*(None if t is None else t.select(index)
                              if isinstance(t, FusionAuxiliary) else t[index]
                              for t in self))


#: The scores a fusion's output can be searched with.
SCORINGS = ('fused', 'pair_mean')


def prepare_modalities(xs: ModalityInput, mask: Optional[Tensor], M: int,
                       ragged: bool = False, name: str = 'fusion'
                       ) -> Tuple[Union[Tensor, List[Tensor]], Tensor]:
    """Validates the input of a fusion, replaces missing modalities by
    exact zeros (whatever they held, NaN and inf included; they get a zero
    gradient) and returns them with the boolean mask.

    Args:
        xs (Tensor or list of Tensor): ``[N, M, F]``, or a list of ``M``
            tensors ``[N, F_m]``.
        mask (Tensor, optional): ``[N, M]``, True where a modality is
            present; :obj:`None` means all present.
        M (int): The expected number of modalities.
        ragged (bool): If :obj:`True`, a list of different sizes ``F_m`` is
            kept as a list; otherwise it must stack. (default: :obj:`False`)
        name (str): The caller's name in error messages.
            (default: ``'fusion'``)
    """
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
    # Select, never multiply: NaN * 0 is NaN. torch.where also gives the
    # missing rows an exact zero gradient.
    if isinstance(xs, Tensor):
        xs = torch.where(mask.unsqueeze(-1), xs, xs.new_zeros(()))
    else:
        xs = [torch.where(mask[:, m:m + 1], x, x.new_zeros(()))
              for m, x in enumerate(xs)]
    return xs, mask


def _check_choice(name: str, value: Any, choices: Sequence[Any]):
    if value not in choices:
        raise ValueError(f'{name} must be one of {tuple(choices)} (got '
                         f'{value!r})')


_MISSING = object()


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (RuntimeError, TypeError, ValueError):
        return a is b


def options_repr(module: torch.nn.Module, positional: Sequence[str]) -> str:
    """``Name(p1, p2, option=value, ...)``: the :obj:`positional` arguments
    of :obj:`module`'s constructor by value (left out when :obj:`None`),
    then every other constructor argument whose value differs from its
    default. Each argument is read from the attribute of the same name;
    arguments that are not stored are left out.

    Args:
        module (torch.nn.Module): The module to describe.
        positional (list of str): The arguments shown without their name.
    """
    params = inspect.signature(type(module).__init__).parameters
    args = []
    for name, p in params.items():
        if name == 'self' or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        value = getattr(module, name, _MISSING)
        if value is _MISSING:
            continue
        if name in positional:
            if value is not None:
                args.append(str(value))
        elif p.default is p.empty or not _equal(value, p.default):
            args.append(f'{name}={value!r}')
    return f'{module.__class__.__name__}({", ".join(args)})'


class ModalityFusion(torch.nn.Module):
    r"""Base class for fusing :math:`M` modality embeddings of each entity
    into one, with per-entity modality weights.

    Every fusion takes the same input and returns the same output:

    * ``xs``: a list of :math:`M` tensors ``[N, F_m]`` or a stacked
      ``[N, M, F]`` tensor;
    * ``mask`` (optional): ``[N, M]`` bool, True = present (default: all
      present). Missing modalities get weight exactly 0 and receive no
      gradient;
    * returns the fused tensor, and with ``return_weights=True`` also
      ``(weights [N, M], uncertainty [N, M] or None)``, as
      :class:`~torch_geometric.nn.conv.GATConv` does for
      ``return_attention_weights``.

    Subclasses implement :meth:`fuse` on the prepared ``[N, M, F]`` (or, with
    :attr:`ragged` set, the list) and mask; :meth:`forward_full` returns the
    whole :class:`FusionOutput`, with the search embeddings that
    :obj:`scoring` asks for. A subclass is found by
    :func:`~ricea_pyg.nn.fusion.fusion_resolver` under its class name, that
    name without ``'Fusion'``, and its :attr:`aliases`.

    Args:
        num_modalities (int): The number of modalities :math:`M`.
        channels (int, optional): The size :math:`F` that all modalities
            share, where the fusion needs one. (default: :obj:`None`)
        scoring (str): How two fused entities are compared in search and in
            the alignment loss: ``'fused'``, the cosine of the fused vectors;
            or ``'pair_mean'``, each modality's cosine weighted by the mean
            of the two entities' weights (:attr:`FusionOutput.query` and
            :attr:`~FusionOutput.key`, see
            :func:`~ricea_pyg.nn.fusion.pair_mean_query_key`).
            (default: ``'fused'``)

    Shapes:
        - **input:** list of ``M`` tensors ``[N, F_m]`` or ``[N, M, F]``;
          mask ``[N, M]``
        - **output:** ``[N, F_out]`` (see :meth:`out_channels`); with
          ``return_weights=True`` also ``(weights [N, M], uncertainty
          [N, M] or None)``
    """
    #: Whether the fusion accepts modalities of different sizes.
    ragged: ClassVar[bool] = False
    #: Short names under which :func:`~ricea_pyg.nn.fusion.fusion_resolver`
    #: finds this class (its own, not inherited).
    aliases: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, num_modalities: int, channels: Optional[int] = None,
                 scoring: str = 'fused'):
        super().__init__()
        if num_modalities < 1:
            raise ValueError('num_modalities must be at least 1')
        _check_choice('scoring', scoring, SCORINGS)
        self.num_modalities = num_modalities
        self.channels = channels
        self.scoring = scoring

    def reset_parameters(self):
        r"""Resets all learnable parameters of the module."""

    def prepare(self, xs: ModalityInput, mask: Optional[Tensor]
                ) -> Tuple[Union[Tensor, List[Tensor]], Tensor]:
        """:func:`prepare_modalities` with this fusion's settings."""
        return prepare_modalities(xs, mask, self.num_modalities, self.ragged,
                                  self.__class__.__name__)

    def fuse(self, xs: Union[Tensor, List[Tensor]], mask: Tensor
             ) -> FusionOutput:
        """Fuses the prepared input; implemented by every subclass."""
        raise NotImplementedError

    def forward_full(self, xs: ModalityInput,
                     mask: Optional[Tensor] = None) -> FusionOutput:
        """Runs the fusion and returns everything it computed."""
        xs, mask = self.prepare(xs, mask)
        out = self.fuse(xs, mask)._replace(mask=mask)
        if isinstance(out.aux, dict):  # a fusion written for ``extras``
            unknown = sorted(set(out.aux) - set(FusionAuxiliary._fields))
            if unknown:
                raise ValueError(f'{type(self).__name__}.fuse returned '
                                 f'auxiliary terms {unknown}; '
                                 'FusionAuxiliary has '
                                 f'{list(FusionAuxiliary._fields)}')
            out = out._replace(aux=FusionAuxiliary(**out.aux))
        if self.scoring == 'pair_mean':
            query, key = pair_mean_query_key(self.fused_inputs(xs, out),
                                             out.weights, mask)
            out = out._replace(query=query, key=key)
        return out

    def fused_inputs(self, xs: Union[Tensor, List[Tensor]],
                     out: FusionOutput) -> Union[Tensor, List[Tensor]]:
        """The per-modality vectors that :meth:`fuse` weighs (the prepared
        input unless a subclass fuses something else)."""
        return xs

    @overload
    def forward(self, xs: ModalityInput, mask: Optional[Tensor] = None,
                return_weights: Literal[False] = False) -> Tensor:
        ...

    @overload
    def forward(self, xs: ModalityInput, mask: Optional[Tensor],
                return_weights: Literal[True]
                ) -> Tuple[Tensor, Tuple[Tensor, Optional[Tensor]]]:
        ...

    @overload
    def forward(self, xs: ModalityInput, mask: Optional[Tensor] = None, *,
                return_weights: Literal[True]
                ) -> Tuple[Tensor, Tuple[Tensor, Optional[Tensor]]]:
        ...

    @overload
    def forward(self, xs: ModalityInput, mask: Optional[Tensor] = None,
                return_weights: bool = False
                ) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor,
                                                       Optional[Tensor]]]]:
        ...

    def forward(self, xs: ModalityInput, mask: Optional[Tensor] = None,
                return_weights: bool = False
                ) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor,
                                                       Optional[Tensor]]]]:
        r"""Runs the forward pass of the module.

        Args:
            xs (Tensor or list of Tensor): ``[N, M, F]``, or a list of ``M``
                tensors ``[N, F_m]``.
            mask (Tensor, optional): ``[N, M]`` bool, True where a modality
                is present. (default: :obj:`None`, all present)
            return_weights (bool): If :obj:`True`, also returns the tuple
                ``(weights [N, M], uncertainty [N, M] or None)``.
                (default: :obj:`False`)
        """
        out = self.forward_full(xs, mask)
        if return_weights:
            # A reading, not a training signal (forward_full keeps its
            # graph for auxiliary_loss).
            u = None if out.uncertainty is None else out.uncertainty.detach()
            return out.fused, (out.weights, u)
        return out.fused

    def out_channels(self, in_channels: Union[int, Sequence[int]]) -> int:
        """Size of the fused output for the given modality sizes.

        Args:
            in_channels (int or list of int): The size shared by all
                modalities, or one size per modality.
        """
        if isinstance(in_channels, int):
            in_channels = [in_channels] * self.num_modalities
        if getattr(self, 'mode', 'concat') == 'sum':
            return in_channels[0]
        return sum(in_channels)

    def __repr__(self) -> str:
        return options_repr(self, ('num_modalities', 'channels'))
