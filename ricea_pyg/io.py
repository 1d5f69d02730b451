"""Atomic file writes: every file the library writes goes through here, so a
killed run, a full disk or a second process leaves the old file or the new
one, never a torn one."""
from __future__ import annotations

import os
import tempfile
from typing import IO, Any, Callable

import torch

__all__ = ['atomic_write', 'atomic_save']


def atomic_write(path: str, write: Callable[[IO], None],
                 binary: bool = True) -> None:
    """Call :obj:`write` on a temporary file in :obj:`path`'s folder, then
    rename it over :obj:`path` (atomic on POSIX).

    Args:
        path (str): The file to (re)place.
        write (callable): Receives the open temporary file.
        binary (bool): Open it in binary mode, else as UTF-8 text with
            ``newline=''``. (default: :obj:`True`)
    """
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
