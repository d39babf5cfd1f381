"""Prompts for RL rollouts: a prepared split, rendered and tokenised once, iterated resumably."""
from __future__ import annotations

import logging

import jax

from r1jax import data

log = logging.getLogger("r1jax")


def open_split(data_config, split: str):
    """One split of the configured data set, preparing it under data_dir on first use."""
    if data_config.name not in data.list_datasets(data_config.data_dir):
        if jax.process_index() == 0:
            counts = data.prepare(
                data_config.kind, data_config.input or None, name=data_config.name,
                data_dir=data_config.data_dir, test_fraction=data_config.test_fraction,
                **dict(data_config.generate))
            log.info("Prepared data set %r in %s: %s", data_config.name, data_config.data_dir,
                     counts)
        _wait_for_all_processes("prepare_data")
    return data.load(data_config.name, data_config.data_dir, split)


def _wait_for_all_processes(name: str):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


class PromptIterator:
    """Yields (records, token ids) of this process's prompts, `global_batch_size` per step.

    Every prompt of the split is rendered and tokenised at start-up; those longer than
    max_prompt_len are dropped and counted (`stats`), so every batch has the full size, and
    `width` is the padded length every batch uses.
    """

    def __init__(self, data_config, tokenizer, *, global_batch_size: int, max_prompt_len: int,
                 seed: int):
        source = open_split(data_config, data_config.train_split)
        records = [source[i] for i in range(len(source))]
        self.records, self.token_ids, self.stats = data.tokenize_prompts(
            records, tokenizer, data_config.template, max_prompt_len,
            system=data_config.system or None)
        # One static prompt width for every batch (one compilation), no wider than the data needs.
        longest = max(len(ids) for ids in self.token_ids)
        self.width = min(max_prompt_len, -(-longest // 8) * 8)
        if self.stats["filtered_too_long"]:
            log.warning("%d of %d prompts are longer than max_prompt_len=%d and were dropped.",
                        self.stats["filtered_too_long"], len(records), max_prompt_len)
        self._batches = data.BatchIterator(
            list(range(len(self.records))), global_batch_size=global_batch_size, seed=seed,
            process_index=jax.process_index(), process_count=jax.process_count())

    def __next__(self) -> tuple[list[dict], list[list[int]]]:
        indices = next(self._batches)
        return [self.records[i] for i in indices], [self.token_ids[i] for i in indices]

    def get_state(self) -> dict:
        return self._batches.get_state()

    def set_state(self, state: dict):
        self._batches.set_state(state)

