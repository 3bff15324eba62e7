"""SMP network modules: backbone, FPN, heads, RFR, MIR and the ``SMP`` network."""

from smp_parsing.models.backbone import PretrainedWeightsError, ResNetBackbone
from smp_parsing.models.outputs import SMPOutputs
from smp_parsing.models.smp import SMP

__all__ = ["SMP", "PretrainedWeightsError", "ResNetBackbone", "SMPOutputs"]
