"""Pick a fusion by name, as PyG's ``aggregation_resolver`` picks an
aggregation: the classes are found as subclasses of
:class:`~ricea_pyg.nn.fusion.ModalityFusion`, not kept in a list."""
from __future__ import annotations

from typing import Any, Dict, List, Type, Union

from torch_geometric.resolver import normalize_string

# Imported so that their subclasses of ModalityFusion exist.
from ricea_pyg.nn.fusion import baselines, ricea  # noqa: F401
from ricea_pyg.nn.fusion.base import ModalityFusion

__all__ = ['DEFAULT_FUSION', 'FUSIONS', 'fusion_classes', 'fusion_resolver']

#: The fusion :func:`fusion_resolver` builds when asked for :obj:`None`.
DEFAULT_FUSION = 'adc'


def fusion_classes() -> List[Type[ModalityFusion]]:
    """Every concrete subclass of :class:`ModalityFusion` defined so far
    (those that implement :meth:`~ModalityFusion.fuse`), the package's own
    and the user's, in definition order."""
    found, todo = [], list(ModalityFusion.__subclasses__())
    while todo:
        cls = todo.pop(0)
        if cls not in found:
            found.append(cls)
            todo.extend(cls.__subclasses__())
    return [cls for cls in found if cls.fuse is not ModalityFusion.fuse]


def _names(cls: Type[ModalityFusion]) -> List[str]:
    """The normalised names of :obj:`cls`: its own aliases, its class name
    and its class name without ``'fusion'``."""
    full = normalize_string(cls.__name__)
    names = [normalize_string(a) for a in vars(cls).get('aliases', ())]
    return names + [full, full.replace('fusion', '')]


def fusion_classes_named(name: str) -> List[Type[ModalityFusion]]:
    """The fusion classes that answer to :obj:`name` (an alias or a class
    name, in any case; more than one means the name is ambiguous)."""
    name = normalize_string(name)
    return [cls for cls in fusion_classes() if name in _names(cls)]


def fusion_name(cls: Type[ModalityFusion]) -> str:
    """The short name of a fusion class: its first alias."""
    return _names(cls)[0]


#: The package's own fusions by their first alias (``'concat'``,
#: ``'global'``, ``'meaformer'``, ``'adc'``), found as subclasses.
FUSIONS: Dict[str, Type[ModalityFusion]] = {
    fusion_name(cls): cls for cls in fusion_classes()
    if cls.__module__.startswith('ricea_pyg.')
}


def fusion_resolver(query: Union[None, str, ModalityFusion,
                                 Type[ModalityFusion]] = None,
                    *args: Any, **kwargs: Any) -> ModalityFusion:
    r"""Returns a fusion built from a name, a class, or an instance.

    A name is matched after normalisation (case, ``'-'``, ``'_'`` and spaces
    ignored) against every :class:`ModalityFusion` subclass defined so far,
    your own included: its :attr:`~ModalityFusion.aliases` (``'adc'``,
    ``'ricea'``, ``'meaformer'``, ``'global'``, ``'eva'``, ``'concat'``),
    its class name (``'ADCFusion'``) and its class name without
    ``'Fusion'``.

    Args:
        query (str or type or ModalityFusion, optional): The fusion's name or
            class, which are built with :obj:`*args` and :obj:`**kwargs`, or
            an instance, returned as is. (default: :obj:`None`, meaning
            :obj:`DEFAULT_FUSION`, ``'adc'``)
        *args (optional): Positional arguments of the fusion's constructor.
        **kwargs (optional): Keyword arguments of the fusion's constructor.

    Example:
        >>> fusion_resolver('adc', num_modalities=4, channels=32)
        ADCFusion(4, 32)
        >>> fusion_resolver('global', num_modalities=4, mode='sum')
        GlobalWeightFusion(4, mode='sum')
    """
    if query is None:
        query = DEFAULT_FUSION
    if isinstance(query, ModalityFusion):
        return query
    if isinstance(query, type) and issubclass(query, ModalityFusion):
        return query(*args, **kwargs)
    found = (fusion_classes_named(normalize_string(query))
             if isinstance(query, str) else [])
    if not found:
        choices = sorted({fusion_name(c) for c in fusion_classes()})
        raise ValueError(f'could not resolve fusion {query!r}; choose a '
                         f'name from {choices}, a ModalityFusion subclass '
                         f'or an instance')
    if len(found) > 1:
        names = [f'{c.__module__}.{c.__qualname__}' for c in found]
        raise ValueError(f'the fusion name {query!r} is ambiguous: it '
                         f'matches {names}; pass the class itself, or '
                         f"give one of them other 'aliases'")
    return found[0](*args, **kwargs)
