from typing import Any

from ricea_pyg.nn.fusion.base import (
    SCORINGS,
    FusionAuxiliary,
    FusionOutput,
    ModalityFusion,
    options_repr,
    prepare_modalities,
)
from ricea_pyg.nn.fusion.baselines import (
    ConcatFusion,
    GlobalWeightFusion,
    MEAformerFusion,
)
from ricea_pyg.nn.fusion.functional import (
    _moved_attribute,
    co_belief,
    distribution_uniformity,
    holo_confidence,
    masked_softmax,
    mean_attention,
    mono_confidence,
    pair_mean_query_key,
    relative_calibration,
    weighted_fusion,
)
from ricea_pyg.nn.fusion.resolver import (
    DEFAULT_FUSION,
    FUSIONS,
    fusion_classes,
    fusion_classes_named,
    fusion_name,
    fusion_resolver,
)
from ricea_pyg.nn.fusion.ricea import (
    ADCFusion,
    ConfidenceMLP,
    InteractionOutput,
    RelativeInteraction,
)
from ricea_pyg.nn.fusion.transformer import CrossModalTransformer

__all__ = [
    'ModalityFusion', 'FusionOutput', 'FusionAuxiliary', 'SCORINGS',
    'prepare_modalities', 'options_repr',
    'ConcatFusion', 'GlobalWeightFusion', 'MEAformerFusion',
    'RelativeInteraction', 'ADCFusion', 'ConfidenceMLP', 'InteractionOutput',
    'CrossModalTransformer', 'DEFAULT_FUSION', 'FUSIONS', 'fusion_classes',
    'fusion_classes_named', 'fusion_name', 'fusion_resolver',
    'masked_softmax', 'weighted_fusion',
    'mono_confidence', 'holo_confidence', 'co_belief', 'mean_attention',
    'distribution_uniformity', 'relative_calibration', 'pair_mean_query_key',
]


def __getattr__(name: str) -> Any:
    # `tcp_target` and `tcp_loss` moved to `ricea_pyg.loss`; the old names
    # warn for one release.
    return _moved_attribute(__name__, name)
