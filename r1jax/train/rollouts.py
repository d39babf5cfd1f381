"""Rollouts: G sampled completions per prompt, scored, as one typed batch.

Every process holds every row (they are gathered after sampling and scoring), so all processes
take the same decisions (group filtering, advantages, mini-batch split) on the same numbers; each
process decodes and scores only its own prompts' rows, whose texts it alone keeps.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax.struct
import jax
import numpy as np

from r1jax import data, rewards as rewards_lib, sampling, sharding


@flax.struct.dataclass
class Rollouts:
    """N = prompts × G rows, prompt-major (the G completions of a prompt are consecutive).

    Attributes:
      prompt_tokens: int32[N, P] left-padded prompts; prompt_lengths: int32[N].
      completions: int32[N, C]; mask: float32[N, C], 1 on the tokens the loss counts.
      logprobs: float32[N, C] log π_old of each completion token (the policy that sampled it).
      sampler_logprobs: float32[N, C] log μ, the truncated distribution the sampler drew each
        token from (`SampleOutput.sampled_logprobs`): importance-sampling correction's divisor.
      ref_logprobs: float32[N, C] log π_ref, or None (β = 0, or not computed yet).
      advantages: float32[N] (zeros until `with_advantages`).
      rewards: float32[N] the weighted sum of the configured rewards.
      reward_failed: bool[N] a reward could not score the row (counted as 0 in `rewards`).
      reward_components: {name: float32[N]} each reward's scores, NaN where it failed.
      lengths: int32[N] generated tokens; finished_by_stop: bool[N] ended by a stop token.
      texts, prompts: {row: str} of this process's rows (host only; not a pytree leaf).
    """

    prompt_tokens: np.ndarray
    prompt_lengths: np.ndarray
    completions: np.ndarray
    mask: np.ndarray
    logprobs: np.ndarray
    sampler_logprobs: np.ndarray
    ref_logprobs: Optional[np.ndarray]
    advantages: np.ndarray
    rewards: np.ndarray
    reward_failed: np.ndarray
    reward_components: dict
    lengths: np.ndarray
    finished_by_stop: np.ndarray
    texts: dict = flax.struct.field(pytree_node=False, default_factory=dict)
    prompts: dict = flax.struct.field(pytree_node=False, default_factory=dict)

    @property
    def num_rows(self) -> int:
        return self.completions.shape[0]

    def take(self, rows: np.ndarray) -> "Rollouts":
        """The rows `rows` (int[M]), renumbered 0..M-1; texts follow their rows."""
        rows = np.asarray(rows)
        new_index = {int(old): new for new, old in enumerate(rows)}
        return jax.tree.map(lambda x: np.asarray(x)[rows], self).replace(
            texts={new_index[r]: t for r, t in self.texts.items() if r in new_index},
            prompts={new_index[r]: t for r, t in self.prompts.items() if r in new_index})

    def split(self, parts: int) -> list["Rollouts"]:
        """`parts` equal consecutive slices (mini-batches)."""
        size = self.num_rows // parts
        return [self.take(np.arange(i * size, (i + 1) * size)) for i in range(parts)]

    def arrays(self) -> "Rollouts":
        """The arrays the update reads (no texts, no per-reward scores): what goes to the device."""
        return self.replace(reward_components={}, texts={}, prompts={})

    @staticmethod
    def concatenate(parts: list["Rollouts"]) -> "Rollouts":
        """Rows of every part in order; texts renumbered to match."""
        offsets = np.cumsum([0] + [p.num_rows for p in parts])
        # Texts are static pytree data: strip them so the parts' structures match.
        bare = [p.replace(texts={}, prompts={}) for p in parts]
        joined = jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *bare)
        return joined.replace(
            texts={o + r: t for p, o in zip(parts, offsets) for r, t in p.texts.items()},
            prompts={o + r: t for p, o in zip(parts, offsets) for r, t in p.prompts.items()})


def informative_groups(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """bool[num_groups]: groups whose rewards are not all equal (they carry a learning signal)."""
    groups = rewards.reshape(-1, group_size)
    return groups.max(axis=1) > groups.min(axis=1)


def stop_strings(config) -> tuple[str, ...]:
    """rl.stop_strings, or (None) the template's: "</answer>" for R1's, so an invented next turn
    after the answer is neither scored nor trained on."""
    if config.rl.stop_strings is not None:
        return tuple(config.rl.stop_strings)
    return data.templates.default_stop_strings(config.data.template)


def cut_at_stop_strings(out: sampling.SampleOutput, tokenizer,
                        strings: tuple[str, ...]) -> sampling.SampleOutput:
    """The sampler's output (host arrays, every row) cut after each completion's first stop
    string: later tokens leave the mask, their log-probs are zeroed, and a cut row counts as
    finished by a stop."""
    if not strings:
        return out
    cut = sampling.cut_at_stop_strings(out.tokens, out.lengths, tokenizer, strings)
    return out.replace(tokens=cut.tokens, mask=cut.mask, lengths=cut.lengths,
                       logprobs=np.where(cut.mask, out.logprobs, 0.0),
                       sampled_logprobs=np.where(cut.mask, out.sampled_logprobs, 0.0),
                       finished_by_stop=np.asarray(out.finished_by_stop) | cut.stopped)


def sample_and_score(run, params, records: list[dict], prompt_ids: list[list[int]], width: int,
                     rng: jax.Array) -> Rollouts:
    """Rollouts of every process's prompts × G, sampled with `params`.

    Each process brings its own prompts; all of them are sampled as one global batch, and each
    process decodes and scores the rows of its own prompts (a code sandbox then runs on every
    host, each on its share). Rewards and the sampler's outputs come back whole to every process.
    """
    config, rl = run.config, run.config.rl
    g = rl.num_generations
    prompt_tokens, prompt_lengths = sharding.all_rows(sampling.pad_prompts(prompt_ids, width))
    out = sharding.all_rows(sampling.sample_batch(
        run.model_config, params, prompt_tokens, prompt_lengths, rng,
        max_new_tokens=rl.max_new_tokens, n=g,
        **dataclasses.asdict(sampling.strategies.from_config(rl.sampling)), stop_tokens=run.stop_tokens, mesh=run.mesh, rules=run.rules))
    out = cut_at_stop_strings(out, run.tokenizer, stop_strings(config))
    first = jax.process_index() * len(prompt_ids) * g
    own = np.arange(first, first + len(prompt_ids) * g)
    lengths = out.lengths[own]
    texts = run.tokenizer.batch_decode([row[:n] for row, n in zip(out.tokens[own], lengths)],
                                       skip_special_tokens=True)
    prompts = [run.tokenizer.decode(ids) for ids in prompt_ids for _ in range(g)]
    fields = {key: [r[key] for r in records for _ in range(g)] for key in records[0]
              if key not in ("question", "prompt")}
    # The question before templating: the language reward's target language is the question's.
    fields["question"] = [data.prompt_text(r) for r in records for _ in range(g)]
    fields["completion_lengths"] = lengths.tolist()
    fields["finished_by_stop"] = out.finished_by_stop[own].tolist()
    rewards, failed, components = sharding.all_rows(rewards_lib.score(
        dict(config.rewards), prompts, texts, fields, params=config.rewards_params.to_dict()))
    rollouts = Rollouts(
        prompt_tokens=np.repeat(prompt_tokens, g, axis=0),
        prompt_lengths=np.repeat(prompt_lengths, g), completions=np.asarray(out.tokens),
        mask=np.asarray(out.mask, np.float32), logprobs=np.asarray(out.logprobs),
        sampler_logprobs=np.asarray(out.sampled_logprobs),
        ref_logprobs=None, advantages=np.zeros_like(rewards), rewards=rewards,
        reward_failed=np.asarray(failed, bool), reward_components=components,
        lengths=np.asarray(out.lengths),
        finished_by_stop=np.asarray(out.finished_by_stop),
        texts=dict(zip(own.tolist(), texts)), prompts=dict(zip(own.tolist(), prompts)))
    return rollouts


def collect(run, params, iterator, rng: jax.Array) -> tuple[Rollouts, dict]:
    """One step's rollouts (rl.prompts_per_step prompts × G) and the reward metrics of every row
    sampled (before the filtering below).

    With rl.filter_groups (DAPO's dynamic sampling), groups whose rewards are all equal are
    replaced by fresh prompts' (up to rl.max_filter_rounds extra rounds); informative groups
    come first, in sampling order, then uninformative ones fill what is missing.
    """
    rl = run.config.rl
    g, needed = rl.num_generations, rl.prompts_per_step
    rounds = []
    for round_index in range(1 + (rl.max_filter_rounds if rl.filter_groups else 0)):
        records, prompt_ids = next(iterator)
        rounds.append(sample_and_score(run, params, records, prompt_ids, iterator.width,
                                       jax.random.fold_in(rng, round_index)))
        if not rl.filter_groups or sum(
                informative_groups(r.rewards, g).sum() for r in rounds) >= needed:
            break
    pooled = Rollouts.concatenate(rounds)
    if rl.filter_groups:
        flags = informative_groups(pooled.rewards, g)
        groups = np.concatenate([np.flatnonzero(flags), np.flatnonzero(~flags)])[:needed]
    else:
        groups = np.arange(needed)
    selected = pooled.take((groups[:, None] * g + np.arange(g)).reshape(-1))
    metrics = rewards_lib.metrics(pooled.reward_components, pooled.rewards)
    metrics["groups_informative"] = float(np.mean(informative_groups(selected.rewards, g)))
    return selected, metrics
