"""SFT examples as tokens with loss weights, packed into fixed-length rows.

An example becomes (inputs, targets, weights): inputs = ids[:-1], targets = ids[1:], and
weights[t] = 1 when targets[t] is a trained token (an assistant / completion token). Shifting
before packing means no target ever crosses from one example into the next.

A packed row numbers its examples 1, 2, ... in `segment_ids` (0 = padding) and restarts
`positions` at 0 for each, so the model computes each example exactly as it would alone.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.struct
import numpy as np

from r1jax.data import templates
from r1jax.models.tokenizer import CHAT_END_TOKENS

OVERLONG_POLICIES = ("truncate", "drop")


@dataclasses.dataclass
class Example:
    """ids: int[L] the whole text's tokens; trained: bool[L], True on tokens the loss covers."""

    ids: list
    trained: list


@flax.struct.dataclass
class Batch:
    """Packed SFT rows, each array [R, seq_len].

    Attributes:
      inputs: int32 tokens fed to the model; targets: int32 the next token of each position.
      weights: float32, 1 where the target is trained on.
      positions: int32, restarting at 0 for each packed example; segment_ids: int32, 1, 2, ...
        per example in the row, 0 on padding (segments never attend to each other).
    """

    inputs: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    positions: np.ndarray
    segment_ids: np.ndarray

    @property
    def num_rows(self) -> int:
        return self.inputs.shape[0]

    def take(self, rows) -> "Batch":
        """The rows `rows` (int[M] or a slice)."""
        return Batch(*(np.asarray(x)[rows] for x in
                       (self.inputs, self.targets, self.weights, self.positions, self.segment_ids)))


def chat_example(messages: Sequence[dict], tokenizer: Any, *, train_on: str = "assistant"
                 ) -> Example:
    """Renders `messages` with the tokenizer's chat template; assistant turns are trained on.

    Each assistant turn's tokens are found as the difference between the rendering of the
    conversation up to it (with the generation prompt) and up to its end, which holds for any
    template that renders a conversation's prefix as a prefix of its rendering (ChatML, Llama).
    train_on="all" trains on every token.
    """
    def render(upto: int, generation_prompt: bool) -> list:
        return tokenizer.apply_chat_template(list(messages[:upto]), tokenize=True,
                                             add_generation_prompt=generation_prompt,
                                             return_dict=False)

    ids = render(len(messages), False)
    trained = [train_on == "all"] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start, end = len(render(i, True)), len(render(i + 1, False))
        if ids[:end] != render(i + 1, False):
            raise ValueError("The chat template does not render conversation prefixes as "
                             "prefixes; cannot locate assistant turns.")
        trained[start:end] = [True] * (end - start)
    return Example(list(ids), trained)


def completion_example(prompt: str, completion: str, tokenizer: Any, *, template: str,
                       system: str | None = None, train_on: str = "completion") -> Example:
    """A prompt rendered with `template` and a completion ending in the EOS token.

    Only the completion (and its EOS) is trained on unless train_on="all".
    """
    text = templates.render_prompt(template, prompt, tokenizer, system=system)
    prompt_ids = tokenizer.encode(text, add_special_tokens=not templates.is_chat_template(template))
    completion_ids = tokenizer.encode(completion, add_special_tokens=False)
    completion_ids = completion_ids + [_end_token(tokenizer, template)]
    trained = [train_on == "all"] * len(prompt_ids) + [True] * len(completion_ids)
    return Example(prompt_ids + completion_ids, trained)


def _end_token(tokenizer: Any, template: str) -> int:
    """The token that ends an assistant turn: for chat templates, the first end-of-turn token the
    vocabulary has (ChatML's <|im_end|>, Llama 3's <|eot_id|>, Gemma's <end_of_turn>, ...: the
    sampler stops on the same ones), else EOS."""
    if templates.is_chat_template(template):
        vocab = tokenizer.get_vocab()
        for token in CHAT_END_TOKENS:
            if token in vocab:
                return vocab[token]
    return tokenizer.eos_token_id


def r1_completion(solution: str, answer: str) -> str:
    """A worked solution in R1's readable format: reasoning in <think>, result in <answer>."""
    return f"<think>\n{solution.strip()}\n</think>\n<answer>{answer.strip()}</answer>"


def pack(examples: Sequence[Example], seq_len: int, *, packing: bool = True,
         overlong: str = "truncate") -> tuple[Batch, dict]:
    """Packs examples, in order, into rows of seq_len (next-fit) or one per row (packing=False).

    Returns:
      (rows, stats): a Batch of R rows; stats counts "examples", "rows", "truncated", "dropped",
      "untrained" (examples with no trained token left after truncation are dropped too) and
      "fill" (share of non-padding tokens).
    """
    if overlong not in OVERLONG_POLICIES:
        raise ValueError(f"overlong={overlong!r}; choose one of {OVERLONG_POLICIES}.")
    stats = {"examples": len(examples), "truncated": 0, "dropped": 0, "untrained": 0}
    rows: list[list[tuple]] = []
    used = seq_len  # forces a new row for the first example
    for ex in examples:
        inputs, targets, weights = ex.ids[:-1], ex.ids[1:], ex.trained[1:]
        if len(inputs) > seq_len:
            if overlong == "drop":
                stats["dropped"] += 1
                continue
            stats["truncated"] += 1
            inputs, targets, weights = inputs[:seq_len], targets[:seq_len], weights[:seq_len]
        if not any(weights):
            stats["untrained"] += 1
            continue
        if not packing or used + len(inputs) > seq_len:
            rows.append([])
            used = 0
        rows[-1].append((inputs, targets, weights))
        used += len(inputs)
    arrays = _to_arrays(rows, seq_len)
    stats["rows"] = len(rows)
    stats["fill"] = float((arrays.segment_ids > 0).mean()) if rows else 0.0
    return arrays, stats


def _to_arrays(rows: list[list[tuple]], seq_len: int) -> Batch:
    shape = (len(rows), seq_len)
    out = {name: np.zeros(shape, np.int32)
           for name in ("inputs", "targets", "positions", "segment_ids")}
    out["weights"] = np.zeros(shape, np.float32)
    for r, row in enumerate(rows):
        start = 0
        for segment, (inputs, targets, weights) in enumerate(row, start=1):
            end = start + len(inputs)
            out["inputs"][r, start:end] = inputs
            out["targets"][r, start:end] = targets
            out["weights"][r, start:end] = weights
            out["positions"][r, start:end] = np.arange(len(inputs))
            out["segment_ids"][r, start:end] = segment
            start = end
    return Batch(**out)
