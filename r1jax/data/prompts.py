"""Prompts for RL rollouts: a split rendered and tokenised once, iterated resumably."""
from __future__ import annotations

import logging

import jax

from r1jax.data import pairs, pipeline, splits

log = logging.getLogger("r1jax")


class PromptIterator:
    """Yields (records, token ids) of this process's prompts, `global_batch_size` per step.

    Every prompt of the split is rendered and tokenised at start-up; those longer than
    max_prompt_len are dropped and counted (`stats`), so every batch has the full size, and
    `width` is the padded length every batch uses.
    """

    def __init__(self, data_section, tokenizer, *, global_batch_size: int, max_prompt_len: int,
                 seed: int):
        records = splits.open_split(data_section, data_section.train_split)
        if data_section.kind == "preference":  # general prompts: the pairs' questions
            records, stats = pairs.rl_prompts(records)
            log.info("RL prompts of %s: %s", data_section.name, stats)
        self.records, self.token_ids, self.stats = pipeline.tokenize_prompts(
            records, tokenizer, data_section.template, max_prompt_len,
            system=data_section.system or None)
        if not self.token_ids:
            raise ValueError(
                f"every one of the {len(records)} prompts of data set {data_section.name!r} "
                f"(template {data_section.template!r}) is longer than rl.max_prompt_len="
                f"{max_prompt_len} tokens: raise rl.max_prompt_len")
        # One static prompt width for every batch (one compilation), no wider than the data needs.
        longest = max(len(ids) for ids in self.token_ids)
        self.width = min(max_prompt_len, -(-longest // 8) * 8)
        if self.stats["filtered_too_long"]:
            log.warning("%d of %d prompts are longer than max_prompt_len=%d and were dropped.",
                        self.stats["filtered_too_long"], len(records), max_prompt_len)
        self._batches = pipeline.BatchIterator(
            list(range(len(self.records))), global_batch_size=global_batch_size, seed=seed,
            process_index=jax.process_index(), process_count=jax.process_count())

    def __next__(self) -> tuple[list[dict], list[list[int]]]:
        indices = next(self._batches)
        return [self.records[i] for i in indices], [self.token_ids[i] for i in indices]

    def get_state(self) -> dict:
        return self._batches.get_state()

    def set_state(self, state: dict):
        self._batches.set_state(state)
