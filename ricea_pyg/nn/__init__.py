from ricea_pyg.nn.fusion import (
    FUSIONS,
    ADCFusion,
    ConcatFusion,
    FusionAuxiliary,
    FusionOutput,
    GlobalWeightFusion,
    MEAformerFusion,
    ModalityFusion,
    RelativeInteraction,
    fusion_resolver,
)
from ricea_pyg.nn.projection import ModalityProjection
from ricea_pyg.nn.propagation import (
    FeaturePropagation,
    PropagationGraph,
    SeedLabelPropagation,
)
from ricea_pyg.nn.relational import (
    RelationalAdjacency,
    RelationalReflectionConv,
    RelationAwareEncoder,
)
from ricea_pyg.nn.structure import CSRAdjacency, DiagGATConv, GATEncoder, csr_spmm

__all__ = ['ModalityFusion', 'FusionOutput', 'FusionAuxiliary',
           'ConcatFusion', 'GlobalWeightFusion',
           'MEAformerFusion', 'RelativeInteraction', 'ADCFusion', 'FUSIONS',
           'fusion_resolver', 'ModalityProjection', 'CSRAdjacency',
           'DiagGATConv', 'GATEncoder', 'csr_spmm', 'RelationalAdjacency',
           'RelationalReflectionConv', 'RelationAwareEncoder',
           'PropagationGraph', 'FeaturePropagation', 'SeedLabelPropagation']
