"""RL prompts from several sources at fixed proportions (R1's all-scenario stage).

Every step takes `counts[s]` prompts of source s, the same counts every step (the proportions
of `global_batch_size`, rounded by largest remainder in units of the process count), so each
step's mix is exact and a per-source metric always averages the same number of prompts. Each
source is a `PromptIterator` of its own; the mixture's state is theirs, so a resumed run reads
what an uninterrupted one would have. Records come back tagged with their source's name.
"""
from __future__ import annotations

import math

import jax

from r1jax.data.prompts import PromptIterator

SOURCE_KEY = "source"  # the field naming a record's source


def source_counts(proportions: dict[str, float], global_batch_size: int,
                  unit: int = 1) -> dict[str, int]:
    """Prompts per step of each source: `global_batch_size` split by `proportions` (any
    positive numbers) by largest remainder, in multiples of `unit` (the process count).

    Raises:
      ValueError: a proportion that is not > 0, a batch that `unit` does not divide, or a
        source that would get no prompt.
    """
    bad = {name: p for name, p in proportions.items() if not p > 0}
    if bad:
        raise ValueError(f"mixture proportions must be > 0, got {bad}")
    if global_batch_size % unit:
        raise ValueError(f"{global_batch_size} prompts per step do not split into units of {unit}")
    units, total = global_batch_size // unit, sum(proportions.values())
    exact = {name: units * p / total for name, p in proportions.items()}
    counts = {name: math.floor(x) for name, x in exact.items()}
    # Ties go to the source named first, so the split is a pure function of the config.
    by_remainder = sorted(exact, key=lambda name: counts[name] - exact[name])
    for name in by_remainder[:units - sum(counts.values())]:
        counts[name] += 1
    empty = sorted(name for name, c in counts.items() if c == 0)
    if empty:
        raise ValueError(f"mixture sources {empty} get no prompt of {global_batch_size} per step "
                         f"at proportions {dict(proportions)}: raise their proportion or the "
                         "prompts per step")
    return {name: c * unit for name, c in counts.items()}


class MixtureIterator:
    """Yields (records, token ids) of this process's prompts of every source, `counts[s]` per
    step globally, source after source; each record carries SOURCE_KEY.

    Args:
      sources: name -> a data section (config.data's keys) of the source's prompts.
      proportions: name -> its share (any positive numbers).
      tokenizer, global_batch_size, max_prompt_len: as PromptIterator's.
    """

    def __init__(self, sources: dict, proportions: dict[str, float], tokenizer, *,
                 global_batch_size: int, max_prompt_len: int):
        self.counts = source_counts(proportions, global_batch_size, jax.process_count())
        self.iterators = {
            name: PromptIterator(section, tokenizer, global_batch_size=self.counts[name],
                                 max_prompt_len=max_prompt_len, seed=section.seed)
            for name, section in sources.items()}
        # One padded width for every step: the widest source's.
        self.width = max(it.width for it in self.iterators.values())

    def __next__(self) -> tuple[list[dict], list[list[int]]]:
        records, token_ids = [], []
        for name, iterator in self.iterators.items():
            rs, ids = next(iterator)
            records += [{**r, SOURCE_KEY: name} for r in rs]
            token_ids += ids
        return records, token_ids

    def get_state(self) -> dict:
        return {name: it.get_state() for name, it in self.iterators.items()}

    def set_state(self, state: dict):
        if sorted(state) != sorted(self.iterators):
            raise ValueError(f"iterator state is for sources {sorted(state)}; this mixture has "
                             f"{sorted(self.iterators)}")
        for name, it in self.iterators.items():
            it.set_state(state[name])


def prompt_iterator(data_section, mixture, tokenizer, *, global_batch_size: int,
                    max_prompt_len: int):
    """The RL prompt iterator of a config: `data_section`'s prompts, or (a non-empty
    `mixture`: name -> {proportion, data, ...}) a MixtureIterator of its sources."""
    if not mixture:
        return PromptIterator(data_section, tokenizer, global_batch_size=global_batch_size,
                              max_prompt_len=max_prompt_len, seed=data_section.seed)
    return MixtureIterator({name: s.data for name, s in mixture.items()},
                           {name: s.proportion for name, s in mixture.items()}, tokenizer,
                           global_batch_size=global_batch_size, max_prompt_len=max_prompt_len)
