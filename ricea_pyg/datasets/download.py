"""Checksummed downloads (atomic: temp file, verify, rename)."""
from __future__ import annotations

import hashlib
import os
import urllib.request
from typing import Dict, Tuple

from ricea_pyg.io import atomic_write

__all__ = ['download_verified', 'sha256_file', 'ChecksumError']


class ChecksumError(RuntimeError):
    pass


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def download_verified(url: str, dest: str, sha256: str,
                      timeout: float = 60.0) -> str:
    """Downloads :obj:`url` to :obj:`dest` and checks its SHA-256."""
    def fetch(f) -> None:
        h = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=timeout) as r:
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                f.write(chunk)
        got = h.hexdigest()
        if got != sha256:  # atomic_write then removes the partial file
            raise ChecksumError(f'{url}: SHA-256 {got} does not match the '
                                f'expected {sha256}; the source changed or '
                                'the transfer was corrupted. Nothing was '
                                f'written to {dest}.')
    atomic_write(dest, fetch)
    return dest


def download_all(root: str, sources: Dict[str, Tuple[str, str]]) -> None:
    """Downloads every ``relative path -> (url, sha256)`` missing under root."""
    for rel, (url, sha) in sources.items():
        dest = os.path.join(root, rel)
        if not os.path.exists(dest):
            print(f'Downloading {url}')
            download_verified(url, dest, sha)
