from ricea_pyg.data.errors import DataFormatError
from ricea_pyg.data.inputs import PairInputs
from ricea_pyg.data.pair import (
    KGSide,
    MultiModalKGPair,
    build_hetero_data,
    modality_tensors,
)
from ricea_pyg.data.schema import (
    ALIGN,
    MODALITIES,
    SIDES,
    feature_key,
    mask_key,
    relation_edge,
)
from ricea_pyg.data.split import split_alignment, unaligned_entities
from ricea_pyg.data.synthetic import (
    SCALE_PROFILE,
    planted_embeddings,
    scale_pair,
    synthetic_pair,
)
from ricea_pyg.data.text import (
    CallableEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    resolve_text_encoder,
)
from ricea_pyg.data.transforms import (
    CorruptModalities,
    DropTriples,
    corrupted_flags,
)

__all__ = [
    'DataFormatError', 'MODALITIES', 'SIDES', 'ALIGN', 'feature_key',
    'mask_key', 'relation_edge', 'PairInputs', 'KGSide', 'MultiModalKGPair',
    'build_hetero_data', 'modality_tensors', 'split_alignment',
    'unaligned_entities', 'synthetic_pair', 'planted_embeddings',
    'scale_pair', 'SCALE_PROFILE',
    'TextEncoder', 'SentenceTransformerEncoder', 'CallableEncoder',
    'resolve_text_encoder', 'CorruptModalities', 'DropTriples',
    'corrupted_flags',
]
