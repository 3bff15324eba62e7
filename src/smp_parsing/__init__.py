"""smp_parsing: Single-stage Multi-human Parsing (SMP) with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
