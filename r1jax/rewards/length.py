"""Length shaping from DAPO (Yu et al., 2025, section 3.4).

`overlong` (a reward, field `completion_lengths` in tokens): the soft overlong punishment. With
L the length, L_max = max_completion_len and L_cache = overlong_buffer,

    0                          if L <= L_max - L_cache
    (L_max - L_cache - L) / L_cache   if L_max - L_cache < L <= L_max   (0 down to -1)
    -1                         if L > L_max

so the penalty ramps over the last L_cache tokens instead of hitting truncated answers at once.

`truncation_mask` (for the trainer, not a reward): overlong filtering, i.e. loss weights that
drop the completions the sampler cut at its token limit, whose "wrong" answer says nothing
about the reasoning.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from r1jax.rewards.registry import safe_map

TRUNCATED_REASONS = frozenset({"length", "max_tokens", "truncated"})


def overlong_penalty(length: int, max_completion_len: int, overlong_buffer: int) -> float:
    """DAPO's soft overlong punishment of one completion of `length` tokens, in [-1, 0]."""
    if not 0 < overlong_buffer <= max_completion_len:
        raise ValueError(f"need 0 < overlong_buffer ({overlong_buffer}) <= max_completion_len "
                         f"({max_completion_len})")
    start = max_completion_len - overlong_buffer
    if length <= start:
        return 0.0
    if length <= max_completion_len:
        return (start - length) / overlong_buffer
    return -1.0


def overlong(prompts: list[str], completions: list[str], completion_lengths: Sequence[int], *,
             max_completion_len: int, overlong_buffer: int, **fields) -> list[float]:
    """Soft overlong reward: N floats in [-1, 0].

    Args:
      completion_lengths: N completion lengths in tokens.
      max_completion_len, overlong_buffer: L_max and L_cache (see module docstring); bind them
        with `get("overlong", max_completion_len=..., overlong_buffer=...)`.
    """
    return safe_map(lambda n: overlong_penalty(int(n), max_completion_len, overlong_buffer),
                    completion_lengths)


def truncation_mask(finish_reasons: Sequence[str | bool], mask_truncated: bool = True) -> np.ndarray:
    """float32[N] loss weights: 0.0 for truncated completions (when `mask_truncated`), else 1.0.

    Args:
      finish_reasons: per completion, either a finish reason ("stop", "eos", "length", ...; one
        of TRUNCATED_REASONS means truncated) or a bool that is True when it was truncated.
      mask_truncated: False gives all ones, so the trainer can call this unconditionally.
    """
    truncated = np.array([r if isinstance(r, (bool, np.bool_)) else str(r).lower() in TRUNCATED_REASONS
                          for r in finish_reasons], dtype=bool).reshape(-1)
    return np.where(truncated & mask_truncated, 0.0, 1.0).astype(np.float32)
