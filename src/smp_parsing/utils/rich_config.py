"""Print the composed config as a rich tree, main groups first, and keep a copy in the run dir."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import rich
import rich.syntax
import rich.tree
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

DEFAULT_ORDER = ("data", "model", "callbacks", "logger", "trainer", "paths", "extras")


@rank_zero_only
def print_config_tree(
    cfg: DictConfig, order: Sequence[str] = DEFAULT_ORDER, save_to_file: bool = False
) -> None:
    """Print ``cfg`` (resolved) with one branch per top-level key.

    Args:
        cfg: the composed config.
        order: top-level keys shown first; the others follow in config order.
        save_to_file: also write the tree to ``<paths.output_dir>/config_tree.log``.
    """
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order and k != "hydra"]
    for key in keys:
        branch = tree.add(str(key), style="bold", guide_style="dim")
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    out_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
    if save_to_file and out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(out_dir) / "config_tree.log", "w") as fh:
            rich.print(tree, file=fh)
