"""Batch assembly: pad images to the batch size, keep person maps per image in lists."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def collate_parsing(
    samples: list[dict[str, Any] | None], pad_parsing: bool = True
) -> dict[str, Any] | None:
    """Collate transformed samples into the batch of the data contract.

    Args:
        samples: Items from :class:`smp_parsing.data.transforms.ParsingTransforms`; ``None``
            entries (bad samples left out under ``on_bad_sample="skip"``) are dropped.
        pad_parsing: Training batches (``True``): person maps are at the input size and get
            zero-padded like the images. Evaluation batches (``False``): maps are the original-size
            GT and are left untouched.

    Returns:
        ``images`` ``B x 3 x H x W`` float (zero-padded bottom/right to the batch maximum),
        ``parsing`` list of ``B`` uint8 tensors ``N_i x H x W`` (train) or ``N_i x H0_i x W0_i``
        (eval), ``image_ids`` list[str], ``metas`` list[dict]; ``None`` when every sample was bad.
    """
    samples = [s for s in samples if s is not None]
    if not samples:
        return None
    height = max(s["image"].shape[-2] for s in samples)
    width = max(s["image"].shape[-1] for s in samples)
    images = torch.zeros(
        (len(samples), samples[0]["image"].shape[0], height, width), dtype=samples[0]["image"].dtype
    )
    parsing = []
    for i, sample in enumerate(samples):
        h, w = sample["image"].shape[-2:]
        images[i, :, :h, :w] = sample["image"]
        maps = sample["parsing"]
        if pad_parsing:
            if maps.shape[-2:] != (h, w):
                raise ValueError(
                    f"image {sample['image_id']}: person maps {tuple(maps.shape[-2:])} do not match the "
                    f"image {(h, w)}; use pad_parsing=False for original-size (evaluation) maps"
                )
            maps = F.pad(maps, (0, width - w, 0, height - h))
        parsing.append(maps)
    return {
        "images": images,
        "parsing": parsing,
        "image_ids": [s["image_id"] for s in samples],
        "metas": [s["meta"] for s in samples],
    }
