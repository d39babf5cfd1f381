"""Stop strings: cut completions at the first occurrence of any configured string, on the host.

The sampler stops on token ids (`stop_tokens`); a stop string such as "</answer>" is text, which a
tokenizer can spell with many token sequences ("</answer>", "</", "answer", ">", or merged with
what follows: ">\\n\\nUser"). So the cut happens after sampling, on the decoded text: a completion
keeps its tokens up to and including the first one whose text completes a stop string, and loses
the rest. The R1-Zero template needs it: a base model that closed its answer goes on with an
invented "User: … Assistant: <think>…<answer>…" turn, whose answer is not the model's answer to
the question asked.

What it costs: the tokens after a stop string are sampled and thrown away (the decode loop cannot
read text); a completion's cut point is found with O(log length) decodes of its prefixes.

    cut = cut_at_stop_strings(out.tokens, out.lengths, tokenizer, ("</answer>",))
    cut.tokens, cut.mask, cut.lengths, cut.stopped
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Cut:
    """Completions cut at their first stop string (rows without one unchanged).

    Attributes:
      tokens: int32[N, M], 0 after each completion's end.
      mask: bool[N, M], True for the tokens kept.
      lengths: int32[N], tokens kept per completion.
      stopped: bool[N], True where a stop string ended the completion.
    """

    tokens: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray
    stopped: np.ndarray


def validate_stop_strings(stop_strings: Sequence[str]) -> tuple[str, ...]:
    """The stop strings as a tuple; raises ValueError for a bare string or an empty entry."""
    if isinstance(stop_strings, str):
        raise ValueError(f"stop_strings must be a sequence of strings, not the string {stop_strings!r}; "
                         f"write ({stop_strings!r},)")
    strings = tuple(stop_strings)
    bad = [s for s in strings if not isinstance(s, str) or not s]
    if bad:
        raise ValueError(f"stop_strings must be non-empty strings; got {bad}")
    return strings


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    # Special tokens kept: the cut is found in the text the model wrote, all of it.
    return tokenizer.decode(list(ids), skip_special_tokens=False)


def stop_length(ids: Sequence[int], tokenizer: Any, stop_strings: Sequence[str]) -> int | None:
    """The number of leading tokens of `ids` to keep: up to the first token whose text completes
    one of `stop_strings`; None when the text holds none of them.

    Binary search over prefixes: once a prefix's text holds a stop string, every longer one does.
    """
    if not stop_strings or not any(s in _decode(tokenizer, ids) for s in stop_strings):
        return None
    low, high = 1, len(ids)
    while low < high:
        middle = (low + high) // 2
        if any(s in _decode(tokenizer, ids[:middle]) for s in stop_strings):
            high = middle
        else:
            low = middle + 1
    return low


def cut_at_stop_strings(tokens: np.ndarray, lengths: np.ndarray, tokenizer: Any,
                        stop_strings: Sequence[str]) -> Cut:
    """Cuts each completion after its first stop string (see module docstring).

    Args:
      tokens: int32[N, M] completion tokens (the sampler's SampleOutput.tokens).
      lengths: int32[N] tokens per completion.
      tokenizer: has `decode(ids, skip_special_tokens=...)` (a Hugging Face tokenizer).
      stop_strings: the strings that end a completion.

    Returns:
      Cut: tokens, mask, lengths after the cut, and which rows a stop string ended.
    """
    stop_strings = validate_stop_strings(stop_strings)
    tokens, lengths = np.asarray(tokens), np.asarray(lengths).astype(np.int32)
    new_lengths, stopped = lengths.copy(), np.zeros(lengths.shape, bool)
    for row, length in enumerate(lengths):
        kept = stop_length(tokens[row, :length].tolist(), tokenizer, stop_strings)
        if kept is not None:
            new_lengths[row], stopped[row] = kept, True
    mask = np.arange(tokens.shape[1])[None, :] < new_lengths[:, None]
    return Cut(tokens=np.where(mask, tokens, 0).astype(tokens.dtype), mask=mask,
               lengths=new_lengths, stopped=stopped)
