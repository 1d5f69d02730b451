"""PyG transforms that degrade a pair in the library's schema, for
robustness studies (``docs/robustness.md``)."""
from __future__ import annotations

import numbers
import zlib
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.transforms import BaseTransform

from ricea_pyg.data.schema import SIDES, feature_key, mask_key, relation_edge

__all__ = ['CorruptModalities', 'DropTriples', 'corrupted_flags']

TREATMENTS = ('missing', 'noise', 'wrong')


def _generator(seed: int, *parts: str) -> torch.Generator:
    """A generator for one (seed, node type, modality) stream: the streams
    are independent of each other and of the order of the arguments."""
    salt = zlib.crc32('/'.join(parts).encode())
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + salt)


def _check_seed(owner: str, seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f'{owner}: seed must be an integer (got {seed!r})')
    return int(seed)


def _check_fraction(owner: str, name: str, value) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not 0.0 <= float(value) <= 1.0):
        raise ValueError(f'{owner}: {name} must be a number in [0, 1] (got '
                         f'{value!r})')
    return float(value)


def _check_node_types(owner: str, node_types) -> Tuple[str, ...]:
    if isinstance(node_types, str):
        node_types = (node_types, )
    node_types = tuple(node_types)
    if not node_types:
        raise ValueError(f'{owner}: node_types is empty; name at least one '
                         f'of {list(SIDES)}')
    return node_types


def _missing_node_types(owner: str, data: HeteroData,
                        node_types: Sequence[str]) -> None:
    unknown = [t for t in node_types if t not in data.node_types]
    if unknown:
        raise ValueError(f'{owner}: node type(s) {unknown} not in this data '
                         f'(has {list(data.node_types)})')


def _present_modalities(data: HeteroData,
                        node_types: Sequence[str]) -> list:
    """Feature modalities every listed node type carries (``x_m`` and
    ``mask_m``), in ``data.modalities`` order where the data has it."""
    def has(m):
        return all(feature_key(m) in data[t] and mask_key(m) in data[t]
                   for t in node_types)
    order = list(getattr(data, 'modalities', None) or [])
    keys = {k[2:] for t in node_types for k in data[t].keys()
            if k.startswith('x_')}
    order += sorted(keys - set(order))
    return [m for m in order if m != 'graph' and has(m)]


def corrupted_flags(data: HeteroData, modality: str,
                    node_types: Sequence[str] = SIDES) -> Tensor:
    """The ``corrupted_<modality>`` flags that :class:`CorruptModalities`
    left on :obj:`data`, of every node type in turn: with the default
    :obj:`node_types`, source entities first, then target, the order of
    :class:`~ricea_pyg.data.PairInputs` and of the model's embeddings.

    Args:
        data (HeteroData): A pair that :class:`CorruptModalities` treated.
        modality (str): The modality, e.g. ``'name'``.
        node_types (list of str): (default: ``('source', 'target')``)

    Shapes:
        - **output:** bool ``[sum of the node types' entity counts]``
    """
    key = f'corrupted_{modality}'
    missing = [t for t in node_types if key not in data[t]]
    if missing:
        raise ValueError(f'{key}: no such flags on node types {missing}; '
                         f'apply CorruptModalities([{modality!r}], ...) to '
                         'the data first')
    return torch.cat([data[t][key].bool() for t in node_types])


class CorruptModalities(BaseTransform):
    r"""Keeps modalities for a fraction of the entities and corrupts them
    for the others, as in UMAEA's missing-modality protocol ("Rethinking
    Uncertainly Missing and Ambiguous Visual Modality in Multi-Modal Entity
    Alignment", ISWC 2023), on a pair in the library's
    :class:`~torch_geometric.data.HeteroData` schema.

    For each modality :math:`m` in :obj:`modalities` and each node type, a
    share :obj:`keep_ratio` of the entities that have :math:`m`
    (``mask_m`` True) keep it, chosen at random (exactly
    ``round(keep_ratio * present)`` of them); every other entity that has
    :math:`m` is *corrupted* according to :obj:`treatment`:

    * ``'missing'``: the modality is masked (``mask_m`` False) and its
      feature row zeroed, as the schema writes missing rows.
    * ``'noise'``: the feature row is replaced by Gaussian noise with the
      per-dimension mean and standard deviation of the *kept* entities'
      features (of that modality and node type; of all entities that have
      it when none is kept). The mask stays True: the modality is present
      but meaningless.
    * ``'wrong'``: the feature row is copied from another entity of the same
      node type that has the modality, drawn uniformly, never the entity
      itself (from the original, uncorrupted features). The mask stays True:
      the modality is present but misleading.

    Entities that already lack the modality stay as they are and are not
    counted as corrupted. The corrupted entities are recorded in
    ``data[node_type].corrupted_<m>`` (bool ``[N]``; combined with an
    existing flag by logical or, so transforms compose), so that a
    benchmark can score how well a model's uncertainty flags them;
    :func:`corrupted_flags` gathers them in the model's entity order.

    The choice is deterministic in :obj:`seed` and independent per node type
    and modality (adding a modality to the list does not change the choice
    for the others). The input is not modified: the data is shallow-copied
    and every changed tensor is a new one.

    Args:
        modalities (str or list): The feature modalities to corrupt, e.g.
            ``['name', 'char']`` (``'graph'`` has no input feature).
        keep_ratio (float): Fraction in :math:`[0, 1]` of the entities
            having a modality that keep it. (``1.0`` changes nothing but
            adds the all-False ``corrupted_<m>`` flags.)
        treatment (str): ``'missing'``, ``'noise'`` or ``'wrong'``.
            (default: ``'missing'``)
        seed (int): Seed of the choice and of the noise. (default: :obj:`0`)
        node_types (tuple): The node types (KGs) to corrupt.
            (default: ``('source', 'target')``)

    Example:

    .. code-block:: python

        from ricea_pyg.data import (CorruptModalities, corrupted_flags,
                                    synthetic_pair)

        data = synthetic_pair(1000, seed=0)
        transform = CorruptModalities(['name', 'char'], keep_ratio=0.6,
                                      treatment='noise', seed=0)
        noisy = transform(data)
        noisy['source'].corrupted_name.float().mean()  # about 0.4
        corrupted_flags(noisy, 'name')  # [2000]: source, then target
    """

    def __init__(self, modalities: Union[str, Sequence[str]],
                 keep_ratio: float, treatment: str = 'missing', seed: int = 0,
                 node_types: Sequence[str] = SIDES):
        owner = self.__class__.__name__
        if isinstance(modalities, str):
            modalities = [modalities]
        self.modalities = list(modalities)
        if not self.modalities:
            raise ValueError(f'{owner}: modalities is empty; name at least '
                             'one feature modality, e.g. ["name"]')
        if 'graph' in self.modalities:
            raise ValueError(f"{owner}: modality 'graph' has no input "
                             'feature to corrupt; name feature modalities '
                             '(rel, attr, img, name, char)')
        repeated = sorted({m for m in self.modalities
                           if self.modalities.count(m) > 1})
        if repeated:
            raise ValueError(f'{owner}: modalities repeats {repeated}; name '
                             'each modality once')
        self.keep_ratio = _check_fraction(owner, 'keep_ratio', keep_ratio)
        if treatment not in TREATMENTS:
            raise ValueError(f'{owner}: unknown treatment {treatment!r}; '
                             f'choose one of {list(TREATMENTS)}')
        self.treatment = treatment
        self.seed = _check_seed(owner, seed)
        self.node_types = _check_node_types(owner, node_types)

    def forward(self, data: HeteroData) -> HeteroData:
        owner = self.__class__.__name__
        _missing_node_types(owner, data, self.node_types)
        present = _present_modalities(data, self.node_types)
        for m in self.modalities:
            if m not in present:
                raise ValueError(f'{owner}: modality {m!r} is not in this '
                                 f'data (has {present})')
        for node_type in self.node_types:
            store = data[node_type]
            for m in self.modalities:
                x, mask, flag = self._corrupt(
                    store[feature_key(m)], store[mask_key(m)].bool(),
                    _generator(self.seed, node_type, m), node_type, m)
                old = store.get(f'corrupted_{m}')
                store[feature_key(m)] = x
                store[mask_key(m)] = mask
                store[f'corrupted_{m}'] = flag if old is None else (
                    flag | old.bool())
        return data

    def _corrupt(self, x: Tensor, mask: Tensor, gen: torch.Generator,
                 node_type: str, modality: str
                 ) -> Tuple[Tensor, Tensor, Tensor]:
        have = mask.nonzero().view(-1)
        num_keep = int(round(self.keep_ratio * have.numel()))
        order = torch.randperm(have.numel(), generator=gen)
        kept, hit = have[order[:num_keep]], have[order[num_keep:]]
        flag = torch.zeros_like(mask)
        flag[hit] = True
        if hit.numel() == 0:
            return x, mask, flag
        if self.treatment == 'missing':
            mask = mask.clone()
            mask[hit] = False
            x = x.clone()
            x[hit] = 0
            return x, mask, flag
        out = x.clone()
        if self.treatment == 'noise':
            ref = (x[kept] if kept.numel() else x[have]).double()
            mean = ref.mean(dim=0)
            std = ref.std(dim=0, correction=0)
            noise = torch.randn((hit.numel(), x.size(1)), generator=gen,
                                dtype=torch.float64)
            out[hit] = (mean + std * noise).to(x.dtype)
        else:  # 'wrong'
            if have.numel() < 2:
                raise ValueError(
                    f'{self.__class__.__name__}: treatment "wrong" needs at '
                    f'least 2 {node_type!r} entities with modality '
                    f'{modality!r} (has {have.numel()})')
            # Position of each hit entity in `have`, then a uniform draw
            # among the other positions: never the entity itself.
            pos = order[num_keep:]
            draw = torch.randint(have.numel() - 1, (hit.numel(), ),
                                 generator=gen)
            draw = draw + (draw >= pos).long()
            out[hit] = x[have[draw]]
        return out, mask, flag

    def __repr__(self) -> str:
        extra = ('' if self.node_types == SIDES else
                 f', node_types={list(self.node_types)}')
        return (f'{self.__class__.__name__}({self.modalities}, keep_ratio='
                f'{self.keep_ratio:g}, treatment={self.treatment!r}, seed='
                f'{self.seed}{extra})')


class DropTriples(BaseTransform):
    r"""Drops a random share of the relation triples of each KG of a pair in
    the library's :class:`~torch_geometric.data.HeteroData` schema
    (structural sparsity).

    For each node type, exactly ``round(ratio * E)`` of the ``E`` entries of
    ``data[node_type, 'rel', node_type]`` are removed, chosen with a seeded
    generator (independent per node type); ``edge_index``, ``edge_type`` and
    any other per-edge tensor of that store are indexed together and keep
    their order.

    The library stores **one entry per directed triple** (head, tail), as
    read from the files; the structure encoders add the reverse direction
    themselves when the model is built. So dropping an entry removes the
    triple in both directions as the model sees it. If your own data stores
    both directions as separate entries, each is dropped independently
    (drop before adding reverses to drop whole triples).

    Node features are left as they are: the ``rel`` modality (each entity's
    bag of relation types, counted from all triples when the data was
    built) still reflects the full graph. Only the message-passing graph
    becomes sparser.

    Args:
        ratio (float): Share in :math:`[0, 1]` of the triples to drop.
        seed (int): Seed of the choice. (default: :obj:`0`)
        node_types (tuple): The KGs whose triples are dropped.
            (default: ``('source', 'target')``)

    Example:

    .. code-block:: python

        from ricea_pyg.data import DropTriples, synthetic_pair

        data = synthetic_pair(1000, seed=0)
        sparse = DropTriples(0.5, seed=0)(data)
        sparse['source', 'rel', 'source'].num_edges  # half as many
    """

    def __init__(self, ratio: float, seed: int = 0,
                 node_types: Sequence[str] = SIDES):
        owner = self.__class__.__name__
        self.ratio = _check_fraction(owner, 'ratio', ratio)
        self.seed = _check_seed(owner, seed)
        self.node_types = _check_node_types(owner, node_types)

    def forward(self, data: HeteroData) -> HeteroData:
        owner = self.__class__.__name__
        _missing_node_types(owner, data, self.node_types)
        for node_type in self.node_types:
            edge = relation_edge(node_type)
            if edge not in data.edge_types:
                raise ValueError(f'{owner}: no relation triples {edge} in '
                                 f'this data (has {data.edge_types})')
            store = data[edge]
            num = store.edge_index.size(1)
            num_drop = int(round(self.ratio * num))
            gen = _generator(self.seed, *edge)
            keep = torch.randperm(num, generator=gen)[num_drop:].sort().values
            for key, value in list(store.items()):
                if key == 'edge_index':
                    store[key] = value[:, keep]
                elif (isinstance(value, Tensor) and value.dim() > 0
                      and value.size(0) == num):
                    store[key] = value[keep]
        return data

    def __repr__(self) -> str:
        extra = ('' if self.node_types == SIDES else
                 f', node_types={list(self.node_types)}')
        return (f'{self.__class__.__name__}(ratio={self.ratio:g}, seed='
                f'{self.seed}{extra})')
