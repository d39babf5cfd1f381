"""Input pipeline for the trainers: seeded shuffling, epochs, per-process batches, resumable state.

The order of examples is a pure function of (seed, epoch): epoch e visits the data in
`default_rng([seed, e]).permutation(n)`, cut into consecutive global batches. Process p of P takes
the p-th contiguous slice of each global batch, so the P processes together see every global batch
exactly once, and the state (epoch, position in the epoch) is the same on every process. Saving
that state in the checkpoint and restoring it makes a resumed run read exactly what an uninterrupted
run would have; the state does not depend on the process count, so a run may resume on another
number of hosts.

Our own iterator rather than grain's: it is ~100 lines over any random-access source (a
`RecordSource`, a list), and the trainers need nothing grain would add (no worker processes:
records are small and tokenised in the trainer).
"""
from collections.abc import Sequence
from typing import Any

import numpy as np

from r1jax.data import templates


class BatchIterator:
    """Yields this process's share of each global batch, as a list of records.

    Args:
      source: random-access records (len() and [i]).
      global_batch_size: records per step over all processes; a multiple of process_count.
      seed: the shuffling seed.
      process_index: this process (jax.process_index()).
      process_count: all processes (jax.process_count()).
      num_epochs: passes over the data; None for endless.
      drop_remainder: drop each epoch's last, incomplete global batch (keeps shapes static).
        Without it the last batch is split as evenly as possible (slices may differ by one).
    """

    def __init__(self, source: Sequence, *, global_batch_size: int, seed: int, process_index: int = 0,
                 process_count: int = 1, num_epochs: int | None = None, drop_remainder: bool = True):
        if global_batch_size <= 0 or global_batch_size % process_count:
            raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of "
                             f"process_count={process_count}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} not in [0, {process_count})")
        if not len(source) or (drop_remainder and len(source) < global_batch_size):
            raise ValueError(f"{len(source)} records cannot fill one global batch of {global_batch_size}")
        self._source = source
        self._batch_size = global_batch_size
        self._seed = seed
        self._process_index, self._process_count = process_index, process_count
        self._num_epochs = num_epochs
        self._drop_remainder = drop_remainder
        self._epoch, self._position = 0, 0  # position: records of this epoch already consumed, globally.
        self._order = None  # permutation of the current epoch, computed when first needed.

    def _epoch_order(self) -> np.ndarray:
        if self._order is None:
            self._order = np.random.default_rng([self._seed, self._epoch]).permutation(len(self._source))
        return self._order

    def _next_epoch(self) -> None:
        self._epoch, self._position, self._order = self._epoch + 1, 0, None

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> list:
        while True:
            if self._num_epochs is not None and self._epoch >= self._num_epochs:
                raise StopIteration
            left = len(self._source) - self._position
            if left > 0 and (left >= self._batch_size or not self._drop_remainder):
                break
            self._next_epoch()
        size = min(self._batch_size, left)
        batch = self._epoch_order()[self._position:self._position + size]
        self._position += size
        mine = np.array_split(batch, self._process_count)[self._process_index]
        return [self._source[int(i)] for i in mine]

    def get_state(self) -> dict[str, int]:
        """The position, JSON-serialisable: {"epoch", "position", "seed", "num_records"}.

        seed and num_records are there to catch restoring into a different data set or seed.
        """
        return {"epoch": self._epoch, "position": self._position, "seed": self._seed,
                "num_records": len(self._source)}

    def set_state(self, state: dict[str, int]) -> None:
        """Continues from `state` (from get_state, possibly on another process or process count).

        Raises:
          ValueError: the state was saved with another seed or data set size.
        """
        saved = (state["seed"], state["num_records"])
        if saved != (self._seed, len(self._source)):
            raise ValueError(f"iterator state is for seed={saved[0]}, {saved[1]} records; this iterator has "
                             f"seed={self._seed}, {len(self._source)} records")
        self._epoch, self._position, self._order = int(state["epoch"]), int(state["position"]), None


def prompt_text(record: dict) -> str:
    """The text a record asks: "question" (math kinds) or "prompt" (code, preference)."""
    for key in ("question", "prompt"):
        if key in record:
            return record[key]
    raise KeyError(f"record {record.get('id')!r} has neither 'question' nor 'prompt' (fields: {sorted(record)})")


def encode_prompt(tokenizer: Any, template: str, question: str,
                system: str | None = None) -> tuple[str, list[int]]:
    """The prompt text and token ids the model is given for one question.

    Chat templates carry their special tokens in the text; format templates get the tokenizer's own (e.g. Llama 3's BOS). A
    BOS added that way is written in front of the returned text, so the text is exactly what the
    model reads.

    Returns:
      (text: str, ids: list[int]).
    """
    text = templates.render_prompt(template, question, tokenizer, system)
    add_special_tokens = not templates.is_chat_template(template)
    ids = list(tokenizer.encode(text, add_special_tokens=add_special_tokens))
    bos = tokenizer.bos_token
    if add_special_tokens and bos and ids[:1] == [tokenizer.bos_token_id] and not text.startswith(bos):
        text = bos + text
    return text, ids


def tokenize_prompts(records: Sequence[dict], tokenizer: Any, template: str, max_prompt_len: int,
                     system: str | None = None) -> tuple[list[dict], list[list[int]], dict[str, int]]:
    """Renders and tokenises prompts, dropping (and counting) those longer than max_prompt_len.

    Chat templates already put the model's special tokens in the text, so it is encoded as is;
    format templates get the tokenizer's own special tokens (e.g. Llama's BOS) added.

    Args:
      records: records with "question" or "prompt".
      tokenizer: a Hugging Face tokenizer.
      template: see templates.render_prompt.
      max_prompt_len: the most tokens a prompt may have.
      system: system prompt for chat templates (see templates.render_prompt).

    Returns:
      (kept records, their token ids (list of int lists, unpadded),
       stats {"num_prompts", "num_kept", "filtered_too_long"}).
    """
    kept, token_ids = [], []
    for record in records:
        _, ids = encode_prompt(tokenizer, template, prompt_text(record), system)
        if len(ids) <= max_prompt_len:
            kept.append(record)
            token_ids.append(list(ids))
    stats = {"num_prompts": len(records), "num_kept": len(kept), "filtered_too_long": len(records) - len(kept)}
    return kept, token_ids, stats
