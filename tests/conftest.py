"""Shared pytest set-up: offline W&B, a writable matplotlib cache, few threads."""

from __future__ import annotations

import os
import tempfile

# Set before any test module imports lightning / wandb / matplotlib.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "smp_parsing_mpl"))
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

import torch

# Two cores on the reference machine: keep intra-op threads modest so tests are stable.
torch.set_num_threads(min(2, torch.get_num_threads()))
