import warnings

from ricea_pyg.models.ricea import RICEA, ModelOutput

__all__ = ['RICEA', 'ModelOutput']


def __getattr__(name: str):
    if name == 'PairInputs':  # moved to the data layer
        warnings.warn('ricea_pyg.models.PairInputs is deprecated; import '
                      'it from ricea_pyg.data', DeprecationWarning,
                      stacklevel=2)
        from ricea_pyg.data.inputs import PairInputs
        return PairInputs
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
