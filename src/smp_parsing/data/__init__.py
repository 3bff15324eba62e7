"""Data layer: readers of the real formats, the synthetic MHP v2 set, transforms, batching.

- :mod:`~smp_parsing.data.mhp` (``MHPv2Dataset``), :mod:`~smp_parsing.data.densepose`
  (``DensePoseParsingDataset``): exact readers of the on-disk formats.
- :mod:`~smp_parsing.data.synthetic`: procedural MHP v2 generator + CLI.
- :mod:`~smp_parsing.data.transforms`, :mod:`~smp_parsing.data.collate`,
  :mod:`~smp_parsing.data.datamodule` (``ParsingDataModule``): what training and evaluation use.
- :mod:`~smp_parsing.data.errors`: bad-sample policy; :mod:`~smp_parsing.data.check`: scan CLI.

Submodules are imported explicitly (``from smp_parsing.data.mhp import MHPv2Dataset``) so that a
light user (the metric CLI) does not pay for Lightning or albumentations.
"""
