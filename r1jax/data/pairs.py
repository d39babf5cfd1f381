"""Preference pairs (`kind=preference` records) as token rows for a reward model.

A pair's two sides are rendered with the tokenizer's chat template as a conversation (the
prompt's turns, then the response as the assistant's turn) and stored side by side,

    tokens: int32[P, 2, T]   # [:, 0] the chosen response, [:, 1] the rejected one
    lengths: int32[P, 2]     # real tokens of each row, right-padded with 0

so a batch split over devices or micro-batches along its first axis never separates a pair,
and the model scores both sides in one forward pass of 2P rows.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import flax.struct
import numpy as np

from r1jax.data import jsonl

INVALID_PAIRS = ("error", "drop")
# HH-RLHF prompts are whole dialogues: "\n\nHuman: ...\n\nAssistant: ...\n\nHuman: ...\n\nAssistant:".
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


@flax.struct.dataclass
class PairBatch:
    """tokens: int32[P, 2, T]; lengths: int32[P, 2] (see the module docstring)."""

    tokens: np.ndarray
    lengths: np.ndarray

    @property
    def num_pairs(self) -> int:
        return self.tokens.shape[0]

    def take(self, pairs) -> PairBatch:
        """The pairs `pairs` (int[M] or a slice)."""
        return PairBatch(np.asarray(self.tokens)[pairs], np.asarray(self.lengths)[pairs])


def prompt_messages(prompt: str) -> list[dict]:
    """An HH-RLHF dialogue prompt as chat turns (its trailing empty "Assistant:" dropped); any
    other prompt as one user turn."""
    if not prompt.startswith("\n\nHuman:"):
        return [{"role": "user", "content": prompt}]
    parts = _HH_TURN.split(prompt)[1:]  # ["Human", text, "Assistant", text, ...]
    turns = [{"role": _HH_ROLES[role], "content": text.strip()}
             for role, text in zip(parts[::2], parts[1::2])]
    if turns and turns[-1] == {"role": "assistant", "content": ""}:
        turns.pop()
    return turns


def render(prompt: str, response: str, tokenizer: Any) -> list[int]:
    """Token ids of the conversation `prompt` then `response` (the assistant's turn)."""
    messages = prompt_messages(prompt) + [{"role": "assistant", "content": response}]
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))


def sequences(prompts: Sequence[str], responses: Sequence[str], tokenizer: Any,
              seq_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(tokens int32[N, seq_len], lengths int32[N], truncated count) of N rendered responses.

    A rendering longer than seq_len keeps its last seq_len tokens: the head reads the last
    token, so the end of the response matters more than the start of the prompt.
    """
    tokens = np.zeros((len(prompts), seq_len), np.int32)
    lengths = np.zeros((len(prompts),), np.int32)
    truncated = 0
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        ids = render(prompt, response, tokenizer)
        truncated += len(ids) > seq_len
        ids = ids[-seq_len:]
        tokens[i, :len(ids)], lengths[i] = ids, len(ids)
    return tokens, lengths, truncated


def rl_prompts(records: Sequence[dict]) -> tuple[list[dict], dict]:
    """Preference records as RL prompts ({"id", "question"}: the user's message), for an
    all-scenario RL source: each distinct prompt once, in first-seen order; HH-RLHF dialogues
    with earlier turns are left out (a prompt template renders one user message). Returns
    (records, stats {"pairs", "prompts", "multi_turn_dropped"})."""
    seen, out, multi_turn = set(), [], 0
    for record in records:
        turns = prompt_messages(record["prompt"])
        if len(turns) != 1:
            multi_turn += 1
        elif turns[0]["content"] not in seen:
            seen.add(turns[0]["content"])
            out.append({"id": record["id"], "question": turns[0]["content"]})
    return out, {"pairs": len(records), "prompts": len(out), "multi_turn_dropped": multi_turn}


def problem(record: dict) -> str | None:
    """Why a preference record cannot train a reward model, or None."""
    if not record["chosen"].strip() or not record["rejected"].strip():
        side = "chosen" if not record["chosen"].strip() else "rejected"
        return f"the {side} response is empty"
    if record["chosen"].strip() == record["rejected"].strip():
        return "chosen and rejected are identical"
    return None


def check_file(path: str, remedy: str) -> None:
    """Refuses a preference JSONL whose pairs cannot all train, naming the first bad one as
    "PATH:LINE: problem; `remedy`" (see `problem`)."""
    jsonl.read_records(path, "preference",
                       check=lambda record: (why := problem(record)) and f"{why}; {remedy}")


def valid_pairs(records: Sequence[dict], *, invalid: str, source: str) -> list[dict]:
    """The records that can train (see `problem`); the others raise (invalid="error", naming
    each record's id) or are dropped (invalid="drop")."""
    bad = [(r["id"], why) for r in records if (why := problem(r))]
    if bad and invalid == "error":
        listed = "; ".join(f"id {rid!r}: {why}" for rid, why in bad[:10])
        raise ValueError(f"{len(bad)} invalid preference pairs in {source} ({listed}); fix them "
                         "or set --config.reward_model.invalid_pairs=drop.")
    return [r for r in records if not problem(r)]


def tokenize_pairs(records: Sequence[dict], tokenizer: Any,
                   seq_len: int) -> tuple[PairBatch, dict]:
    """(PairBatch of the records, stats: pairs, truncated rows)."""
    prompts = [r["prompt"] for r in records]
    chosen = sequences(prompts, [r["chosen"] for r in records], tokenizer, seq_len)
    rejected = sequences(prompts, [r["rejected"] for r in records], tokenizer, seq_len)
    batch = PairBatch(tokens=np.stack([chosen[0], rejected[0]], axis=1),
                      lengths=np.stack([chosen[1], rejected[1]], axis=1))
    return batch, {"pairs": len(records), "truncated": chosen[2] + rejected[2]}
