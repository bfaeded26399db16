"""Cutting a signal into overlapping chunks and putting it back together.

Each chunk *keeps* a span of the output and *reads* a wider span of the input:
real signal before it (so a backend's trackers have warmed up) and after it
(so frames at the edge see their neighbours). Only at the true ends of the
file is there no context. Consecutive kept spans overlap by ``overlap``
samples, where the earlier chunk fades out and the later fades in with
complementary raised-cosine ramps that sum to exactly one, so where two
chunks agree the result is unchanged, and where they differ slightly no
seam can be heard.

Chunks are independent, so they can run in any order and in any process;
:class:`OverlapAdd` takes their outputs in order and emits finished samples
while holding only one overlap of memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Chunk:
    """One piece of a file; all positions are in input-file samples."""

    index: int
    count: int
    read_start: int
    read_stop: int
    keep_start: int
    keep_stop: int
    fade_in: int
    fade_out: int

    @property
    def is_last(self) -> bool:
        return self.index == self.count - 1


def plan_chunks(total: int, segment: int, overlap: int, context_before: int,
                context_after: int, align: int = 1) -> list[Chunk]:
    """Chunks covering ``[0, total)`` with kept spans of about ``segment``.

    Reads start at multiples of ``align`` (at least ``context_before`` before
    the kept span), so a backend that works in frames of a fixed hop sees the
    same frame grid in every chunk as in the whole file.

    Shape: ``total`` samples -> ``ceil((total - overlap) / segment)`` chunks
    (at least one); each kept span is ``segment + overlap`` long except the
    last, which is between ``overlap`` and ``segment + overlap``.
    """
    if segment <= 0 or overlap < 0 or overlap >= segment or align < 1:
        raise ValueError(f"need 0 <= overlap < segment and align >= 1, got "
                         f"{overlap}, {segment}, {align}")
    count = max(1, math.ceil((total - overlap) / segment))
    chunks = []
    for index in range(count):
        keep_start = index * segment
        keep_stop = total if index == count - 1 else keep_start + segment + overlap
        chunks.append(Chunk(
            index=index, count=count,
            read_start=max(0, (keep_start - context_before) // align * align),
            read_stop=min(total, keep_stop + context_after),
            keep_start=keep_start, keep_stop=keep_stop,
            fade_in=overlap if index > 0 else 0,
            fade_out=overlap if index < count - 1 else 0,
        ))
    return chunks


def fade_in_ramp(length: int) -> np.ndarray:
    """Raised-cosine weights of the later chunk across an overlap, from
    near 0 to near 1; the earlier chunk has one minus these."""
    position = (np.arange(length, dtype=np.float64) + 0.5) / length
    return (np.sin(0.5 * np.pi * position) ** 2).astype(np.float32)


class OverlapAdd:
    """Rebuild a signal from chunk outputs given in chunk order.

    ``add`` returns the samples that are final (everything but the overlap it
    must wait for the next chunk to complete). Across an overlap the output
    is ``earlier + ramp * (later - earlier)``: the cross-fade of the two,
    written so that where they agree the result is exactly what they agree
    on, bit for bit.
    """

    def __init__(self) -> None:
        self._pending: np.ndarray | None = None  # the earlier chunk's overlap

    def add(self, chunk: Chunk, kept: np.ndarray) -> np.ndarray:
        """``kept`` is the chunk's output over its kept span, ``[C, keep]``."""
        head = kept[..., :chunk.fade_in]
        if self._pending is not None:
            head = self._pending + fade_in_ramp(chunk.fade_in) * (head - self._pending)
        split = kept.shape[-1] - chunk.fade_out
        self._pending = kept[..., split:].copy() if chunk.fade_out else None
        return np.concatenate([head, kept[..., chunk.fade_in:split]], axis=-1)
