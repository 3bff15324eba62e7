"""Data layer: readers of the real formats, the synthetic MHP v2 set, transforms, batching.

- :mod:`~smp_parsing.data.registry`: the data sets by name (label space, reader, root check);
  each reader module registers its own (``@register_dataset``).
- :mod:`~smp_parsing.data.mhp` (``MHPv2Dataset``), :mod:`~smp_parsing.data.densepose`
  (``DensePoseParsingDataset``), :mod:`~smp_parsing.data.cihp` (``CIHPDataset``): exact readers
  of the on-disk formats, on :mod:`~smp_parsing.data.base` (``ParsingDataset``); every pixel is
  read through :mod:`~smp_parsing.data.image_files` (hostile-file checks on the header).
- :mod:`~smp_parsing.data.synthetic`, :mod:`~smp_parsing.data.synthetic_cihp`: procedural
  generators + CLIs; :mod:`~smp_parsing.data.synthetic_tool`: generation on first use as the
  data module's ``prepare`` hook (``data=synthetic``, ``data=synthetic_cihp``).
- :mod:`~smp_parsing.data.transforms`, :mod:`~smp_parsing.data.collate`,
  :mod:`~smp_parsing.data.datamodule` (``ParsingDataModule``): what training and evaluation use.
- :mod:`~smp_parsing.data.errors`: bad-sample policy; :mod:`~smp_parsing.data.check`: scan CLI.

Submodules are imported explicitly (``from smp_parsing.data.mhp import MHPv2Dataset``) so that a
light user (the metric CLI) does not pay for Lightning or albumentations.
"""
