"""Format rewards: is the completion `<think>…</think>` then `<answer>…</answer>`? 1.0 or 0.0.

- `format` (strict): the completion is exactly one think block then one answer block, with
  nothing but whitespace before, between and after them, and both blocks non-empty.
- `format_soft`: somewhere in the completion a think block is followed (whitespace apart) by an
  answer block; other text and repeated tags are tolerated.

A prompt that ends with `<think>` (templates that open the think block for the model) makes
its completion read as if it began with `<think>`.

Also the tag helpers the other rewards share: `first_block` (the answer a reward scores: the
first complete `<answer>…</answer>`), `last_block` and `think_text` (the chain of thought).

Both checks run in time linear in the completion's length, whatever the model writes.
"""
from __future__ import annotations

import re

from r1jax.rewards.registry import safe_map

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
_SPACES = re.compile(r"\s*")
# Only used once every tag is known to occur exactly once, so `.*?` cannot backtrack far.
_STRICT = re.compile(r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL)


def first_block(text: str, tag: str) -> str | None:
    """Content of the first complete `<tag>…</tag>` block of `text` (tag without brackets), or None.

    The rewards score the first answer: what a model writes after it (an invented next
    "User: … Assistant:" turn with an answer of its own, a second guess) is not its answer, and
    the sampler's stop strings cut there anyway, so a reward scores the same with or without them.
    """
    opening, closing = f"<{tag}>", f"</{tag}>"
    first_open = text.find(opening)
    end = text.find(closing, first_open + len(opening)) if first_open >= 0 else -1
    if end < 0:
        return None
    start = text.rfind(opening, 0, end)  # The innermost opening: "<answer> x <answer>5</answer>" is 5.
    return text[start + len(opening):end]


def last_block(text: str, tag: str) -> str | None:
    """Content of the last `<tag>…</tag>` block of `text` (tag without brackets), or None."""
    opening, closing = f"<{tag}>", f"</{tag}>"
    end = text.rfind(closing)
    start = text.rfind(opening, 0, end) if end >= 0 else -1
    return text[start + len(opening):end] if start >= 0 else None


def think_text(completion: str) -> str:
    """The chain of thought: the text before the first `</think>` (after the `<think>` that
    opens it, if any); without `</think>`, what follows `<think>`, or the whole completion."""
    close = completion.find(THINK_CLOSE)
    if close >= 0:
        opening = completion.rfind(THINK_OPEN, 0, close)
        return completion[opening + len(THINK_OPEN) if opening >= 0 else 0:close]
    opening = completion.find(THINK_OPEN)
    return completion[opening + len(THINK_OPEN):] if opening >= 0 else completion


def with_prompt_opening(prompt: str, completion: str) -> str:
    """`completion`, prefixed with `<think>` when the prompt opened the think block for it."""
    if prompt.rstrip().endswith(THINK_OPEN) and not completion.lstrip().startswith(THINK_OPEN):
        return THINK_OPEN + completion
    return completion


def is_strict(text: str) -> bool:
    """One non-empty think block then one non-empty answer block, only whitespace around."""
    if any(text.count(tag) != 1 for tag in _TAGS):
        return False
    match = _STRICT.fullmatch(text)
    return bool(match and match["think"].strip() and match["answer"].strip())


def is_soft(text: str) -> bool:
    """Some `</think>` has a `<think>` before it and, after whitespace, an `<answer>…</answer>`.

    The same language as re.search(r"<think>.*?</think>\\s*<answer>.*?</answer>", DOTALL), but
    scanned once: that regex is quadratic on completions full of unclosed `<think>` tags.
    """
    first_open = text.find(THINK_OPEN)
    last_answer_close = text.rfind(ANSWER_CLOSE)
    if first_open < 0 or last_answer_close < 0:
        return False
    close = text.find(THINK_CLOSE, first_open)
    while close >= 0:
        after = close + len(THINK_CLOSE)
        rest = _SPACES.match(text, after).end()
        if text.startswith(ANSWER_OPEN, rest) and last_answer_close >= rest + len(ANSWER_OPEN):
            return True
        close = text.find(THINK_CLOSE, after)
    return False


def format_strict(prompts: list[str], completions: list[str], **fields) -> list[float]:
    """Strict format reward (registered as `format`): list of N floats in {0, 1}."""
    return safe_map(lambda p, c: is_strict(with_prompt_opening(p, c)), prompts, completions)


def format_soft(prompts: list[str], completions: list[str], **fields) -> list[float]:
    """Soft format reward (registered as `format_soft`): list of N floats in {0, 1}."""
    return safe_map(lambda p, c: is_soft(with_prompt_opening(p, c)), prompts, completions)
