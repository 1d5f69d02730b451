"""One error type for every malformed input, so callers see file, line and fix."""
from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, os.PathLike]


class DataFormatError(ValueError):
    r"""Raised for malformed input data.

    The message always names the file, the line (or record) where that applies,
    what is wrong, and how to fix it, e.g.::

        triples_1:17: expected 3 tab-separated fields, got 2. Fix: ...

    Args:
        path (str): The offending file.
        problem (str): What is wrong.
        fix (str): What the user should do about it.
        line (int, optional): 1-based line number. (default: :obj:`None`)
        record (str, optional): A record name where there are no lines (e.g.
            a pickle key). (default: :obj:`None`)
    """

    def __init__(self, path: PathLike, problem: str, fix: str,
                 line: Optional[int] = None, record: Optional[str] = None):
        self.path = os.fspath(path)
        self.line = line
        self.record = record
        self.problem = problem
        self.fix = fix
        where = self.path
        if line is not None:
            where += f":{line}"
        if record is not None:
            where += f" [{record}]"
        super().__init__(f"{where}: {problem}. Fix: {fix}")
