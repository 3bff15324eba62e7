"""The data set registry: label spaces next to their readers, root checks asked by name."""

from __future__ import annotations

import numpy as np
import pytest

from smp_parsing.data.cihp import CIHPDataset
from smp_parsing.data.densepose import DensePoseParsingDataset
from smp_parsing.data.errors import DataRootError
from smp_parsing.data.mhp import MHPv2Dataset
from smp_parsing.data.registry import (
    DatasetSpec,
    dataset_names,
    get_dataset_spec,
    register,
    unregister,
)
from smp_parsing.metadata import get_dataset_meta

from .builders import random_image, write_mhp_tree


def test_builtins_registered_with_their_readers_and_label_spaces():
    assert {"mhp", "densepose", "cihp", "synthetic"} <= set(dataset_names())
    readers = {"mhp": MHPv2Dataset, "densepose": DensePoseParsingDataset, "cihp": CIHPDataset}
    for name, reader in readers.items():
        assert get_dataset_spec(name).reader is reader
    sizes = {n: get_dataset_meta(n).num_classes for n in ("mhp", "synthetic", "densepose", "cihp")}
    assert sizes == {"mhp": 59, "synthetic": 59, "densepose": 15, "cihp": 20}
    assert get_dataset_meta("synthetic").flip_pairs == get_dataset_meta("mhp").flip_pairs
    with pytest.raises(KeyError, match="unknown data set 'nope'.*mhp"):
        get_dataset_meta("nope")


def test_metadata_names_of_the_moved_label_spaces_still_resolve():
    from smp_parsing import metadata
    from smp_parsing.data import cihp, densepose, mhp

    assert metadata.MHP_V2_CLASSES is mhp.MHP_V2_CLASSES
    assert metadata.DENSEPOSE_FLIP_PAIRS is densepose.DENSEPOSE_FLIP_PAIRS
    assert metadata.CIHP.classes == cihp.CIHP_CLASSES
    with pytest.raises(AttributeError):
        metadata.NOT_A_LABEL_SPACE  # noqa: B018


def test_check_root_names_the_missing_paths_and_the_layout(tmp_path):
    spec = get_dataset_spec("mhp")
    with pytest.raises(DataRootError, match="mhp val data not found") as info:
        spec.check_root("val", root=tmp_path / "LV-MHP-v2", load_pose=False)
    message = str(info.value)
    assert str(tmp_path / "LV-MHP-v2/list/val.txt") in message and "parsing_annos" in message
    # the config's split names the list file (test evaluates on val's list)
    parsing = np.zeros((1, 16, 16), np.uint8)
    parsing[0, 2:8, 2:8] = 3
    write_mhp_tree(
        tmp_path / "LV-MHP-v2",
        [{"image_id": "1", "image": random_image(16, 16), "parsing": parsing}],
        "val",
    )
    spec.check_root("test", root=tmp_path / "LV-MHP-v2", split="val")
    with pytest.raises(DataRootError, match="CIHP_val.json"):
        get_dataset_spec("cihp").check_root("val", root=tmp_path, layout="coco")
    with pytest.raises(DataRootError, match="dp_masks"):
        get_dataset_spec("densepose").check_root(
            "train", ann_file=tmp_path / "a.json", image_root=tmp_path
        )


def test_names_are_unique():
    spec = DatasetSpec("registry-test", ("background", "a"), ())
    register(spec)
    try:
        register(spec)  # the same spec again (a re-import) is fine
        with pytest.raises(ValueError, match="already registered"):
            register(DatasetSpec("registry-test", ("background", "b"), ()))
        register(DatasetSpec("registry-test", ("background", "b"), ()), replace=True)
        assert get_dataset_meta("registry-test").classes == ("background", "b")
    finally:
        unregister("registry-test")
    with pytest.raises(KeyError):
        get_dataset_spec("registry-test")


def test_label_space_lookup_does_not_import_lightning():
    """The metric CLI and the visualiser look label spaces up: the built-ins load without Lightning."""
    import subprocess
    import sys

    code = (
        "import sys; from smp_parsing.metadata import get_dataset_meta; "
        "assert get_dataset_meta('synthetic').num_classes == 59; "
        "print(sorted(m for m in ('lightning', 'albumentations') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
