"""Atomic checkpoint and output files: a killed run never leaves a torn
one."""
from __future__ import annotations

import os
import tempfile
from typing import IO, Any, Callable

import torch

__all__ = ['atomic_write', 'atomic_save', 'load_checkpoint']


def atomic_write(path: str, write: Callable[[IO], None],
                 binary: bool = True) -> None:
    """Call :obj:`write` on a temporary file in :obj:`path`'s folder, then
    rename it over :obj:`path` (atomic on POSIX): a killed run leaves the
    old file or the new one, never a torn one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-',
                               suffix=os.path.basename(path))
    try:
        with (os.fdopen(fd, 'wb') if binary else
              os.fdopen(fd, 'w', newline='', encoding='utf-8')) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save(obj: Any, path: str) -> None:
    """:func:`torch.save` through :func:`atomic_write`."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: checkpoint not found; train first '
                                '(ricea train ... --out DIR) and pass '
                                'DIR/best.pt or DIR/last.pt')
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # pickle/zip errors have many types
        raise ValueError(f'{path}: not a readable ricea checkpoint ({e}); '
                         'pass a file written by ricea train') from None
