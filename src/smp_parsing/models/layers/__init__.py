"""Reusable layers, not specific to SMP (detectron2's ``layers/``): modulated deformable
convolution, CoordConv channels, conv-GN-ReLU towers and initialisation, matrix NMS, the group
packing it shares with the losses and the decode, and the full-precision regions under autocast.
"""

from smp_parsing.models.layers.blocks import (
    ConvGNReLU,
    ConvTower,
    bias_for_prior,
    init_conv_normal,
)
from smp_parsing.models.layers.coordconv import add_coord_channels, coord_channels
from smp_parsing.models.layers.dcn import ModulatedDeformConv2d, deform_conv2d_fp32
from smp_parsing.models.layers.matrix_nms import matrix_nms
from smp_parsing.models.layers.packing import consecutive_ids, pack_by_group
from smp_parsing.models.layers.precision import autocast_off, full_precision

__all__ = [
    "ConvGNReLU",
    "ConvTower",
    "ModulatedDeformConv2d",
    "add_coord_channels",
    "autocast_off",
    "bias_for_prior",
    "consecutive_ids",
    "coord_channels",
    "deform_conv2d_fp32",
    "full_precision",
    "init_conv_normal",
    "matrix_nms",
    "pack_by_group",
]
