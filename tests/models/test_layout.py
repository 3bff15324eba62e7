"""The ``models/`` layout: reusable layers apart from SMP's heads, and checkpoints written before
the heads moved (issue 15) still build."""

from __future__ import annotations

import hydra
import pytest

from smp_parsing.models import heads, layers
from smp_parsing.utils.checkpoint import MODEL_CONFIG_KEY, MOVED_TARGETS, checked_config


def test_layers_and_heads_packages_export_their_parts() -> None:
    for name in layers.__all__:
        assert getattr(layers, name).__module__.startswith("smp_parsing.models.layers.")
    for name in heads.__all__:
        assert getattr(heads, name).__module__.startswith("smp_parsing.models.heads.")


@pytest.mark.parametrize("old", sorted(MOVED_TARGETS))
def test_stored_target_from_before_the_move_builds_todays_class(old: str) -> None:
    stored = {"net": {"_target_": "smp_parsing.models.SMP", "head": {"_target_": old, "x": [1]}}}
    cfg = checked_config(stored, "old.ckpt", MODEL_CONFIG_KEY)
    new = cfg.net.head._target_
    assert new != old and new == MOVED_TARGETS[old]
    assert hydra.utils.get_object(new).__name__ == old.rsplit(".", 1)[1]
    assert stored["net"]["head"]["_target_"] == old  # the checkpoint's dict is not modified
