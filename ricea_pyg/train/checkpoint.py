"""Checkpoint files: plain tensors and data only, loaded with
``weights_only=True`` so a checkpoint can never run code. Writing goes
through :mod:`ricea_pyg.io`."""
from __future__ import annotations

import os
import random
from typing import Any, Callable, Dict

import numpy as np
import torch

__all__ = ['FORMAT_VERSION', 'load_checkpoint', 'rng_state', 'set_rng_state']

#: Bumped when the layout of a checkpoint, or what its config means,
#: changes; :func:`load_checkpoint` migrates the versions in
#: :data:`_MIGRATIONS`.
FORMAT_VERSION = 4


def _pin_adc_default(name: str, value) -> Callable[[dict], None]:
    """A migration step: a config that names ADCFusion without the option
    :obj:`name` trained with :obj:`value`, the default of its version, and
    must keep it."""
    def pin(state: dict) -> None:
        from ricea_pyg.nn.fusion import ADCFusion, fusion_classes_named
        config = state.get('config')
        if not isinstance(config, dict) or not isinstance(
                config.get('fusion'), str):
            return
        if ADCFusion not in fusion_classes_named(config['fusion']):
            return
        kwargs = config.get('fusion_kwargs') or {}
        if isinstance(kwargs, dict) and name not in kwargs:
            config['fusion_kwargs'] = {**kwargs, name: value}
    return pin


#: version -> the step that makes it the next version.
_MIGRATIONS = {
    # Version 3 changed ADCFusion's default temperature from the method's
    # 1.0 to 4.0 (it changes the score).
    2: _pin_adc_default('temperature', 1.0),
    # Version 4: by default its transformer reads sg(x) (it changes
    # training, so a resumed run must keep the gradient it had).
    3: _pin_adc_default('transformer_input_grad', True),
}


def rng_state() -> Dict[str, Any]:
    """The torch (CPU and every CUDA device), Python and numpy global RNG
    states as tensors and plain values (no pickled objects)."""
    version, py_keys, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {'torch': torch.get_rng_state(),
            'cuda': (torch.cuda.get_rng_state_all()
                     if torch.cuda.is_available() else []),
            'python': torch.tensor(py_keys, dtype=torch.int64),
            'python_version': version, 'python_gauss': py_gauss,
            'numpy': torch.from_numpy(np_keys.astype(np.int64)),
            'numpy_pos': int(np_pos), 'numpy_has_gauss': int(np_has_gauss),
            'numpy_gauss': float(np_gauss)}


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restores what :func:`rng_state` returned."""
    torch.set_rng_state(state['torch'])
    if state.get('cuda') and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    random.setstate((state['python_version'],
                     tuple(state['python'].tolist()), state['python_gauss']))
    np.random.set_state(('MT19937', state['numpy'].numpy().astype(np.uint32),
                         state['numpy_pos'], state['numpy_has_gauss'],
                         state['numpy_gauss']))


def load_checkpoint(path: str) -> dict:
    """Loads a checkpoint written by :class:`~ricea_pyg.train.Trainer`,
    refusing anything that holds more than tensors and plain data."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: checkpoint not found; train first '
                                '(ricea train ... --out DIR) and pass '
                                'DIR/best.pt or DIR/last.pt')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # unpickling and zip errors have many types
        reason = str(e).strip().splitlines()[0] if str(e).strip() else \
            type(e).__name__
        raise ValueError(f'{path}: refused: not a ricea checkpoint of plain '
                         f'tensors and data ({reason}); a file that needs '
                         'Python objects could run code. Pass a file '
                         'written by ricea train') from None
    if not isinstance(state, dict) or 'format_version' not in state:
        raise ValueError(f'{path}: not a ricea checkpoint, or one written '
                         'before format version 2; retrain with ricea train '
                         '(ricea-pyg >= 0.2)')
    version = state['format_version']
    while version in _MIGRATIONS:
        _MIGRATIONS[version](state)
        version += 1
    if version != FORMAT_VERSION:
        raise ValueError(f'{path}: checkpoint format version '
                         f'{state["format_version"]}, this ricea-pyg reads '
                         f'{min(_MIGRATIONS)} to {FORMAT_VERSION}; use the '
                         'ricea-pyg that wrote it, or retrain')
    state['format_version'] = version
    return state
