"""`generate`: the list-in, list-out sampler for evaluation, rejection sampling and scripts.

Prompts are sorted by length and cut into batches; each batch is padded to a bucketed width
(see `bucket_width`, from its longest prompt) and a power-of-two row count, so a run over
thousands of prompts of every length compiles only a handful of `sample_batch` programs.
With batching="continuous", every sample goes through one set of slots instead (see
`continuous`), which wastes no decoding on finished rows when completion lengths vary.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

import jax
import numpy as np
import tqdm

from r1jax import models, sharding
from r1jax.sampling import continuous, sampler, stop_strings as stop_strings_lib
from r1jax.sampling.prompts import bucket_width, pad_prompts
from r1jax.sampling.strategies import Strategy

DEFAULT_BATCH_SIZE = 256


@dataclasses.dataclass(frozen=True)
class Completions:
    """n completions per prompt, prompt-major (the n completions of prompt 0 first).

    Attributes:
      tokens: token ids of each completion, prompt excluded, stop token (or the token that
        completes a stop string) included.
      logprobs: log-probability of each of those tokens under the model at the sampling
        temperature (greedy: 1), not truncated by top-k/top-p: the behaviour policy's
        logprobs GRPO uses.
      finish_reasons: "stop" (ended with a stop token or stop string) or "length" (ran out of
        budget).
    """

    tokens: list[list[int]]
    logprobs: list[list[float]]
    finish_reasons: list[str]


def _batch_rows(count: int, mesh) -> int:
    """Rows for a call of `count` prompts: a power of two, a multiple of the mesh's batch shards."""
    rows = 1 << (count - 1).bit_length()
    if mesh is not None:
        shards = sharding.batch_shards(mesh.shape)
        rows = -(-rows // shards) * shards
    return rows


def _validate_prompts(config: models.ModelConfig, prompts,
                      max_new_tokens) -> tuple[list[list[int]], list[int]]:
    """(token-id lists, per-prompt budgets), checked against the vocabulary and the context.

    Raises ValueError naming the first bad prompt.
    """
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts must be a non-empty list of token-id lists (tokenize text "
                         "first).")
    if isinstance(max_new_tokens, (int, np.integer)):
        budgets = [max_new_tokens] * len(prompts)
    else:
        budgets = list(max_new_tokens)
        if len(budgets) != len(prompts):
            raise ValueError(f"max_new_tokens has {len(budgets)} entries for {len(prompts)} "
                             "prompts.")
    if any(not isinstance(b, (int, np.integer)) or b < 1 for b in budgets):
        raise ValueError(f"max_new_tokens must be ints >= 1, got {max_new_tokens!r}.")
    checked = []
    for i, (prompt, budget) in enumerate(zip(prompts, budgets)):
        if isinstance(prompt, (int, np.integer, str, bytes)):
            raise ValueError(f"prompts[{i}] is {prompt!r}, not a list of token ids: prompts must "
                             "be a list of token-id lists.")
        ids = [int(t) for t in prompt]
        if not ids:
            raise ValueError(f"prompts[{i}] is empty: a prompt needs at least one token (e.g. BOS) "
                             "for the model to condition on.")
        outside = [t for t in ids if not 0 <= t < config.vocab_size]
        if outside:
            raise ValueError(f"prompts[{i}] has token ids outside the vocabulary "
                             f"[0, {config.vocab_size}): {outside[:5]}.")
        if len(ids) + budget > config.max_seq_len:
            raise ValueError(f"prompts[{i}] has {len(ids)} tokens; with max_new_tokens={budget} it "
                             f"needs {len(ids) + budget} positions, more than the model's context "
                             f"(config.max_seq_len={config.max_seq_len}).")
        checked.append(ids)
    return checked, [int(b) for b in budgets]


def _calls(prompts: list[list[int]], width_limit: int, prompts_per_call: int):
    """(padded width, prompt indices) of each sample_batch call.

    Prompts are sorted by length and cut into calls of prompts_per_call, so each call holds
    prompts of similar lengths and is padded to the bucket of its longest one.
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for start in range(0, len(order), prompts_per_call):
        indices = order[start:start + prompts_per_call]
        yield bucket_width(len(prompts[indices[-1]]), width_limit), indices


BATCHING = ("static", "continuous")


def _completions(out: sampler.SampleOutput, targets: Sequence[int], completions: Completions,
                 tokenizer, stop_strings: tuple[str, ...]):
    """Writes rows of `out` into completions' lists at index targets[row], each cut after its
    first stop string."""
    for row, target in enumerate(targets):
        length = int(out.lengths[row])
        ids = out.tokens[row, :length].tolist()
        cut = stop_strings_lib.stop_length(ids, tokenizer, stop_strings)
        length = length if cut is None else cut
        completions.tokens[target] = ids[:length]
        completions.logprobs[target] = out.logprobs[row, :length].tolist()
        completions.finish_reasons[target] = ("stop" if out.finished_by_stop[row] or cut is not None
                                              else "length")


def generate(config: models.ModelConfig, params, prompts: Sequence[Sequence[int]], *,
             max_new_tokens: Union[int, Sequence[int]], temperature: float = 0.0,
             top_k: Optional[int] = None, top_p: Optional[float] = None, n: int = 1,
             stop_tokens: Sequence[int] = (), stop_strings: Sequence[str] = (),
             tokenizer=None, seed: int = 0,
             batch_size: int = DEFAULT_BATCH_SIZE, batching: str = "static",
             mesh: Optional[jax.sharding.Mesh] = None, rules=None,
             progress: bool = False) -> Completions:
    """Samples n completions for each of a list of prompts.

    Args:
      config, params: the model.
      prompts: token-id lists (a chat template already applied), each non-empty.
      max_new_tokens: the most tokens a completion may have: one int, or one per prompt.
      temperature, top_k, top_p: temperature 0 is greedy; see `strategies.Strategy`.
      n: completions per prompt; static batching shares one prefill of the prompt among them.
      stop_tokens: ids that end a completion (kept as its last token).
      stop_strings: texts that end a completion: it is cut after the token that completes the
        first of them (see `stop_strings.py`; the tokens after it are sampled, then dropped).
      tokenizer: decodes completions for `stop_strings` (a Hugging Face tokenizer).
      seed: sample j of prompts[i] is a function of (seed, i, j) only (see
        `strategies.sample_keys`): the same whatever batch_size and batching.
      batch_size: the most completions (prompts × n) decoded together.
      batching: "static" (batches of similar prompt lengths, each decoded until its longest
        completion ends) or "continuous" (batch_size slots, each refilled with the next sample
        as soon as its own ends; see `continuous`): the faster one when lengths vary. The same
        completions either way (logprobs to float32 rounding).
      mesh, rules: run sharded (see `sampler.sample_batch`; continuous: batch_size slots split
        over the mesh's batch axes, so it must divide over them).
      progress: show a progress bar over prompts.
    Returns:
      Completions, len(prompts) * n of them, prompt-major.
    """
    if batching not in BATCHING:
        raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}.")
    if batching == "continuous":
        rules = continuous.mesh_rules(mesh, rules, batch_size)
    prompts, budgets = _validate_prompts(config, prompts, max_new_tokens)
    stop_strings = stop_strings_lib.validate_stop_strings(stop_strings)
    if stop_strings and tokenizer is None:
        raise ValueError(f"stop_strings={stop_strings} needs the tokenizer that decodes the completions: "
                         "pass tokenizer=...")
    longest = max(budgets)
    strategy = Strategy(float(temperature), top_k, top_p)
    # Validates n and the rest up front, before any compilation.
    stop_tokens = sampler.validate_settings(config, longest, n, strategy, stop_tokens)
    rng = jax.random.key(seed)
    total = len(prompts) * n
    completions = Completions(tokens=[None] * total, logprobs=[None] * total,
                              finish_reasons=[None] * total)
    with tqdm.tqdm(total=total, desc="sample", unit="sample", disable=not progress) as bar:
        if batching == "continuous":
            out = continuous.sample_prompts(
                config, params, prompts, rng, max_new_tokens=longest, budgets=budgets,
                prompt_ids=range(len(prompts)), n=n, strategy=strategy, stop_tokens=stop_tokens,
                num_slots=batch_size, on_done=bar.update, mesh=mesh, rules=rules)
            _completions(out, range(total), completions, tokenizer, stop_strings)
            return completions
        for width, indices in _calls(prompts, config.max_seq_len, max(1, batch_size // n)):
            rows = _batch_rows(len(indices), mesh)
            batch, lengths = pad_prompts([prompts[i] for i in indices], width, rows)
            limits = np.ones((rows,), np.int32)  # Spare rows stop after one token.
            limits[:len(indices)] = [budgets[i] for i in indices]
            ids = np.full((rows,), indices[0], np.int32)
            ids[:len(indices)] = indices
            out = sampler.sample_batch(
                config, params, batch, lengths, rng, max_new_tokens=longest, n=n,
                temperature=temperature, top_k=top_k, top_p=top_p, stop_tokens=stop_tokens,
                token_limits=limits, prompt_ids=ids, mesh=mesh, rules=rules)
            # A mesh over several processes splits the rows among them: gather them all. A mesh of
            # this process's devices (or none) holds them here already: each process samples its
            # own prompts (rejection sampling), and a gather would mix in the other processes' rows.
            out = (sharding.all_rows(out) if mesh is not None and mesh.is_multi_process
                   else jax.tree.map(np.asarray, out))
            _completions(out, [indices[row // n] * n + row % n for row in range(len(indices) * n)],
                         completions, tokenizer, stop_strings)
            bar.update(len(indices) * n)
    return completions
