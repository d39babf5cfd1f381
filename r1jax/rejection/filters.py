"""The R1 paper's filters on sampled responses, each switchable, each a named rejection reason.

config.filters.<name> = {"enabled": bool, params...}; `default_config()` lists them all:

  language          the language-consistency reward (share of the chain of thought's words in
                    the prompt's language) below `threshold`: mixed-language chains of thought.
  overlong          cut by the token budget (finish reason "length"), or more than `max_tokens`
                    tokens (0: the budget alone).
  long_paragraph    a paragraph (text between blank lines) longer than `max_chars` characters.
  code_in_reasoning a fenced code block (```) inside the think block; a response without a
                    think block has no separate reasoning and passes.
  format            not exactly one `<think>…</think>` then one `<answer>…</answer>` (the
                    strict format reward).
  repetition        the share of repeated word n-grams (1 - distinct / all, n = `ngram`) above
                    `max_share`, for responses of at least `min_ngrams` n-grams.
  duplicate         per prompt, a response equal to an earlier kept one after whitespace and
                    case are normalised ("duplicate_exact"), or whose word-shingle Jaccard
                    similarity with one reaches `near_threshold` ("duplicate_near").

`check` runs the per-response filters on one response and returns each one's score (kept in the
accepted row's provenance) and whether it passed; `Deduplicator` runs the per-prompt one.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import ml_collections

from r1jax.rewards import format as format_rewards
from r1jax.rewards import language

_WORD = re.compile(r"\w+")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")

DEFAULTS: dict[str, dict[str, Any]] = {
    "language": dict(enabled=True, threshold=0.95),
    "overlong": dict(enabled=True, max_tokens=0),
    "long_paragraph": dict(enabled=True, max_chars=2000),
    "code_in_reasoning": dict(enabled=True),
    "format": dict(enabled=False),
    "repetition": dict(enabled=True, ngram=4, max_share=0.3, min_ngrams=8),
    "duplicate": dict(enabled=True, near_threshold=0.9, shingle=3),
}
PER_RESPONSE = ("language", "overlong", "long_paragraph", "code_in_reasoning", "format", "repetition")


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({name: dict(params) for name, params in DEFAULTS.items()})


def validate(config: Mapping) -> None:
    """Raises ValueError naming an unknown filter or parameter and the allowed ones."""
    for name, params in config.items():
        if name not in DEFAULTS:
            raise ValueError(f"filters.{name}: unknown filter; known filters: {sorted(DEFAULTS)}")
        unknown = sorted(set(params) - set(DEFAULTS[name]))
        if unknown:
            raise ValueError(f"filters.{name}: unknown parameters {unknown}; allowed: {sorted(DEFAULTS[name])}")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def repeated_share(text: str, n: int) -> tuple[float, int]:
    """(1 - distinct / all word n-grams, number of n-grams) of `text`."""
    tokens = words(text)
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return (1.0 - len(set(grams)) / len(grams) if grams else 0.0), len(grams)


def longest_paragraph(text: str) -> int:
    return max(len(p.strip()) for p in _PARAGRAPH_BREAK.split(text))


def reasoning_has_code(completion: str) -> bool:
    if format_rewards.THINK_CLOSE not in completion:
        return False
    return "```" in format_rewards.think_text(completion)


def _score(name: str, params: Mapping, prompt: str, completion: str, num_tokens: int,
           finish_reason: str, language_target: str | None) -> tuple[float, bool]:
    """(score, passed) of one per-response filter."""
    if name == "language":
        cot = format_rewards.think_text(format_rewards.with_prompt_opening(prompt, completion))
        target = language.normalise_language(language_target) if language_target else \
            language.detect_language(prompt)
        value = language.consistency(cot, target)
        return value, value >= params["threshold"]
    if name == "overlong":
        too_long = params["max_tokens"] and num_tokens > params["max_tokens"]
        return float(num_tokens), finish_reason != "length" and not too_long
    if name == "long_paragraph":
        value = longest_paragraph(completion)
        return float(value), value <= params["max_chars"]
    if name == "code_in_reasoning":
        value = reasoning_has_code(completion)
        return float(value), not value
    if name == "format":
        value = format_rewards.is_strict(format_rewards.with_prompt_opening(prompt, completion))
        return float(value), value
    share, count = repeated_share(completion, params["ngram"])
    return share, count < params["min_ngrams"] or share <= params["max_share"]


def check(config: Mapping, skip, prompt: str, completion: str, num_tokens: int, finish_reason: str,
          language_target: str | None = None) -> tuple[dict[str, float], list[str]]:
    """Runs the enabled per-response filters not in `skip` on one response.

    Args:
      config: config.filters.
      skip: names of filters this source skips.
      prompt: the prompt text the policy continued; completion: its response.
      num_tokens, finish_reason: from the sampler ("stop" | "length").
      language_target: the expected language code; None: detected from the prompt.
    Returns:
      ({filter: score}, [names of the filters it failed, in PER_RESPONSE order]).
    """
    scores, failed = {}, []
    for name in PER_RESPONSE:
        params = config.get(name)
        if params is None or not params["enabled"] or name in skip:
            continue
        scores[name], passed = _score(name, params, prompt, completion, num_tokens, finish_reason,
                                      language_target)
        if not passed:
            failed.append(name)
    return scores, failed


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def _shingles(text: str, size: int) -> frozenset:
    tokens = words(text)
    return frozenset(tuple(tokens[i:i + size]) for i in range(max(1, len(tokens) - size + 1)))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class Deduplicator:
    """The duplicate filter over one prompt's responses, in the order they are offered."""

    def __init__(self, config: Mapping, skip=()):
        params = config.get("duplicate")
        self.enabled = bool(params and params["enabled"]) and "duplicate" not in skip
        self.params = params
        self.kept: list[tuple[str, frozenset]] = []

    def reason(self, completion: str) -> str | None:
        """"duplicate_exact", "duplicate_near" or None (kept, and remembered)."""
        if not self.enabled:
            return None
        text = _normalised(completion)
        shingles = _shingles(text, self.params["shingle"])
        for other, other_shingles in self.kept:
            if text == other:
                return "duplicate_exact"
            if jaccard(shingles, other_shingles) >= self.params["near_threshold"]:
                return "duplicate_near"
        self.kept.append((text, shingles))
        return None
