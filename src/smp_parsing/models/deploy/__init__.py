"""Deploy corner: inference-only speed paths of a trained network, all opt-in.

Nothing here is part of the network as trained: :func:`prepare_for_inference` rewrites an
eval-mode network in place for speed (same outputs up to float rounding) and leaves it unfit
for training. ``predict`` applies the ``deploy`` switches of ``conf/inference/``;
``evaluate`` scores the network as trained unless ``inference=deploy`` (or one switch,
``inference.fold_batchnorm=true``) is asked for.

- :mod:`~smp_parsing.models.deploy.fold_bn`: BatchNorm folded into the preceding convolution.
- :mod:`~smp_parsing.models.deploy.winograd`: Winograd F(m x m, 3 x 3) convolutions (CPU).
- :mod:`~smp_parsing.models.deploy.prepare`: the one function that applies the switches.
"""

from smp_parsing.models.deploy.fold_bn import fold_frozen_batchnorm
from smp_parsing.models.deploy.prepare import inference_options, prepare_for_inference
from smp_parsing.models.deploy.winograd import WinogradConv2d, convert_to_winograd

__all__ = [
    "WinogradConv2d",
    "convert_to_winograd",
    "fold_frozen_batchnorm",
    "inference_options",
    "prepare_for_inference",
]
