from ricea_pyg.nn.fusion.base import FusionOutput, ModalityFusion, prepare_modalities
from ricea_pyg.nn.fusion.baselines import (
                                      ConcatFusion,
                                      GlobalWeightFusion,
                                      MEAformerFusion,
)
from ricea_pyg.nn.fusion.functional import (
                                      co_belief,
                                      distribution_uniformity,
                                      holo_confidence,
                                      masked_softmax,
                                      mean_attention,
                                      mono_confidence,
                                      relative_calibration,
                                      tcp_loss,
                                      tcp_target,
                                      weighted_fusion,
)
from ricea_pyg.nn.fusion.resolver import FUSIONS, fusion_resolver
from ricea_pyg.nn.fusion.ricea import (
                                      ADCFusion,
                                      ConfidenceMLP,
                                      InteractionOutput,
                                      RelativeInteraction,
)
from ricea_pyg.nn.fusion.transformer import CrossModalTransformer

__all__ = [
    'ModalityFusion', 'FusionOutput', 'prepare_modalities', 'ConcatFusion',
    'GlobalWeightFusion', 'MEAformerFusion', 'RelativeInteraction',
    'ADCFusion', 'ConfidenceMLP', 'InteractionOutput', 'CrossModalTransformer',
    'FUSIONS', 'fusion_resolver', 'masked_softmax', 'weighted_fusion',
    'mono_confidence', 'holo_confidence', 'co_belief', 'mean_attention',
    'distribution_uniformity', 'relative_calibration', 'tcp_target',
    'tcp_loss',
]
