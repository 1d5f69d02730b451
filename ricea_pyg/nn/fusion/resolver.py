"""Pick a fusion by name, as PyG's ``aggregation_resolver``."""
from __future__ import annotations

from typing import Any, Dict, Type, Union

from torch_geometric.resolver import normalize_string

from ricea_pyg.nn.fusion.base import ModalityFusion
from ricea_pyg.nn.fusion.baselines import (
    ConcatFusion,
    GlobalWeightFusion,
    MEAformerFusion,
)
from ricea_pyg.nn.fusion.ricea import ADCFusion

__all__ = ['FUSIONS', 'fusion_resolver']

#: Every registered fusion, by its short name.
FUSIONS: Dict[str, Type[ModalityFusion]] = {
    'concat': ConcatFusion,
    'global': GlobalWeightFusion,
    'meaformer': MEAformerFusion,
    'adc': ADCFusion,
}


def fusion_resolver(query: Union[str, ModalityFusion, Type[ModalityFusion]],
                    *args: Any, **kwargs: Any) -> ModalityFusion:
    r"""Returns a fusion from a name (``'concat'``, ``'global'``,
    ``'meaformer'``, ``'adc'``, or a class name such as ``'ADCFusion'``), a
    class, or an instance (returned as is).

    Example:
        >>> fusion_resolver('adc', num_modalities=4, channels=32)
        ADCFusion(4, 32, uncertainty=row, calibration=geo, mode=concat)
    """
    if isinstance(query, ModalityFusion):
        return query
    if isinstance(query, type) and issubclass(query, ModalityFusion):
        return query(*args, **kwargs)
    if isinstance(query, str):
        q = normalize_string(query)
        for name, cls in FUSIONS.items():
            full = normalize_string(cls.__name__)
            if q in (name, full, full.replace('fusion', '')):
                return cls(*args, **kwargs)
    raise ValueError(f'could not resolve fusion {query!r}; choose from '
                     f'{sorted(FUSIONS)}')
