from ricea_pyg.models.ricea import RICEA, ModelOutput, PairInputs

__all__ = ['RICEA', 'ModelOutput', 'PairInputs']
