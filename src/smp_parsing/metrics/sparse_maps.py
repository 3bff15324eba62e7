"""Person maps kept as their non-background 8-pixel words: the fast path of the metrics.

A person map is mostly background. Viewing an ``N x (H*W)`` uint8 stack as ``N x ceil(H*W / 8)``
int64 words lets one ``nonzero`` over 8x fewer elements find every run of 8 pixels that holds a part
pixel; everything else is background and is accounted for by counts (histogram background = area
minus foreground). Byte ``j`` of word ``w`` is pixel ``8 w + j`` on any endianness because bytes
are only ever reinterpreted from the same memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

BYTES_PER_WORD = 8  # an int64 word covers 8 uint8 pixels


def as_words(maps: Tensor) -> Tensor:
    """View ``N x L`` uint8 maps as ``N x ceil(L / 8)`` int64 words, zero-padded when needed."""
    length = maps.shape[1]
    pad = -length % BYTES_PER_WORD
    if pad or maps.storage_offset() % BYTES_PER_WORD or not maps.is_contiguous():
        padded = maps.new_zeros((maps.shape[0], length + pad))
        padded[:, :length] = maps
        maps = padded
    return maps.view(torch.int64)


def word_bytes(words: Tensor) -> Tensor:
    """``(K,)`` int64 words -> ``K x 8`` uint8, byte ``j`` of word ``w`` being pixel ``8 w + j``."""
    return words.contiguous().view(torch.uint8).view(-1, BYTES_PER_WORD)


@dataclass(frozen=True)
class SparseMaps:
    """``N`` uint8 maps reduced to their words holding a non-zero byte.

    Attributes:
        words: ``N x L8`` int64, all words (a view of the maps; used to look other maps up).
        row: ``(F,)`` int64, map index of each non-zero word.
        word: ``(F,)`` int64, word index (pixel ``8 * word`` starts it) of each non-zero word.
        values: ``(F,)`` int64, the non-zero words themselves.
        area: Pixels per map (``H * W``, padding excluded).
    """

    words: Tensor
    row: Tensor
    word: Tensor
    values: Tensor
    area: int

    @classmethod
    def from_maps(cls, maps: Tensor, word_major: bool = False) -> SparseMaps:
        """Build from ``N x H x W`` uint8 maps.

        Args:
            maps: ``N x H x W`` uint8.
            word_major: Order the entries by word, then map (all maps' entries of one word are
                contiguous, which the pair join needs); otherwise by map, then word.
        """
        area = maps.shape[1] * maps.shape[2]
        words = as_words(maps.reshape(maps.shape[0], area))
        if word_major:
            word, row = torch.nonzero(words.t(), as_tuple=True)
        else:
            row, word = torch.nonzero(words, as_tuple=True)
        flat = row * words.shape[1] + word
        values = torch.index_select(words.view(-1), 0, flat)  # faster than words[row, word]
        return cls(words, row, word, values, area)

    @property
    def num_maps(self) -> int:
        return self.words.shape[0]

    @property
    def num_words(self) -> int:
        return self.words.shape[1]

    def bytes(self) -> Tensor:
        """``F x 8`` uint8 pixel values of the non-zero words (background bytes included)."""
        return word_bytes(self.values)

    def pixels(self) -> Tensor:
        """``F x 8`` int64 pixel index of each byte of :meth:`bytes` (may reach the padding)."""
        offsets = torch.arange(BYTES_PER_WORD, device=self.word.device)
        return self.word[:, None] * BYTES_PER_WORD + offsets

    def max_value(self) -> int:
        """Largest pixel value over all maps (0 for all-background maps)."""
        return int(self.bytes().max()) if self.values.numel() else 0

    def histograms(self, num_classes: int) -> Tensor:
        """``N x C`` int64 pixel count per class of each map (values must be below C).

        Only foreground needs the pixels: background is the area minus the foreground.
        """
        code = (self.row * num_classes).int()[:, None] + self.bytes()  # int32: half the traffic
        hist = torch.bincount(code.reshape(-1), minlength=self.num_maps * num_classes)
        hist = hist.view(self.num_maps, num_classes)
        hist[:, 0] = self.area - hist[:, 1:].sum(1)
        return hist
