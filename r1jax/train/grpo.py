"""GRPO training (R1-Zero and reasoning RL): rollout → reward → group advantage → clipped update.

One step:
  1. take `prompts_per_step` prompts and sample G completions each (one prefill per prompt);
  2. score them with the configured rule rewards; A = (r - mean_group) / std_group;
     (DAPO dynamic sampling: groups whose rewards are all equal are replaced by fresh ones);
  3. log π_ref of the completions when β > 0;
  4. μ passes, each of `num_mini_batches` AdamW updates of the GRPO loss (r1jax.losses.grpo),
     gradients accumulated over `num_micro_batches`.
"""
from __future__ import annotations

import functools
import logging
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from r1jax import rewards as rewards_lib, sharding
from r1jax import sampling
from r1jax.sampling import sampler
from r1jax.losses import grpo as grpo_lib
from r1jax.losses.logprobs import token_entropy, token_logprobs
from r1jax.models import transformer
from r1jax.train import loop, prompts as prompts_lib, state as setup, step as step_lib

log = logging.getLogger("r1jax")


# ---------------------------------------------------------------------------------------------
# Pure functions of one rollout batch.
# ---------------------------------------------------------------------------------------------

def sequence_inputs(prompt_tokens, prompt_lengths, completions, completion_mask):
    """Concatenates left-padded prompts and right-padded completions into model inputs.

    Args:
      prompt_tokens: int32[N, P] left-padded; prompt_lengths: int32[N].
      completions: int32[N, C]; completion_mask: [N, C], 1 on generated tokens.
    Returns:
      tokens, positions, segment_ids: int32[N, P + C]; padding has segment id 0.
    """
    p = prompt_tokens.shape[1]
    c = completions.shape[1]
    prompt_valid = jnp.arange(p)[None, :] >= (p - prompt_lengths)[:, None]
    prompt_pos = jnp.maximum(jnp.arange(p)[None, :] - (p - prompt_lengths)[:, None], 0)
    completion_pos = prompt_lengths[:, None] + jnp.arange(c)[None, :]
    tokens = jnp.concatenate([prompt_tokens, completions], axis=1)
    positions = jnp.concatenate([prompt_pos, completion_pos], axis=1).astype(jnp.int32)
    segments = jnp.concatenate([prompt_valid, completion_mask > 0], axis=1).astype(jnp.int32)
    return tokens, positions, segments


def completion_logprobs(model_config, params, batch,
                        temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """(log π(completion token), entropy), each float32[N, C], of the model's logits divided by
    the sampling temperature: the policy the rollouts came from, whose logprobs the sampler
    returned as π_old (as TRL and verl do, so the first update's ratio is exactly 1)."""
    tokens, positions, segments = sequence_inputs(
        batch["prompt_tokens"], batch["prompt_lengths"], batch["completions"], batch["mask"])
    p = batch["prompt_tokens"].shape[1]
    # The logits at position t predict token t + 1: completion token j comes from P - 1 + j.
    logits, _ = transformer.forward(model_config, params, tokens, positions, segments,
                                    logits_start=p - 1)
    logits = logits[:, :-1] / jnp.float32(temperature)
    return token_logprobs(logits, batch["completions"]), token_entropy(logits)


def micro_batch_weights(mask: jax.Array, aggregation: str) -> jax.Array:
    """float32[M]: how micro-batch losses (each aggregated alone) sum to the full batch's loss.

    mask: float32[M, b, C]. Means over sequences or over a constant B × C split evenly; a token
    mean weighs each micro-batch by its share of the tokens.
    """
    if aggregation == "token_mean":
        tokens = mask.sum(axis=(1, 2))
        return tokens / jnp.maximum(tokens.sum(), 1.0)
    return jnp.full(mask.shape[:1], 1.0 / mask.shape[0])


def grpo_update(params, opt_state, batch, *, model_config, optimizer, rl, nan_policy):
    """One AdamW update on a mini-batch; returns (params, opt_state, metrics)."""
    def loss_fn(p, mb):
        logprobs, entropy = completion_logprobs(model_config, p, mb, rl.temperature)
        loss, metrics = grpo_lib.grpo_loss(
            logprobs, mb["old_logprobs"], mb["ref_logprobs"] if rl.beta > 0 else None,
            mb["advantages"], mb["mask"], eps_low=rl.eps_low, eps_high=rl.eps_high,
            beta=rl.beta, aggregation=rl.aggregation)
        metrics["entropy"] = (entropy * mb["mask"]).sum() / jnp.maximum(mb["mask"].sum(), 1.0)
        return loss, metrics

    masks = batch["mask"].reshape(rl.num_micro_batches, -1, batch["mask"].shape[1])
    return step_lib.apply_gradients(
        loss_fn, params, opt_state, batch, micro_batch_weights(masks, rl.aggregation),
        optimizer=optimizer, num_micro_batches=rl.num_micro_batches, nan_policy=nan_policy)


def select_groups(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """bool[num_groups]: groups whose rewards are not all equal (they carry a learning signal)."""
    groups = rewards.reshape(-1, group_size)
    return groups.max(axis=1) > groups.min(axis=1)


# ---------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------

def validate_config(config: ml_collections.ConfigDict, mesh_batch: int) -> None:
    """Fails at start-up, naming the key, on values the trainer cannot honour."""
    rl = config.rl
    setup.require(rl.num_generations >= 2, "rl.num_generations", rl.num_generations,
                  "an integer >= 2 (a group of one has no relative advantage)")
    setup.require(rl.beta >= 0, "rl.beta", rl.beta, "a float >= 0")
    setup.require(rl.aggregation in grpo_lib.AGGREGATIONS, "rl.aggregation", rl.aggregation,
                  f"one of {grpo_lib.AGGREGATIONS}")
    setup.require(0 <= rl.eps_low < 1, "rl.eps_low", rl.eps_low, "a float in [0, 1)")
    setup.require(rl.eps_high >= 0, "rl.eps_high", rl.eps_high, "a float >= 0")
    setup.require(rl.temperature > 0, "rl.temperature", rl.temperature,
                  "a float > 0 (GRPO needs sampled, not greedy, rollouts)")
    setup.require(rl.num_iterations >= 1, "rl.num_iterations", rl.num_iterations, "an integer >= 1")
    rollouts = rl.prompts_per_step * rl.num_generations
    per_update = rl.num_mini_batches * rl.num_micro_batches
    setup.require(
        rl.prompts_per_step % mesh_batch == 0 and rollouts % per_update == 0
        and (rollouts // per_update) % mesh_batch == 0, "rl.prompts_per_step", rl.prompts_per_step,
        f"a multiple of the mesh's data×fsdp size ({mesh_batch}: each shard prefills whole "
        f"prompts) making prompts_per_step × num_generations ({rollouts}) divisible by "
        f"num_mini_batches × num_micro_batches × {mesh_batch} ({per_update} × {mesh_batch})")
    setup.validate_common(config)


def _reward_metrics(local: dict) -> dict:
    """Reward metrics of all processes' rows from each process's own: means of the means (every
    process scores as many rows), sums of the error counts."""
    keys = sorted(local)
    gathered = sharding.all_rows(np.array([[local[k] for k in keys]], np.float64))
    return {k: float(gathered[:, i].sum() if k.startswith("reward_errors/")
                     else gathered[:, i].mean()) for i, k in enumerate(keys)}


def _sample(state, records, prompt_ids, rng):
    """Samples G completions for each prompt of every process and scores them.

    Each process brings its own prompts; all of them are sampled as one global batch, and each
    process decodes and scores the rows of its own prompts (a code sandbox then runs on every
    host, each on its share). Rewards and the sampler's outputs come back whole to every process,
    so all of them take the same decisions (group filtering, advantages) on the same numbers.
    Texts and prompts are those of this process's rows, keyed by row.
    """
    cfg, rl = state.config, state.config.rl
    g = rl.num_generations
    prompt_tokens, prompt_lengths = sharding.all_rows(
        sampling.pad_prompts(prompt_ids, state.iterator.width))
    out = sharding.all_rows(sampler.sample_batch(
        state.model_config, state.params, prompt_tokens, prompt_lengths, rng,
        max_new_tokens=rl.max_new_tokens, n=rl.num_generations, temperature=rl.temperature,
        top_k=rl.top_k or None, top_p=rl.top_p if rl.top_p < 1 else None,
        stop_tokens=state.stop_tokens, mesh=state.mesh, rules=state.rules))
    first = jax.process_index() * len(prompt_ids) * g
    own = range(first, first + len(prompt_ids) * g)
    lengths = out.lengths[own.start:own.stop]
    texts = state.tokenizer.batch_decode(
        [row[:n] for row, n in zip(out.tokens[own.start:own.stop], lengths)],
        skip_special_tokens=True)
    prompts = [state.tokenizer.decode(ids) for ids in prompt_ids for _ in range(g)]
    fields = {key: [r[key] for r in records for _ in range(g)] for key in records[0]
              if key not in ("question", "prompt")}
    fields["completion_lengths"] = lengths.tolist()
    fields["finished_by_stop"] = out.finished_by_stop[own.start:own.stop].tolist()
    local_rewards, reward_metrics = rewards_lib.combine(
        dict(cfg.rewards), prompts, texts, fields, params=cfg.rewards_params.to_dict())
    return dict(prompt_tokens=np.repeat(prompt_tokens, g, axis=0),
                prompt_lengths=np.repeat(prompt_lengths, g), output=out,
                rewards=sharding.all_rows(np.asarray(local_rewards, np.float32)),
                texts=dict(zip(own, texts)), prompts=dict(zip(own, prompts)),
                reward_metrics=_reward_metrics(reward_metrics))


def collect_rollouts(state, rng):
    """Rollouts for one step, every process's rows on every process; with rl.filter_groups,
    uninformative groups are replaced by fresh prompts' (up to rl.max_filter_rounds extra
    rounds; DAPO's dynamic sampling)."""
    rl = state.config.rl
    g, needed = rl.num_generations, rl.prompts_per_step
    rounds = []
    for round_index in range(1 + (rl.max_filter_rounds if rl.filter_groups else 0)):
        records, prompt_ids = next(state.iterator)
        rounds.append(_sample(state, records, prompt_ids, jax.random.fold_in(rng, round_index)))
        if not rl.filter_groups:
            break
        informative = sum(select_groups(r["rewards"], g).sum() for r in rounds)
        if informative >= needed:
            break
    groups = []  # (round, group) pairs, informative first, in sampling order
    for keep_informative in (True, False):
        for i, r in enumerate(rounds):
            flags = select_groups(r["rewards"], g) if rl.filter_groups else np.ones(needed, bool)
            groups += [(i, j) for j in np.flatnonzero(flags == keep_informative)]
        if not rl.filter_groups:
            break
    groups = groups[:needed]
    rows = np.concatenate([np.arange(j * g, (j + 1) * g) + i * needed * g for i, j in groups])
    stacked = lambda key: np.concatenate([np.asarray(r[key]) for r in rounds])[rows]
    out = [r["output"] for r in rounds]
    cat = lambda field: np.concatenate([np.asarray(getattr(o, field)) for o in out])[rows]
    by_row = lambda key: {i * needed * g + row: value for i, r in enumerate(rounds)
                          for row, value in r[key].items()}
    metrics = {k: float(np.mean([r["reward_metrics"][k] for r in rounds]))
               for k in rounds[0]["reward_metrics"]}
    metrics["groups_informative"] = float(
        np.mean(select_groups(stacked("rewards"), g)))
    return dict(prompt_tokens=stacked("prompt_tokens"), prompt_lengths=stacked("prompt_lengths"),
                completions=cat("tokens"), mask=cat("mask").astype(np.float32),
                old_logprobs=cat("logprobs"), lengths=cat("lengths"),
                finished_by_stop=cat("finished_by_stop"), rewards=stacked("rewards"),
                texts=by_row("texts"), prompts=by_row("prompts"), text_rows=rows,
                metrics=metrics)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes) GRPO in workdir; returns the last step's metrics."""
    state = setup.TrainerState.create(config, workdir, validate_config)
    rl, tc = config.rl, config.train
    model_config = state.model_config
    updates_per_step = rl.num_iterations * rl.num_mini_batches
    update = state.jit_update(functools.partial(
        grpo_update, model_config=model_config, rl=rl, nan_policy=tc.nan_policy),
        total_updates=tc.num_steps * updates_per_step)
    ref_logprobs_fn = state.jit_forward(
        lambda params, batch: completion_logprobs(model_config, params, batch, rl.temperature)[0])
    state.iterator = prompts_lib.PromptIterator(
        config.data, state.tokenizer, global_batch_size=rl.prompts_per_step,
        max_prompt_len=rl.max_prompt_len, seed=config.data.seed)
    state.restore_or_start(with_reference=rl.beta > 0)
    base_rng = jax.random.key(tc.seed)

    if state.step == 0:
        state.evaluate_and_log(0)
    metrics = {}
    while state.step < tc.num_steps:
        step = state.step + 1
        watch = loop.Stopwatch()
        if rl.beta > 0 and rl.ref_update_every and (step - 1) % rl.ref_update_every == 0:
            state.refresh_reference()
        rollouts = collect_rollouts(state, jax.random.fold_in(base_rng, step))
        sample_seconds = watch.lap()
        mask = rollouts["mask"]
        if rl.mask_truncated:
            mask = mask * rollouts["finished_by_stop"][:, None]
        advantages = grpo_lib.group_advantages(
            jnp.asarray(rollouts["rewards"]), rl.num_generations, scale_by_std=rl.scale_by_std)
        batch = dict(
            prompt_tokens=rollouts["prompt_tokens"], prompt_lengths=rollouts["prompt_lengths"],
            completions=rollouts["completions"], mask=mask,
            old_logprobs=rollouts["old_logprobs"], advantages=np.asarray(advantages),
            ref_logprobs=np.zeros_like(rollouts["old_logprobs"]))  # Replaced when beta > 0.
        # Split on the host, where every process holds the whole batch: each mini-batch is then
        # placed evenly over the batch shards, as the update's in_shardings require.
        minis = [sharding.global_batch_from_whole(m, state.mesh)
                 for m in setup.split_batch(batch, rl.num_mini_batches)]
        for mini in minis if rl.beta > 0 else ():
            mini["ref_logprobs"] = ref_logprobs_fn(state.reference, mini)
        update_metrics = []
        for _ in range(rl.num_iterations):
            for mini in minis:
                state.params, state.opt_state, m = update(state.params, state.opt_state, mini)
                update_metrics.append(m)
        update_metrics = jax.device_get(update_metrics)
        loss = float(np.mean([m["loss"] for m in update_metrics]))
        state.step = step
        loop.check_finite(loss, step, tc.nan_policy)
        seconds = watch.lap() + sample_seconds
        metrics = {k: float(np.mean([m[k] for m in update_metrics])) for k in update_metrics[0]}
        metrics.update(rollouts["metrics"])
        generated = float(rollouts["lengths"].sum())
        metrics.update(
            reward_mean=float(rollouts["rewards"].mean()),
            reward_std=float(rollouts["rewards"].std()),
            completion_length=float(rollouts["lengths"].mean()),
            truncated_fraction=float(1 - rollouts["finished_by_stop"].mean()),
            seconds_per_step=seconds, sample_seconds=sample_seconds,
            tokens_per_second=generated / max(sample_seconds, 1e-9),
            learning_rate=float(state.learning_rate(state.step * updates_per_step)))
        if state.should_evaluate(step):
            metrics.update(state.evaluate_and_log(step, log_now=False))
            state.logger.samples(step, [  # The logging process's own rows.
                {"prompt": rollouts["prompts"][i], "completion": rollouts["texts"][i],
                 "reward": float(rollouts["rewards"][k])}
                for k, i in enumerate(rollouts["text_rows"]) if i in rollouts["texts"]
            ][:tc.log_samples])
        state.log(step, metrics)
        state.save_checkpoint()
    state.finish()
    return metrics
