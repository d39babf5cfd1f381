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

from r1jax import data, sampling, sharding
from r1jax import rewards as rewards_lib
from r1jax.data import mixture as mixture_lib
from r1jax.rewards.registry import VERIFIES
from r1jax.rewards.reward_model import final_answer
from r1jax.train import metrics as metrics_lib
from r1jax.train import run as run_lib


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
      advantages: float32[N] (zeros until `with_advantages`), or float32[N, C] per token (PPO's
        GAE advantages, `train.grpo.with_ppo_targets`).
      rewards: float32[N] the weighted sum of the configured rewards.
      reward_failed: bool[N] a reward could not score the row (counted as 0 in `rewards`).
      reward_components: {name: float32[N]} each reward's scores, NaN where it failed.
      lengths: int32[N] generated tokens; finished_by_stop: bool[N] ended by a stop token.
      texts, prompts: {row: str} of this process's rows (host only; not a pytree leaf).
      source: int32[N] the row's prompt source (its index in config.mixture; 0 without one).
      final_answer_empty: bool[N] nothing after `</think>` (a reward model's reward-hacking
        watch: a policy winning it by saying nothing shows here).
      values, returns: float32[N, C] PPO's V_old and value targets, or None (GRPO).
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
    source: Optional[np.ndarray] = None
    final_answer_empty: Optional[np.ndarray] = None
    values: Optional[np.ndarray] = None
    returns: Optional[np.ndarray] = None

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
        return self.replace(reward_components={}, texts={}, prompts={}, source=None,
                            final_answer_empty=None)

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


def reward_sources(config) -> dict[str, tuple[dict, dict, str]]:
    """name -> (rewards {name: weight}, their params, config key of the params) of each prompt
    source: config.mixture's, or one source "" of config.rewards."""
    if not config.mixture:
        return {"": (dict(config.rewards), config.rewards_params.to_dict(), "rewards_params")}
    return {name: (dict(s.rewards), s.rewards_params.to_dict(), f"mixture.{name}.rewards_params")
            for name, s in config.mixture.items()}


def check_rewards(config) -> None:
    """Start-up checks of every source's rewards (r1jax.rewards.check): each fits its data
    kind, its params are known, and a reward model's path holds one, before any model is
    loaded; a mixture's proportions give every source prompts."""
    if config.mixture:
        run_lib.require(not config.rewards, "rewards", dict(config.rewards),
                    "empty when config.mixture names the prompt sources (each has its rewards)")
        mixture_lib.source_counts({n: s.proportion for n, s in config.mixture.items()},
                                   config.rl.prompts_per_step, jax.process_count())
    for name, (specs, params, key) in reward_sources(config).items():
        kind = config.mixture[name].data.kind if config.mixture else config.data.kind
        run_lib.require(bool(specs), key.replace("rewards_params", "rewards"), specs,
                    "at least one reward")
        rewards_lib.check_rewards_fit_data(
            kind, [rewards_lib.resolve(n, params.get(n))[0] for n in specs])
        rewards_lib.check(specs, params, key)


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


def validate_batching(rl, mesh_batch: int) -> None:
    """Start-up checks of rl.batching and rl.num_slots (continuous batching's decode slots)."""
    run_lib.require(rl.batching in sampling.BATCHING, "rl.batching", rl.batching,
                    f"one of {sampling.BATCHING}")
    run_lib.require(isinstance(rl.num_slots, int) and rl.num_slots >= 0, "rl.num_slots",
                    rl.num_slots, "an integer >= 0 (0: one slot per rollout of a step)")
    if rl.batching == "continuous":
        slots = rl.num_slots or rl.prompts_per_step * rl.num_generations
        run_lib.require(slots % mesh_batch == 0, "rl.num_slots", rl.num_slots,
                        f"a multiple of the mesh's batch size ({mesh_batch}): the slots are "
                        "split over it")


def sample(run, params, prompt_tokens: np.ndarray, prompt_lengths: np.ndarray,
           rng: jax.Array) -> sampling.SampleOutput:
    """G completions of each left-padded prompt (int32[B, P], the whole batch on every process),
    as host arrays of every row on every process, batched as rl.batching says: "static" (one
    batch of B × G rows, decoded until its longest ends) or "continuous" (rl.num_slots slots,
    0: B × G, each refilled as its sample ends). The same tokens either way."""
    rl = run.config.rl
    settings = dict(max_new_tokens=rl.max_new_tokens, n=rl.num_generations,
                    **dataclasses.asdict(sampling.strategies.from_config(rl.sampling)),
                    stop_tokens=run.stop_tokens, mesh=run.mesh, rules=run.rules)
    if rl.batching == "continuous":
        return sampling.sample_continuous(
            run.model_config, params, prompt_tokens, prompt_lengths, rng,
            num_slots=rl.num_slots or len(prompt_tokens) * rl.num_generations, **settings)
    return sharding.all_rows(sampling.sample_batch(run.model_config, params, prompt_tokens,
                                                   prompt_lengths, rng, **settings))


def sample_and_score(run, params, records: list[dict], prompt_ids: list[list[int]], width: int,
                     rng: jax.Array) -> tuple[Rollouts, float]:
    """Rollouts of every process's prompts × G, sampled with `params`, and the seconds the
    sampler took (the rest is decoding texts and scoring them).

    Each process brings its own prompts; all of them are sampled as one global batch, and each
    process decodes and scores the rows of its own prompts (a code sandbox then runs on every
    host, each on its share). Rewards and the sampler's outputs come back whole to every process.
    """
    config, rl = run.config, run.config.rl
    g = rl.num_generations
    watch = metrics_lib.Stopwatch()
    prompt_tokens, prompt_lengths = sharding.all_rows(sampling.pad_prompts(prompt_ids, width))
    out = sample(run, params, prompt_tokens, prompt_lengths, rng)
    sample_seconds = watch.lap()
    out = cut_at_stop_strings(out, run.tokenizer, stop_strings(config))
    first = jax.process_index() * len(prompt_ids) * g
    own = np.arange(first, first + len(prompt_ids) * g)
    lengths = out.lengths[own]
    texts = run.tokenizer.batch_decode([row[:n] for row, n in zip(out.tokens[own], lengths)],
                                       skip_special_tokens=True)
    prompts = [run.tokenizer.decode(ids) for ids in prompt_ids for _ in range(g)]
    rewards, failed, components, source = sharding.all_rows(score_by_source(
        config, records, prompts, texts, lengths, out.finished_by_stop[own]))
    empty = sharding.all_rows(np.array([not final_answer(t) for t in texts], bool))
    rollouts = Rollouts(
        prompt_tokens=np.repeat(prompt_tokens, g, axis=0),
        prompt_lengths=np.repeat(prompt_lengths, g), completions=np.asarray(out.tokens),
        mask=np.asarray(out.mask, np.float32), logprobs=np.asarray(out.logprobs),
        sampler_logprobs=np.asarray(out.sampled_logprobs),
        ref_logprobs=None, advantages=np.zeros_like(rewards), rewards=rewards,
        reward_failed=np.asarray(failed, bool), reward_components=components,
        lengths=np.asarray(out.lengths),
        finished_by_stop=np.asarray(out.finished_by_stop),
        texts=dict(zip(own.tolist(), texts)), prompts=dict(zip(own.tolist(), prompts)),
        source=source, final_answer_empty=empty)
    return rollouts, sample_seconds


def score_by_source(config, records: list[dict], prompts: list[str], texts: list[str],
                    lengths: np.ndarray, finished: np.ndarray):
    """(total float32[N], failed bool[N], components {reward: float32[N]}, source int32[N]) of
    N = len(records) × G rows: each row scored by its prompt source's rewards (`score_rows`;
    rows of a source that does not use a reward have NaN in its component).
    """
    g = config.rl.num_generations
    sources = reward_sources(config)
    total, failed = np.zeros((len(texts),), np.float32), np.zeros((len(texts),), bool)
    components = {reward: np.full((len(texts),), np.nan, np.float32)
                  for specs, _, _ in sources.values() for reward in specs}
    source = np.zeros((len(texts),), np.int32)
    for index, (name, (specs, params, _)) in enumerate(sources.items()):
        mine = [i for i, r in enumerate(records) if r.get(mixture_lib.SOURCE_KEY, "") == name]
        if not mine:
            continue
        rows = (np.asarray(mine)[:, None] * g + np.arange(g)).reshape(-1)
        t, f, c = score_rows(specs, params, [records[i] for i in mine], g,
                             [prompts[i] for i in rows], [texts[i] for i in rows],
                             np.asarray(lengths)[rows], np.asarray(finished)[rows])
        total[rows], failed[rows], source[rows] = t, f, index
        for reward, scores in c.items():
            components[reward][rows] = scores
    return total, failed, components, source


def score_rows(specs: dict, params: dict, records: list[dict], g: int, prompts: list[str],
               texts: list[str], lengths: np.ndarray, finished: np.ndarray):
    """`rewards_lib.score` of the G completions of each of `records` (rows record-major; prompt
    texts as rendered, lengths int[N], finished bool[N]). The rewards see the records' fields
    and `question` (the text before templating: the language reward's target language, a
    reward model's user turn)."""
    fields = {key: [r[key] for r in records for _ in range(g)] for key in records[0]
              if key not in ("question", "prompt", mixture_lib.SOURCE_KEY)}
    fields["question"] = [data.prompt_text(r) for r in records for _ in range(g)]
    fields["completion_lengths"] = np.asarray(lengths).tolist()
    fields["finished_by_stop"] = np.asarray(finished).tolist()
    return rewards_lib.score(specs, prompts, texts, fields, params=params)


def reward_model_sources(config) -> list[str]:
    """The mixture's sources scored by at least one reward model (general prompts)."""
    if not config.mixture:
        return []
    return [name for name, (specs, params, _) in reward_sources(config).items()
            if any(rewards_lib.resolve(r, params.get(r))[0] == "reward_model" for r in specs)]


def source_metrics(config, rollouts: Rollouts) -> dict:
    """Per prompt source s of a mixture: `s/reward` (total), `s/reward/<name>` and
    `s/reward_errors/<name>` (r1jax.rewards.metrics over its rows), `s/accuracy` (the mean of
    its correctness rewards, when it has one), `s/response_length` (tokens) and
    `s/final_answer_empty` (share)."""
    out = {}
    for index, (name, (specs, params, _)) in enumerate(reward_sources(config).items()):
        rows = rollouts.source == index
        if not rows.any():
            continue
        m = rewards_lib.metrics({r: rollouts.reward_components[r][rows] for r in specs},
                                rollouts.rewards[rows])
        out.update({f"{name}/{k.replace('reward/total', 'reward')}": v for k, v in m.items()})
        verifiers = [r for r in specs
                     if rewards_lib.resolve(r, params.get(r))[0] in VERIFIES]
        if verifiers:
            out[f"{name}/accuracy"] = float(np.mean(
                [np.nan_to_num(rollouts.reward_components[r][rows]) for r in verifiers]))
        out[f"{name}/response_length"] = float(rollouts.lengths[rows].mean())
        out[f"{name}/final_answer_empty"] = float(rollouts.final_answer_empty[rows].mean())
    return out


def collect(run, params, iterator, rng: jax.Array) -> tuple[Rollouts, dict]:
    """One step's rollouts (rl.prompts_per_step prompts × G) and the reward metrics of every row
    sampled (before the filtering below), with `sample_seconds`: the sampler's share of the
    time (the rest decodes texts, scores, gathers and filters).

    With rl.filter_groups (DAPO's dynamic sampling), groups whose rewards are all equal are
    replaced by fresh prompts' (up to rl.max_filter_rounds extra rounds); informative groups
    come first, in sampling order, then uninformative ones fill what is missing.
    """
    rl = run.config.rl
    g, needed = rl.num_generations, rl.prompts_per_step
    rounds, sample_seconds = [], 0.0
    for round_index in range(1 + (rl.max_filter_rounds if rl.filter_groups else 0)):
        records, prompt_ids = next(iterator)
        rollouts, seconds = sample_and_score(run, params, records, prompt_ids, iterator.width,
                                             jax.random.fold_in(rng, round_index))
        rounds.append(rollouts)
        sample_seconds += seconds
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
    if run.config.mixture:
        metrics = {"reward/total": float(pooled.rewards.mean()),
                   **source_metrics(run.config, pooled)}
    else:
        metrics = rewards_lib.metrics(pooled.reward_components, pooled.rewards)
    metrics["groups_informative"] = float(np.mean(informative_groups(selected.rewards, g)))
    metrics["sample_seconds"] = sample_seconds
    return selected, metrics
