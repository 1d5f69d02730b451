"""Nearest-neighbour search over target embeddings: FAISS when installed
(GPU when the data is on CUDA and faiss-gpu is present), pure torch
otherwise."""
from __future__ import annotations

import json
import math
import os
from typing import Optional, Tuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ricea_pyg.io import atomic_save, atomic_write

__all__ = ['AlignmentIndex', 'faiss_available', 'torch_topk']

try:  # faiss-cpu or faiss-gpu; both are optional
    import faiss
except ImportError:  # pragma: no cover - depends on the install
    faiss = None


#: Work (query x target x dim multiply-adds) above which builds and searches
#: show a progress bar when ``progress=None``: a few seconds on 2 CPU cores.
PROGRESS_WORK = 1e11


#: Most bytes of one chunk's ``[rows, N]`` score matrix in the exact torch
#: paths (:func:`torch_topk`, :func:`~ricea_pyg.search.true_ranks`): a
#: chunk holds at most ``batch_size`` query rows and at most this much.
SCORE_CHUNK_BYTES = 2**29


#: IVF lists probed by the large-graph paths (``ricea align``, sampled
#: evaluation): per-query work then grows as :math:`\sqrt{N}` (``nlist``
#: is :math:`4\sqrt{N}`), not as :math:`N` with the default ``nlist / 32``.
#: On trained embeddings (a 300k synthetic pair) Hits@1 equalled exact
#: search; isotropic vectors need more (the default).
SCALE_NPROBE = 16


def query_chunk_rows(batch_size: int, num_base: int,
                     element_size: int = 4,
                     max_bytes: Optional[int] = None) -> int:
    """Query rows per chunk against :obj:`num_base` candidates: at most
    :obj:`batch_size`, and at most :obj:`max_bytes` (default:
    :data:`SCORE_CHUNK_BYTES`) at :obj:`element_size` bytes per score; never
    fewer than one row."""
    budget = SCORE_CHUNK_BYTES if max_bytes is None else max_bytes
    fit = budget // max(1, num_base * element_size)
    return max(1, min(batch_size, fit))


def _bar(total: int, work: float, progress: Optional[bool], desc: str):
    show = work >= PROGRESS_WORK if progress is None else progress
    return tqdm(total=total, desc=desc, disable=not show, leave=False)


def faiss_available() -> bool:
    return faiss is not None


def _faiss_gpu() -> bool:
    return faiss is not None and hasattr(faiss, 'StandardGpuResources') and \
        faiss.get_num_gpus() > 0


def _faiss_gpu_device(device: torch.device) -> Optional[int]:
    """The FAISS GPU that holds an index built from inputs on
    :obj:`device`: the same CUDA device, or None (stay on the CPU) when the
    inputs are not on CUDA or faiss-gpu cannot see that device."""
    if device.type != 'cuda' or not _faiss_gpu():
        return None
    gpu = device.index if device.index is not None else \
        torch.cuda.current_device()
    return gpu if gpu < faiss.get_num_gpus() else None


def torch_topk(queries: Tensor, base: Tensor, k: int, metric: str = 'ip',
               exclude: Optional[Tensor] = None, batch_size: int = 8192,
               base_offset: int = 0, progress: Optional[bool] = None
               ) -> Tuple[Tensor, Tensor]:
    """Exact top-k by chunked matrix products: at most :obj:`batch_size`
    queries and :data:`SCORE_CHUNK_BYTES` of scores per chunk.
    A progress bar shows when :obj:`progress` is True, or is None and the
    search is long (:data:`PROGRESS_WORK`).

    Scores are inner products (``'ip'``) or negative squared L2 distances
    (``'l2'``), so larger is better for both. Missing slots (k > N) are
    ``-inf`` with id ``-1``.
    """
    n = base.size(0)
    kk = min(k, n)
    out_s = torch.full((queries.size(0), k), float('-inf'),
                       dtype=queries.dtype, device=queries.device)
    out_i = torch.full((queries.size(0), k), -1, dtype=torch.long,
                       device=queries.device)
    if kk == 0:
        return out_s, out_i
    sq = base.pow(2).sum(-1) if metric == 'l2' else None
    bar = _bar(queries.size(0), queries.size(0) * n * base.size(1), progress,
               'search')
    batch_size = query_chunk_rows(batch_size, n, queries.element_size())
    for s in range(0, queries.size(0), batch_size):
        q = queries[s:s + batch_size]
        scores = q @ base.t()
        if metric == 'l2':
            scores = 2 * scores - sq - q.pow(2).sum(-1, keepdim=True)
        if exclude is not None:
            scores[:, exclude] = float('-inf')
        top_s, top_i = scores.topk(kk, dim=1)
        out_s[s:s + q.size(0), :kk] = top_s
        out_i[s:s + q.size(0), :kk] = top_i + base_offset
        bar.update(q.size(0))
    bar.close()
    out_i[out_s == float('-inf')] = -1
    return out_s, out_i


class AlignmentIndex:
    r"""An index over target embeddings for alignment search.

    Args:
        kind (str): ``'flat'`` (exact), ``'ivf'`` (inverted lists), ``'hnsw'``
            (graph), or ``'auto'``: exact below :obj:`auto_exact_below`
            vectors, IVF above (see :attr:`chosen`). (default: ``'auto'``)
        metric (str): ``'ip'`` (cosine on ℓ2-normalised input) or ``'l2'``.
            Scores are inner products or *negative* squared distances, so
            larger is always better. (default: ``'ip'``)
        backend (str): ``'faiss'``, ``'torch'`` (exact kinds only) or
            ``'auto'``: chosen at the first :meth:`add`, torch for an exact
            (``'flat'``) index unless faiss-gpu holds the inputs' device
            (chunked matrix products ran 3-5× faster than FAISS's flat index
            on the 2-core CPU, ``docs/benchmarks.md``), FAISS for ``'ivf'``
            and ``'hnsw'``; torch when FAISS is not importable.
            (default: ``'auto'``)
        nlist (int, optional): IVF lists (default: ``4 sqrt(N)``).
        nprobe (int, optional): IVF lists probed (default: ``nlist / 32``,
            at least 16).
        hnsw_m (int): HNSW degree. (default: :obj:`32`)
        ef_search (int): HNSW search depth. (default: :obj:`128`)
        batch_size (int): Queries per batch (bounds memory).
            (default: :obj:`8192`)
        auto_exact_below (int): (default: :obj:`50_000`)
        progress (bool, optional): tqdm bars for adds and searches; None
            shows them for long ones only (:data:`PROGRESS_WORK`).
            (default: :obj:`None`)
    """

    def __init__(self, kind: str = 'auto', metric: str = 'ip',
                 backend: str = 'auto', nlist: Optional[int] = None,
                 nprobe: Optional[int] = None, hnsw_m: int = 32,
                 ef_search: int = 128, batch_size: int = 8192,
                 auto_exact_below: int = 50_000,
                 progress: Optional[bool] = None):
        if kind not in ('auto', 'flat', 'ivf', 'hnsw'):
            raise ValueError(f'unknown index kind {kind!r}')
        if metric not in ('ip', 'l2'):
            raise ValueError(f"metric must be 'ip' or 'l2' (got {metric!r})")
        if backend == 'auto' and faiss is None:
            backend = 'torch'
        if backend == 'faiss' and faiss is None:
            raise ImportError("backend='faiss' needs faiss: pip install "
                              "'ricea-pyg[cpu]' (or [gpu])")
        if backend == 'torch' and kind in ('ivf', 'hnsw'):
            raise ValueError(f'{kind!r} needs FAISS; the torch backend is '
                             "exact only (kind='flat')")
        self.kind, self.metric, self.backend = kind, metric, backend
        self.nlist, self.nprobe = nlist, nprobe
        self.hnsw_m, self.ef_search = hnsw_m, ef_search
        self.batch_size, self.auto_exact_below = batch_size, auto_exact_below
        self.progress = progress
        self.chosen: Optional[str] = None
        self._base: Optional[Tensor] = None
        self._index = None
        self._gpu: Optional[int] = None  # FAISS GPU holding the index
        self.ntotal = 0

    def __repr__(self) -> str:
        return (f'AlignmentIndex(kind={self.chosen or self.kind}, '
                f'metric={self.metric}, backend={self.backend}, '
                f'ntotal={self.ntotal})')

    def _choose(self, n: int) -> str:
        if self.kind != 'auto':
            return self.kind
        if self.backend == 'torch' or n < self.auto_exact_below:
            return 'flat'
        return 'ivf'

    def add(self, x: Tensor) -> AlignmentIndex:
        """Adds (and, for IVF, trains on) the target vectors ``[N, d]``."""
        if x.dim() != 2:
            raise ValueError('add expects [N, d]')
        if not torch.isfinite(x).all():
            raise ValueError('target embeddings contain NaN or inf')
        if self.ntotal and self.chosen == 'ivf':
            raise ValueError('IVF indexes are built in one add() call')
        self.chosen = self._choose(self.ntotal + x.size(0))
        self.device = x.device
        if self.backend == 'auto':
            exact_here = self.chosen == 'flat' and _faiss_gpu_device(
                x.device) is None
            self.backend = 'torch' if exact_here else 'faiss'
        if self.backend == 'torch':
            x = x.detach()
            self._base = x if self._base is None else torch.cat([self._base,
                                                                 x])
        else:
            self._add_faiss(x.detach().float().cpu().contiguous().numpy())
        self.ntotal += x.size(0)
        return self

    def _add_faiss(self, x) -> None:
        d = x.shape[1]
        n = x.shape[0] + self.ntotal
        fm = faiss.METRIC_INNER_PRODUCT if self.metric == 'ip' else \
            faiss.METRIC_L2
        if self._index is None:
            if self.chosen == 'flat':
                index = faiss.IndexFlatIP(d) if self.metric == 'ip' else \
                    faiss.IndexFlatL2(d)
            elif self.chosen == 'hnsw':
                index = faiss.IndexHNSWFlat(d, self.hnsw_m, fm)
                index.hnsw.efSearch = self.ef_search
            else:
                nlist = self.nlist or max(1, int(4 * math.sqrt(n)))
                quant = faiss.IndexFlatIP(d) if self.metric == 'ip' else \
                    faiss.IndexFlatL2(d)
                index = faiss.IndexIVFFlat(quant, d, nlist, fm)
                index.nprobe = self.nprobe or max(16, nlist // 32)
                index.train(x[:max(64 * nlist, 256 * 1024)])
                self._quantizer = quant
            # On the inputs' own GPU: device 0 would put every rank's shard
            # of a multi-GPU job on one card.
            self._gpu = _faiss_gpu_device(self.device)
            if self._gpu is not None:
                self._res = faiss.StandardGpuResources()
                index = faiss.index_cpu_to_gpu(self._res, self._gpu, index)
            self._index = index
        # Adding to IVF/HNSW costs real work per vector: show it in chunks.
        chunk = 65536
        work = 0.0 if self.chosen == 'flat' else x.shape[0] * d * 2000.0
        bar = _bar(x.shape[0], work, self.progress, f'add ({self.chosen})')
        for s in range(0, x.shape[0], chunk):
            self._index.add(x[s:s + chunk])
            bar.update(min(chunk, x.shape[0] - s))
        bar.close()

    def search(self, queries: Tensor, k: int,
               exclude: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Top-:obj:`k` ``(scores [Q, k], ids [Q, k])``, best first.

        Args:
            exclude: Target ids never returned (e.g. already aligned ones).
        """
        if self.ntotal == 0:
            raise RuntimeError('search on an empty index: call add() first')
        if not torch.isfinite(queries).all():
            raise ValueError('queries contain NaN or inf')
        if self.backend == 'torch':
            q = queries.detach().to(self._base.device, self._base.dtype)
            return torch_topk(q, self._base, k, self.metric, exclude,
                              self.batch_size, progress=self.progress)
        params = None
        if exclude is not None and exclude.numel() > 0:
            sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(
                exclude.cpu().numpy().astype('int64')))
            self._selector = sel  # keep alive during the search
            params = faiss.SearchParameters(sel=sel)
            if self.chosen == 'ivf':
                params = faiss.SearchParametersIVF(sel=sel,
                                                   nprobe=self._index.nprobe)
            elif self.chosen == 'hnsw':
                params = faiss.SearchParametersHNSW(sel=sel,
                                                    efSearch=self.ef_search)
        q = queries.detach().float().cpu().contiguous().numpy()
        scores, ids = [], []
        # Exact search scans N per query; approximate ones far less.
        scale = 1.0 if self.chosen == 'flat' else 0.05
        bar = _bar(q.shape[0], scale * q.shape[0] * self.ntotal * q.shape[1],
                   self.progress, f'search ({self.chosen})')
        for s in range(0, q.shape[0], self.batch_size):
            d, i = self._index.search(q[s:s + self.batch_size], k,
                                      params=params)
            scores.append(torch.from_numpy(d))
            ids.append(torch.from_numpy(i))
            bar.update(d.shape[0])
        bar.close()
        scores, ids = torch.cat(scores), torch.cat(ids)
        if self.metric == 'l2':
            scores = -scores
        scores[ids < 0] = float('-inf')
        return scores.to(queries.device), ids.to(queries.device)

    def save(self, path: str) -> None:
        """Writes the index to :obj:`path` (a folder)."""
        os.makedirs(path, exist_ok=True)
        meta = dict(kind=self.kind, chosen=self.chosen, metric=self.metric,
                    backend=self.backend, ntotal=self.ntotal,
                    ef_search=self.ef_search, batch_size=self.batch_size)
        # meta.json last: a folder without it is an unfinished save.
        meta_path = os.path.join(path, 'meta.json')
        if os.path.exists(meta_path):
            os.remove(meta_path)
        if self.backend == 'torch':
            atomic_save(self._base.cpu(), os.path.join(path, 'base.pt'))
        else:
            index = self._index
            if self._gpu is not None:
                index = faiss.index_gpu_to_cpu(index)
            blob = faiss.serialize_index(index)
            atomic_write(os.path.join(path, 'index.faiss'),
                         lambda f: f.write(blob.tobytes()))
        atomic_write(meta_path, lambda f: json.dump(meta, f), binary=False)

    @classmethod
    def load(cls, path: str, progress: Optional[bool] = None
             ) -> AlignmentIndex:
        """Reads an index written by :meth:`save` (onto the CPU);
        :obj:`progress` as in the constructor."""
        with open(os.path.join(path, 'meta.json')) as f:
            meta = json.load(f)
        index = cls(kind=meta['kind'], metric=meta['metric'],
                    backend=meta['backend'], ef_search=meta['ef_search'],
                    batch_size=meta['batch_size'], progress=progress)
        index.chosen, index.ntotal = meta['chosen'], meta['ntotal']
        index.device = torch.device('cpu')
        if meta['backend'] == 'torch':
            index._base = torch.load(os.path.join(path, 'base.pt'),
                                     weights_only=True)
        else:
            index._index = faiss.read_index(os.path.join(path,
                                                         'index.faiss'))
        return index
