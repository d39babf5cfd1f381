"""GRPO training (R1-Zero and reasoning RL): rollout → reward → group advantage → clipped update.

One step:
  1. take `prompts_per_step` prompts and sample G completions each (one prefill per prompt);
  2. score them with the configured rule rewards; A = (r - mean_group) / std_group;
     (DAPO dynamic sampling: groups whose rewards are all equal are replaced by fresh ones);
  3. recompute π_old with the trainer's forward pass when compute is not float32 (the sampler's
     bf16 log-probs drift from the trainer's), and log π_ref of the completions when β > 0;
  4. μ passes, each of `num_mini_batches` AdamW updates of the GRPO loss (r1jax.losses.grpo),
     gradients accumulated over `num_micro_batches`.

PPO (rl.algorithm = "ppo") is the same loop with a learned value head beside the policy
(TrainState.params = {"policy", "value"}: models.value_head): after step 3 the values V_old of
the rollouts are computed once (like π_old), the sequence reward goes to each row's last token
(minus β·KL per token when rl.value.kl_mode = "reward"), GAE turns them into per-token
advantages (whitened), and step 4's loss is GRPO's clipped surrogate with those [B, T]
advantages plus rl.value.coef × the clipped value loss (r1jax.losses.ppo). The sampler and
evaluation get the policy's params alone. rl.value.head picks what the value head reads:
"shared", the policy's own final hidden states (one forward pass), or "separate", a value model
of its own (a copy of the policy's weights made at step 0, TrainState.params["value"]
["backbone"], sharded, optimised and checkpointed like the policy: a second forward pass, and
twice the parameters and optimizer state); the value loss then never reaches the policy.
"""
from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from r1jax import data, sharding
from r1jax.losses import grpo as grpo_lib, importance as importance_lib, logprobs as logprobs_lib
from r1jax.losses import ppo as ppo_lib
from r1jax.models import flops, transformer, value_head
from r1jax.train import held_out, metrics as metrics_lib, run as run_lib, step as step_lib
from r1jax.train.rollouts import Rollouts, check_rewards, collect, validate_batching

log = logging.getLogger("r1jax")

ALGORITHMS = ("grpo", "ppo")
VALUE_HEADS = ("shared", "separate")
KL_MODES = ("reward", "loss")


def is_ppo(rl) -> bool:
    return rl.algorithm == "ppo"


def policy_params(params, rl):
    """The policy's params in a state's params: PPO's hold the value head beside them."""
    return params[value_head.POLICY] if is_ppo(rl) else params


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


def completion_logits(model_config, params, batch: Rollouts) -> tuple[jax.Array, object]:
    """(float32[N, C, V] logits predicting each completion token, the MoE router's stats or
    None). Only the C positions that predict a completion token are projected onto the
    vocabulary (the last position, which predicts nothing, would be 1/(C+1) more head work)."""
    hidden, stats = completion_hidden(model_config, params, batch)
    return transformer.head_logits(hidden, transformer.output_head(model_config, params)), stats


def completion_hidden(model_config, params, batch: Rollouts) -> tuple[jax.Array, object]:
    """(final normed hidden states [N, C, E] at the positions whose logits predict each
    completion token (`completion_logits`' positions), the MoE router's stats or None)."""
    tokens, positions, segments = sequence_inputs(
        batch.prompt_tokens, batch.prompt_lengths, batch.completions, batch.mask)
    p = batch.prompt_tokens.shape[1]
    hidden, stats = transformer.forward_with_router_stats(
        model_config, params, tokens, positions, segments, logits_start=p - 1, return_hidden=True)
    return hidden[:, :-1], stats


def completion_logprobs(model_config, params, batch: Rollouts,
                        temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """(log π(completion token), entropy), each float32[N, C], of the model's logits divided by
    the sampling temperature: the policy the rollouts came from, whose logprobs the sampler
    returned as π_old (as TRL and verl do, so the first update's ratio is exactly 1)."""
    logits = logprobs_lib.tempered(completion_logits(model_config, params, batch)[0], temperature)
    return logprobs_lib.token_logprobs_and_entropy(logits, batch.completions)


def micro_batch_weights(mask: jax.Array, aggregation: str) -> jax.Array:
    """float32[M]: how micro-batch losses (each aggregated alone) sum to the full batch's loss.

    mask: float32[M, b, C]. Means over sequences or over a constant B × C split evenly; a token
    mean weighs each micro-batch by its share of the tokens.
    """
    if aggregation == "token_mean":
        tokens = mask.sum(axis=(1, 2))
        return tokens / jnp.maximum(tokens.sum(), 1.0)
    return jnp.full(mask.shape[:1], 1.0 / mask.shape[0])


def grpo_update(state: run_lib.TrainState, batch: Rollouts, *, model_config, optimizer, rl,
                nan_policy, router_bias_rate: float = 0.0) -> tuple[run_lib.TrainState, dict]:
    """One optimizer update of the GRPO loss on a mini-batch of rollouts (then, for MoE models,
    the routing biases' balancing step: `step.balance_experts`)."""
    ppo = is_ppo(rl)
    # PPO with kl_mode "reward" has β inside the rewards (with_ppo_targets), not in the loss.
    loss_beta = 0.0 if ppo and rl.value.kl_mode == "reward" else rl.beta

    def loss_fn(params, mb: Rollouts):
        if ppo:  # one policy pass gives the logits and, with a shared head, the values
            policy = params[value_head.POLICY]
            hidden, router = completion_hidden(model_config, policy, mb)
            logits = transformer.head_logits(hidden, transformer.output_head(model_config, policy))
        else:
            logits, router = completion_logits(model_config, params, mb)
        logits = logprobs_lib.tempered(logits, rl.sampling.temperature)
        logprobs, entropy = logprobs_lib.token_logprobs_and_entropy(logits, mb.completions)
        is_weights, is_metrics = None, {}
        if rl.is_correction != "none":
            is_weights, is_metrics = importance_lib.correction_weights(
                mb.logprobs, mb.sampler_logprobs, mb.mask, rl.is_correction, rl.is_bound)
        loss, metrics = grpo_lib.grpo_loss(
            logprobs, mb.logprobs, mb.ref_logprobs if loss_beta > 0 else None, mb.advantages,
            mb.mask, eps_low=rl.eps_low, eps_high=rl.eps_high, beta=loss_beta,
            aggregation=rl.aggregation, importance_level=rl.importance_level,
            is_weights=is_weights)
        metrics.update(is_metrics)
        if ppo:
            if value_head.is_separate(params):  # the value model's own pass
                hidden, _ = completion_hidden(model_config, value_head.backbone_params(params), mb)
            values = value_head.values(params[value_head.VALUE], hidden)
            v_loss, v_metrics = ppo_lib.value_loss(values, mb.values, mb.returns, mb.mask,
                                                   clip=rl.value.clip, aggregation=rl.aggregation)
            metrics.update(v_metrics, policy_loss=loss, value_loss=v_loss,
                           **ppo_metrics(values, mb))
            loss = loss + rl.value.coef * v_loss
        metrics["entropy"] = (entropy * mb.mask).sum() / jnp.maximum(mb.mask.sum(), 1.0)
        return loss, {**metrics, **step_lib.router_outputs(router)}

    masks = batch.mask.reshape(rl.num_micro_batches, -1, batch.mask.shape[1])
    state, metrics = step_lib.apply_gradients(
        loss_fn, state, batch, micro_batch_weights(masks, rl.aggregation), optimizer=optimizer,
        num_micro_batches=rl.num_micro_batches, nan_policy=nan_policy)
    if not ppo:
        return step_lib.balance_experts(state, metrics, router_bias_rate)
    policy, metrics = step_lib.balance_experts(
        state.replace(params=state.params[value_head.POLICY]), metrics, router_bias_rate)
    return state.replace(params={**state.params, value_head.POLICY: policy.params}), metrics


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    return (x * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def ppo_metrics(values: jax.Array, mb: Rollouts) -> dict:
    """PPO's diagnostics over the counted tokens (all float32[N, C] in): the values' mean, how
    much of the returns' variance V_old explains (1: all, ≤ 0: no better than their mean), the
    advantages the loss sees and, when π_ref was scored, the per-token KL (k1) estimate."""
    mask = mb.mask
    returns_mean = masked_mean(mb.returns, mask)
    returns_var = masked_mean(jnp.square(mb.returns - returns_mean), mask)
    residual = mb.returns - mb.values
    residual_var = masked_mean(jnp.square(residual - masked_mean(residual, mask)), mask)
    advantage_mean = masked_mean(mb.advantages, mask)
    out = dict(
        value_mean=masked_mean(values, mask), return_mean=returns_mean,
        # 0 when the returns do not vary (all rewards equal): there is nothing to explain.
        explained_variance=jnp.where(returns_var > 1e-8,
                                     1.0 - residual_var / jnp.maximum(returns_var, 1e-8), 0.0),
        advantage_mean=advantage_mean,
        advantage_std=jnp.sqrt(masked_mean(jnp.square(mb.advantages - advantage_mean), mask)))
    if mb.ref_logprobs is not None:
        out["kl_k1"] = masked_mean(jnp.where(mask > 0, mb.logprobs - mb.ref_logprobs, 0.0), mask)
    return out


def ppo_targets(params, batch: Rollouts, *, model_config, rl) -> tuple[jax.Array, ...]:
    """(V_old, advantages, returns), each float32[N, C] and 0 where mask is 0, of a rollout batch
    under the state's params (before any update, like π_old).

    Token rewards: batch.rewards [N] on each row's last counted token, minus β·(log π_old −
    log π_ref) per token with kl_mode "reward" (when β > 0); GAE with rl.value.gamma / lam;
    advantages whitened over the batch's counted tokens when rl.value.whiten_advantages.
    """
    mask = batch.mask
    hidden, _ = completion_hidden(model_config, value_head.backbone_params(params), batch)
    old_values = value_head.values(params[value_head.VALUE], hidden) * mask
    kl = None
    if rl.value.kl_mode == "reward" and rl.beta > 0:
        kl = batch.logprobs - batch.ref_logprobs
    rewards = ppo_lib.token_rewards(batch.rewards, mask, kl, rl.beta)
    advantages, returns = ppo_lib.gae(rewards, old_values, mask, gamma=rl.value.gamma,
                                      lam=rl.value.lam)
    if rl.value.whiten_advantages:
        advantages = ppo_lib.whiten(advantages, mask)
    return old_values, advantages, returns


def with_ppo_targets(batch: Rollouts, targets: tuple[jax.Array, ...]) -> Rollouts:
    """The batch with `ppo_targets`' (V_old, advantages, returns) in place."""
    old_values, advantages, returns = targets
    return batch.replace(values=old_values, advantages=advantages, returns=returns)


def ppo_optimizer(optimizer: optax.GradientTransformation,
                  rl: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """PPO's optimizer of {"policy", "value"}: `optimizer` over the whole tree with a shared value
    head (its few weights share the policy's gradient clipping); with a separate value model,
    one `optimizer` per model (same settings and schedule), so each model's gradients are
    clipped by their own global norm and the value model's never scale the policy's update."""
    if rl.value.head != "separate":
        return optimizer
    labels = {value_head.POLICY: value_head.POLICY, value_head.VALUE: value_head.VALUE}
    return optax.multi_transform({label: optimizer for label in labels.values()}, labels)


def validate_config(config: ml_collections.ConfigDict, mesh_batch: int) -> None:
    """Fails at start-up, naming the key, on values the trainer cannot honour."""
    rl = config.rl
    run_lib.require(rl.num_generations >= 2, "rl.num_generations", rl.num_generations,
                  "an integer >= 2 (a group of one has no relative advantage)")
    run_lib.require(rl.beta >= 0, "rl.beta", rl.beta, "a float >= 0")
    run_lib.require(rl.aggregation in grpo_lib.AGGREGATIONS, "rl.aggregation", rl.aggregation,
                  f"one of {grpo_lib.AGGREGATIONS}")
    run_lib.require(0 <= rl.eps_low < 1, "rl.eps_low", rl.eps_low, "a float in [0, 1)")
    run_lib.require(rl.eps_high >= 0, "rl.eps_high", rl.eps_high, "a float >= 0")
    run_lib.require(rl.importance_level in grpo_lib.IMPORTANCE_LEVELS, "rl.importance_level",
                    rl.importance_level, f"one of {grpo_lib.IMPORTANCE_LEVELS}")
    run_lib.require(rl.is_correction in importance_lib.CORRECTIONS, "rl.is_correction",
                    rl.is_correction, f"one of {importance_lib.CORRECTIONS}")
    run_lib.require(rl.is_bound >= 1, "rl.is_bound", rl.is_bound,
                    "a float >= 1 (a bound below 1 would cut on-policy tokens' weights too)")
    run_lib.require(rl.sampling.temperature > 0, "rl.sampling.temperature",
                    rl.sampling.temperature,
                  "a float > 0 (GRPO needs sampled, not greedy, rollouts)")
    run_lib.require(rl.num_iterations >= 1, "rl.num_iterations", rl.num_iterations, "an integer >= 1")
    rollouts = rl.prompts_per_step * rl.num_generations
    per_update = rl.num_mini_batches * rl.num_micro_batches
    run_lib.require(
        rl.prompts_per_step % mesh_batch == 0 and rollouts % per_update == 0
        and (rollouts // per_update) % mesh_batch == 0, "rl.prompts_per_step", rl.prompts_per_step,
        f"a multiple of the mesh's batch size ({mesh_batch}: each shard prefills whole "
        f"prompts) making prompts_per_step × num_generations ({rollouts}) divisible by "
        f"num_mini_batches × num_micro_batches × {mesh_batch} ({per_update} × {mesh_batch})")
    run_lib.require(rl.algorithm in ALGORITHMS, "rl.algorithm", rl.algorithm,
                    f"one of {ALGORITHMS}")
    validate_batching(rl, mesh_batch)
    if is_ppo(rl):
        validate_value(config)
    check_rewards(config)
    run_lib.validate_common(config)


def validate_value(config: ml_collections.ConfigDict) -> None:
    """Checks of rl.value (read only when rl.algorithm is "ppo")."""
    rl = config.rl
    value = rl.value
    run_lib.require(value.head in VALUE_HEADS, "rl.value.head", value.head,
                    f"one of {VALUE_HEADS}")
    # A separate value model copies the policy's full weights; with LoRA those are a frozen
    # (maybe bfloat16) base that neither the optimizer nor the checkpoints hold.
    run_lib.require(value.head == "shared" or config.model.lora.rank == 0, "rl.value.head",
                    value.head, f"'shared' with model.lora.rank={config.model.lora.rank} (a "
                    f"separate value model needs model.lora.rank=0)")
    run_lib.require(0 < value.gamma <= 1, "rl.value.gamma", value.gamma, "a float in (0, 1]")
    run_lib.require(0 <= value.lam <= 1, "rl.value.lam", value.lam, "a float in [0, 1]")
    run_lib.require(value.clip > 0, "rl.value.clip", value.clip, "a float > 0")
    run_lib.require(value.coef > 0, "rl.value.coef", value.coef,
                    "a float > 0 (0 would leave the value head untrained)")
    run_lib.require(isinstance(value.whiten_advantages, bool), "rl.value.whiten_advantages",
                    value.whiten_advantages, "True or False")
    run_lib.require(value.kl_mode in KL_MODES, "rl.value.kl_mode", value.kl_mode,
                    f"one of {KL_MODES}")
    run_lib.require(rl.importance_level != "sequence", "rl.importance_level",
                    rl.importance_level, "'token' or 'sequence_token' with rl.algorithm='ppo' "
                    "(GSPO's sequence ratio has no per-token gradient for per-token advantages)")


def with_advantages(rollouts: Rollouts, rl) -> Rollouts:
    """Group-relative advantages, and the loss mask: rows a reward failed to score are left out
    of their group's statistics and of the loss; truncated completions too when
    rl.mask_truncated."""
    keep = ~rollouts.reward_failed
    if rl.mask_truncated:
        keep = keep & rollouts.finished_by_stop
    advantages = grpo_lib.group_advantages(
        jnp.asarray(rollouts.rewards), rl.num_generations, scale_by_std=rl.scale_by_std,
        valid=jnp.asarray(~rollouts.reward_failed))
    return rollouts.replace(mask=rollouts.mask * keep[:, None],
                            advantages=np.asarray(advantages))


def recompute_old_logprobs(config: ml_collections.ConfigDict) -> bool:
    """Whether π_old comes from the trainer's forward pass rather than the sampler's log-probs:
    rl.recompute_old_logprobs, or (None) whenever compute is not float32, where the sampler's
    bf16 numbers already put ~10% of tokens' ratios 1% off 1 before any update."""
    if config.rl.recompute_old_logprobs is not None:
        return config.rl.recompute_old_logprobs
    return config.model.dtype != "float32"


@jax.jit
def logprob_mismatch(sampler: jax.Array, trainer: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean |log π_sampler − log π_trainer| over the counted tokens (float32[N, C] each): how far
    the sampler's π_old is from the trainer's forward pass of the same params."""
    return (jnp.abs(sampler - trainer) * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def shuffled_groups(rollouts: Rollouts, group_size: int, rng: np.random.Generator) -> Rollouts:
    """The same rows with whole groups in a random order, so that mini-batches mix informative
    and filler groups (dynamic sampling puts the fillers last)."""
    order = rng.permutation(rollouts.num_rows // group_size)
    return rollouts.take((order[:, None] * group_size + np.arange(group_size)).reshape(-1))


def rollout_metrics(rollouts: Rollouts) -> dict:
    """Rewards and lengths of one step's rollouts."""
    return dict(reward_mean=float(rollouts.rewards.mean()),
                reward_std=float(rollouts.rewards.std()),
                completion_length=float(rollouts.lengths.mean()),
                truncated_fraction=float(1 - rollouts.finished_by_stop.mean()))


def step_throughput(model_config, rollouts: Rollouts, sample_seconds: float,
                    update_seconds: float, num_iterations: int) -> dict:
    """Tokens/s per device and MFU of the step's two phases: `rollout_` (prefill + decode of
    every row: the sampler's forward tokens, each attending to half its sequence on average)
    and `update_` (forward + backward over the padded [N, P + C] batch, num_iterations times).
    sample_seconds is the sampler's alone (rewards are `reward_seconds`)."""
    sequence = rollouts.prompt_lengths + rollouts.lengths
    width = rollouts.prompt_tokens.shape[1] + rollouts.completions.shape[1]
    devices, context = jax.devices(), float(sequence.mean()) / 2
    return {
        **flops.throughput("rollout_", float(sequence.sum()), sample_seconds,
                           flops.inference_flops_per_token(model_config, context), devices),
        **flops.throughput("update_", float(num_iterations * sequence.size * width),
                           update_seconds, flops.train_flops_per_token(model_config, width),
                           devices)}


def sample_rows(rollouts: Rollouts, limit: int) -> list[dict]:
    """A few of this process's rows for samples.jsonl."""
    return [{"prompt": rollouts.prompts[i], "completion": rollouts.texts[i],
             "reward": float(rollouts.rewards[i])} for i in sorted(rollouts.texts)][:limit]


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes) GRPO in workdir; returns the last step's metrics."""
    rl, tc = config.rl, config.train
    run = run_lib.start(config, workdir, validate_config)
    updates_per_step = rl.num_iterations * rl.num_mini_batches
    schedule = run_lib.learning_rate_schedule(config.optimizer, tc.num_steps * updates_per_step)
    optimizer = run_lib.make_optimizer(config.optimizer, schedule, run.model_config)
    iterator = data.prompt_iterator(config.data, config.mixture, run.tokenizer,
                                    global_batch_size=rl.prompts_per_step,
                                    max_prompt_len=rl.max_prompt_len)
    ppo = is_ppo(rl)
    wrap = None
    if ppo:  # the value params go beside the policy's (LoRA's adapters included); a separate
        # value model starts as a copy of the policy's weights.
        optimizer = ppo_optimizer(optimizer, rl)

        def wrap(policy):
            backbone = policy if rl.value.head == "separate" else None
            return value_head.with_value(policy, value_head.init_params(
                run.model_config, run.mesh, run.rules, backbone=backbone))
    state = run_lib.init_state(run, optimizer, with_reference=rl.beta > 0, wrap=wrap)
    state, step = run_lib.restore(run, state, iterator)
    update = run_lib.jit_update(run, state, functools.partial(
        grpo_update, model_config=run.model_config, optimizer=optimizer, rl=rl,
        nan_policy=tc.nan_policy, router_bias_rate=config.optimizer.router_bias_rate))
    policy_logprobs = run_lib.jit_forward(run, lambda params, batch: completion_logprobs(
        run.model_config, params, batch, rl.sampling.temperature)[0])
    if ppo:
        targets = run_lib.jit_forward(
            run, functools.partial(ppo_targets, model_config=run.model_config, rl=rl),
            param_shardings=run_lib.state_shardings(state).params)
    recompute_old = recompute_old_logprobs(config)
    eval_records = held_out.problems(config)
    general = held_out.general_problems(config)
    base_rng = jax.random.key(tc.seed)

    if step == 0:
        params = policy_params(state.params, rl)
        run.writer.log(0, {**held_out.evaluate(run, params, eval_records),
                           **held_out.evaluate_general(run, params, general)}, tc.num_steps)
    metrics, watch = {}, metrics_lib.Stopwatch()
    while step < tc.num_steps:
        step += 1
        run_lib.trace_steps(run, step)
        host_seconds = watch.lap()  # the last step's logging and checkpointing
        if rl.beta > 0 and rl.ref_update_every and (step - 1) % rl.ref_update_every == 0:
            state = run_lib.refreshed_reference(state)
        rollouts, reward_metrics = collect(run, policy_params(state.params, rl), iterator,
                                           jax.random.fold_in(base_rng, step))
        collect_seconds = watch.lap()
        sample_seconds = reward_metrics["sample_seconds"]
        reward_metrics["reward_seconds"] = collect_seconds - sample_seconds
        rollouts = with_advantages(rollouts, rl)
        if rl.num_mini_batches > 1:
            rollouts = shuffled_groups(rollouts, rl.num_generations,
                                       np.random.default_rng([tc.seed, step]))
        # Split on the host, where every process holds the whole batch: each mini-batch is then
        # placed evenly over the batch shards, as the update's in_shardings require.
        minis = [sharding.global_batch_from_whole(m.arrays(), run.mesh)
                 for m in rollouts.split(rl.num_mini_batches)]
        if recompute_old:
            recomputed = [policy_logprobs(policy_params(state.params, rl), m) for m in minis]
            metrics_old = {"sampler_logprob_mismatch": float(np.mean(
                [logprob_mismatch(m.logprobs, r, m.mask) for m, r in zip(minis, recomputed)]))}
            minis = [m.replace(logprobs=r) for m, r in zip(minis, recomputed)]
        else:
            metrics_old = {}
        if rl.beta > 0:
            reference = policy_params(run_lib.reference_params(state), rl)
            minis = [m.replace(ref_logprobs=policy_logprobs(reference, m)) for m in minis]
        if ppo:  # V_old and GAE advantages per mini-batch (whitened over it)
            minis = [with_ppo_targets(m, targets(state.params, m)) for m in minis]
        prepare_seconds = watch.lap()
        update_metrics = []
        for _ in range(rl.num_iterations):
            for mini in minis:
                state, m = update(state, mini)
                update_metrics.append(m)
        update_metrics = jax.device_get(update_metrics)
        metrics = metrics_lib.reduce_updates(update_metrics)
        metrics_lib.check_finite(metrics["loss"], step, tc.nan_policy)
        update_seconds = watch.lap()
        metrics.update(reward_metrics)
        metrics.update(metrics_old)
        metrics.update(rollout_metrics(rollouts))
        metrics.update(
            seconds_per_step=collect_seconds + prepare_seconds + update_seconds,
            prepare_seconds=prepare_seconds, update_seconds=update_seconds,
            host_seconds=host_seconds,
            tokens_per_second=float(rollouts.lengths.sum()) / max(sample_seconds, 1e-9),
            learning_rate=float(schedule(step * updates_per_step - 1)))  # the last update's
        metrics.update(step_throughput(run.model_config, rollouts, sample_seconds,
                                       update_seconds, rl.num_iterations))
        if run_lib.is_due(step, tc.eval_every, tc.num_steps):
            params = policy_params(state.params, rl)
            metrics.update(held_out.evaluate(run, params, eval_records))
            metrics.update(held_out.evaluate_general(run, params, general))
            run.writer.samples(step, sample_rows(rollouts, tc.log_samples))
            metrics["eval_seconds"] = watch.lap()
        if run_lib.is_due(step, tc.log_every, tc.num_steps) or "accuracy" in metrics:
            run.writer.log(step, metrics, tc.num_steps)
        run_lib.save(run, state, step, iterator)
    run_lib.finish(run, state, step, iterator)
    return metrics
