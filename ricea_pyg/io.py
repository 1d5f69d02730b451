"""Atomic file writes: every file the library writes goes through here, so a
killed run, a full disk or a second process leaves the old file or the new
one, never a torn one."""
from __future__ import annotations

import errno
import os
import tempfile
from typing import IO, Any, Callable, Optional

import torch

__all__ = ['atomic_write', 'atomic_save']

#: What torch.save's zip writer raises (as a RuntimeError) when the file
#: underneath refuses bytes (full disk, file-size limit, I/O error).
_TORCH_WRITE_FAILURES = ('PytorchStreamWriter failed writing',
                         'unexpected pos', 'iostream error',
                         'failed writing file')


def _with_path(e: OSError, path: str) -> OSError:
    """:obj:`e` with :obj:`path` as its file name, so that its one-line
    message names the file (e.g. ``[Errno 27] File too large: 'x.pt'``)."""
    if e.filename is not None or e.errno is None:
        return e
    return OSError(e.errno, e.strerror or os.strerror(e.errno), path)


def atomic_write(path: str, write: Callable[[IO], None],
                 binary: bool = True) -> None:
    """Call :obj:`write` on a temporary file in :obj:`path`'s folder, then
    rename it over :obj:`path` (atomic on POSIX).

    Args:
        path (str): The file to (re)place.
        write (callable): Receives the open temporary file.
        binary (bool): Open it in binary mode, else as UTF-8 text with
            ``newline=''``. (default: :obj:`True`)

    An :class:`OSError` without a file name (a full disk: ``EFBIG``,
    ``ENOSPC``) is raised again naming :obj:`path`.
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
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            named = _with_path(e, path)
            if named is not e:
                raise named from e
        raise


def _write_errno(e: BaseException, folder: str) -> Optional[int]:
    """The errno of a :func:`torch.save` failure caused by the file refusing
    bytes, or None if :obj:`e` is another error (e.g. unpicklable data)."""
    seen = set()
    cur: Optional[BaseException] = e
    while cur is not None and id(cur) not in seen:  # the chained OSError
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno is not None:
            return cur.errno
        cur = cur.__cause__ or cur.__context__
    if not any(s in str(e) for s in _TORCH_WRITE_FAILURES):
        return None
    # No OSError recorded: guess from the limits (free space says nothing
    # once the temporary file is gone).
    try:
        import resource
        if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != \
                resource.RLIM_INFINITY:
            return errno.EFBIG
    except (ImportError, OSError, ValueError):
        pass
    return errno.EIO


def atomic_save(obj: Any, path: str) -> None:
    """:func:`torch.save` through :func:`atomic_write`.

    A write that fails for lack of room or an I/O error raises
    :class:`OSError` (``EFBIG``, ``ENOSPC`` or ``EIO``) naming
    :obj:`path`, chained from torch's own error (which is a
    :class:`RuntimeError` from its zip writer); the previous file is kept.
    """
    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except RuntimeError as e:
        code = _write_errno(e, os.path.dirname(os.path.abspath(path)))
        if code is None:
            raise
        raise OSError(code, f'{os.strerror(code)} (torch.save failed)',
                      path) from e
