"""``SparseMaps``: the 8-pixel-word view must see exactly the pixels of the maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smp_parsing.metrics.sparse_maps import BYTES_PER_WORD, SparseMaps


@pytest.mark.parametrize("word_major", [False, True])
def test_histograms_and_pixels_equal_dense_counts_for_odd_sizes_and_slices(word_major):
    rng = np.random.default_rng(3)
    for height, width in [(1, 1), (3, 5), (7, 9), (8, 8), (13, 11)]:
        stack = torch.from_numpy(rng.integers(0, 4, (5, height, width)).astype(np.uint8))
        stack[rng.random((5, height, width)) < 0.6] = 0
        maps = stack[1:4]  # a slice: storage offset not a multiple of 8 for odd areas
        sparse = SparseMaps.from_maps(maps, word_major=word_major)
        hist = sparse.histograms(4)
        for k in range(3):
            expected = np.bincount(maps[k].numpy().ravel(), minlength=4)
            np.testing.assert_array_equal(hist[k].numpy(), expected)
        # Every non-zero pixel appears exactly once, at its own index, with its own value.
        flat = maps.reshape(3, -1)
        pixels, values = sparse.pixels(), sparse.bytes()
        row = sparse.row[:, None].expand_as(pixels)
        fg = values > 0
        dense = torch.zeros(3, sparse.num_words * BYTES_PER_WORD, dtype=torch.uint8)
        dense[row[fg], pixels[fg]] = values[fg]
        assert torch.equal(dense[:, : height * width], flat)
        assert sparse.max_value() == int(maps.max())


def test_empty_stacks():
    sparse = SparseMaps.from_maps(torch.zeros(0, 5, 7, dtype=torch.uint8))
    assert sparse.histograms(3).shape == (0, 3)
    sparse = SparseMaps.from_maps(torch.zeros(2, 5, 7, dtype=torch.uint8))
    assert sparse.histograms(3).tolist() == [[35, 0, 0], [35, 0, 0]]
    assert sparse.max_value() == 0


def test_word_major_order_groups_entries_by_word():
    maps = torch.zeros(3, 4, 8, dtype=torch.uint8)
    maps[:, 0, 0] = 1  # word 0 in every map
    maps[1, 3, 7] = 2  # last word in map 1 only
    sparse = SparseMaps.from_maps(maps, word_major=True)
    assert sparse.word.tolist() == [0, 0, 0, 3]
    assert sparse.row.tolist() == [0, 1, 2, 1]
