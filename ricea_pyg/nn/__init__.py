from ricea_pyg.nn.fusion import (
                                 FUSIONS,
                                 ADCFusion,
                                 ConcatFusion,
                                 GlobalWeightFusion,
                                 MEAformerFusion,
                                 ModalityFusion,
                                 RelativeInteraction,
                                 fusion_resolver,
)

__all__ = ['ModalityFusion', 'ConcatFusion', 'GlobalWeightFusion',
           'MEAformerFusion', 'RelativeInteraction', 'ADCFusion', 'FUSIONS',
           'fusion_resolver']
