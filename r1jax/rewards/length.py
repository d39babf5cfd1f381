"""Length shaping from DAPO (Yu et al., 2025, section 3.4).

`overlong` (a reward, field `completion_lengths` in tokens): the soft overlong punishment. With
L the length, L_max = max_completion_len and L_cache = overlong_buffer,

    0                          if L <= L_max - L_cache
    (L_max - L_cache - L) / L_cache   if L_max - L_cache < L <= L_max   (0 down to -1)
    -1                         if L > L_max

so the penalty ramps over the last L_cache tokens instead of hitting truncated answers at once.

Overlong filtering (dropping from the loss the completions the sampler cut at its token limit)
is the GRPO trainer's `rl.mask_truncated`, from the sampler's `finished_by_stop`.
"""
from __future__ import annotations

from collections.abc import Sequence

from r1jax.rewards.registry import safe_map

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
