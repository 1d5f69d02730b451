r"""Embeddings for an asymmetric score: a *query* and a *key* vector per
entity.

Search ranks by an inner product. A fusion with per-entity modality weights
:math:`w` scores two entities by

.. math::
    s(a, b) = \tfrac12 \sum_m \big(w_m(a) + w_m(b)\big) \cos_m(a, b)
    = \langle \mathbf{q}(a), \mathbf{k}(b) \rangle

with :math:`\mathbf{q} = [w \odot \hat{\mathbf{x}}; \hat{\mathbf{x}}] /
\sqrt2` and :math:`\mathbf{k} = [\hat{\mathbf{x}}; w \odot \hat{\mathbf{x}}]
/ \sqrt2`, which no single ℓ2-normalised vector gives. The score must be
symmetric, :math:`\langle \mathbf{q}(a), \mathbf{k}(b)\rangle = \langle
\mathbf{q}(b), \mathbf{k}(a)\rangle`, as the one above is: then every
direction and every CSLS term reads it as a query against keys.

Every search entry point that compares two entity sets (the searches, ranks,
CSLS, one-to-one inference, the sharded search and the metrics) takes a
:class:`QueryKey` where it takes a tensor, and uses it as it is (never
ℓ2-normalised). Low-level helpers on raw vectors
(:func:`~ricea_pyg.search.mean_topk_similarity`,
:class:`~ricea_pyg.search.AlignmentIndex`) take the query or key tensor.
Nothing checks the symmetry: an asymmetric pair of tensors gets a loss and
CSLS terms that read the source-to-target scores in both directions.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['QueryKey', 'Embeddings', 'query_key']


class QueryKey:
    """Query and key embeddings of the same entities, ``[N, D]`` each.

    Row selection (``qk[index]``), :meth:`size`, :attr:`shape`,
    :attr:`device`, :attr:`dtype`, :meth:`to`, :meth:`detach`, :meth:`cpu`
    and ``len()`` act on both, so code that handles a tensor of embeddings
    handles a :class:`QueryKey` too.

    Args:
        query (Tensor): ``[N, D]`` used when these entities ask.
        key (Tensor): ``[N, D]`` used when they are candidates.
    """
    __slots__ = ('query', 'key')

    def __init__(self, query: Tensor, key: Tensor):
        if query.dim() != 2 or query.shape != key.shape:
            raise ValueError(f'query and key must both be [N, D] (got '
                             f'{tuple(query.shape)} and {tuple(key.shape)})')
        self.query, self.key = query, key

    def __getitem__(self, index) -> QueryKey:
        return QueryKey(self.query[index], self.key[index])

    def __len__(self) -> int:
        return self.query.size(0)

    def size(self, dim: Optional[int] = None):
        return self.query.size() if dim is None else self.query.size(dim)

    @property
    def shape(self) -> torch.Size:
        return self.query.shape

    @property
    def device(self) -> torch.device:
        return self.query.device

    @property
    def dtype(self) -> torch.dtype:
        return self.query.dtype

    def to(self, *args, **kwargs) -> QueryKey:
        return QueryKey(self.query.to(*args, **kwargs),
                        self.key.to(*args, **kwargs))

    def detach(self) -> QueryKey:
        return QueryKey(self.query.detach(), self.key.detach())

    def cpu(self) -> QueryKey:
        return self.to('cpu')

    def __repr__(self) -> str:
        return f'QueryKey({tuple(self.query.shape)})'


Embeddings = Union[Tensor, QueryKey]


def query_key(x: Embeddings, normalize: Optional[bool] = None
              ) -> Tuple[Tensor, Tensor]:
    """``(query, key)`` of :obj:`x`: a tensor is its own query and key,
    ℓ2-normalised unless ``normalize=False``; a :class:`QueryKey` is
    returned as it is.

    Args:
        x (Tensor or QueryKey): The embeddings.
        normalize (bool, optional): Whether to ℓ2-normalise a tensor.
            ``True`` with a :class:`QueryKey` is refused: normalising either
            half would change the score. (default: :obj:`None`, meaning
            normalise a tensor)
    """
    if isinstance(x, QueryKey):
        if normalize:
            raise ValueError('normalize=True cannot apply to a QueryKey: its '
                             'score <query, key> is used as it is; pass '
                             'normalize=None or False')
        return x.query, x.key
    if normalize is False:
        return x, x
    x = F.normalize(x, dim=-1)
    return x, x
