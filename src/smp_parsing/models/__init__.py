"""SMP network: ``layers/`` (reusable: DCN, CoordConv, matrix NMS, packing, precision),
``heads/`` (SMP's heads: mask feature, part, center, offset, RFR, MIR), ``backbone``/``fpn``,
the network that wires them (``smp.SMP``), ``targets/``, ``losses``, ``decode`` and the opt-in
inference speed paths (``deploy/``)."""

from smp_parsing.models.backbone import PretrainedWeightsError, ResNetBackbone
from smp_parsing.models.heads import (
    CenterHead,
    MaskFeatureBranch,
    MIRHead,
    OffsetHead,
    PartHead,
    RefinedFeatureRetain,
)
from smp_parsing.models.outputs import SMPOutputs
from smp_parsing.models.smp import SMP

__all__ = [
    "SMP",
    "CenterHead",
    "MIRHead",
    "MaskFeatureBranch",
    "OffsetHead",
    "PartHead",
    "PretrainedWeightsError",
    "RefinedFeatureRetain",
    "ResNetBackbone",
    "SMPOutputs",
]
