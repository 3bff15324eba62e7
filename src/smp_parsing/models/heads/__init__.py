"""SMP's heads (paper section 3): mask feature branch (F_mask), part head (categories + dynamic
kernels), human-center head, offset head, Refined Feature Retain (RFR, section 3.2) and Mask of
Interest Reclassify (MIR, section 3.3). :class:`~smp_parsing.models.smp.SMP` wires them.
"""

from smp_parsing.models.heads.center_head import CenterHead, resize_concat
from smp_parsing.models.heads.mask_feature import MaskFeatureBranch
from smp_parsing.models.heads.mir import MIRHead
from smp_parsing.models.heads.offset_head import OffsetHead
from smp_parsing.models.heads.part_head import PartHead
from smp_parsing.models.heads.rfr import RefinedFeatureRetain

__all__ = [
    "CenterHead",
    "MIRHead",
    "MaskFeatureBranch",
    "OffsetHead",
    "PartHead",
    "RefinedFeatureRetain",
    "resize_concat",
]
