"""Host-side prompt layout shared by the static and continuous samplers: bucketed widths and
left padding."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_BUCKET = 16


def bucket_width(length: int, limit: int) -> int:
    """The padded width of a prompt of `length` tokens, at most `limit`.

    Widths are powers of two and three quarters of them (16, 24, 32, 48, 64, 96, ...), at least
    MIN_BUCKET: two compilations per doubling of prompt length, and at most a third of a prefill
    spent on padding. Padding only costs cache memory and prefill work: positions count real
    tokens, so a wide bucket never pushes a sequence past the model's context.
    """
    width = max(MIN_BUCKET, 1 << (length - 1).bit_length())
    if length <= width * 3 // 4 and width * 3 // 4 >= MIN_BUCKET:
        width = width * 3 // 4
    return min(width, limit)


def pad_prompts(prompts: Sequence[Sequence[int]], width: int,
                rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The host arrays `sample_batch` takes: (int32[rows, width] left-padded tokens (0 before
    each prompt), int32[rows] lengths). rows defaults to len(prompts); spare rows repeat the
    first prompt, a valid row whose completions the caller drops."""
    rows = len(prompts) if rows is None else rows
    tokens = np.zeros((rows, width), np.int32)
    lengths = np.zeros((rows,), np.int32)
    for r in range(rows):
        ids = prompts[r] if r < len(prompts) else prompts[0]
        tokens[r, width - len(ids):] = ids
        lengths[r] = len(ids)
    return tokens, lengths
