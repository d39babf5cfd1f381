"""Reward-model training: a backbone and a scalar head fitted to preference pairs with the
Bradley–Terry loss (r1jax.losses.reward_model).

Pairs are rendered with the chat template and tokenised once at start-up (r1jax.data.pairs);
the loop walks them in a seeded order, so resuming restores the exact position. WORKDIR then
holds, beside the checkpoints, reward_model.json: how the model reads text (seq_len) and its
rewards' mean and std on the held-out pairs, which `rewards.get("reward_model", ...)` uses.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from r1jax import data, distributed, sharding
from r1jax.data import pairs as pairs_lib
from r1jax.data.pairs import PairBatch
from r1jax.eval import preference
from r1jax.losses.reward_model import bradley_terry_loss
from r1jax.models import reward_model as rm
from r1jax.rewards.reward_model import INFO_FILE
from r1jax.train import metrics as metrics_lib
from r1jax.train import run as run_lib
from r1jax.train import step as step_lib

log = logging.getLogger("r1jax")


def pair_rewards(model_config, params, batch: PairBatch) -> jax.Array:
    """float32[P, 2] rewards of the chosen ([:, 0]) and rejected ([:, 1]) sides, one forward
    pass over the 2P rows."""
    p, _, t = batch.tokens.shape
    r = rm.rewards(model_config, params, batch.tokens.reshape(2 * p, t),
                   batch.lengths.reshape(2 * p))
    return r.reshape(p, 2)


def rm_update(state: run_lib.TrainState, batch: PairBatch, *, model_config, optimizer,
              num_micro_batches, margin, center_coef, nan_policy
              ) -> tuple[run_lib.TrainState, dict]:
    """One optimizer update; the loss is the mean over the batch's pairs."""
    def loss_fn(params, mb: PairBatch):
        r = pair_rewards(model_config, params, mb)
        return bradley_terry_loss(r[:, 0], r[:, 1], margin=margin, center_coef=center_coef)

    weights = jnp.full((num_micro_batches,), 1.0 / num_micro_batches)
    return step_lib.apply_gradients(loss_fn, state, batch, weights, optimizer=optimizer,
                                    num_micro_batches=num_micro_batches, nan_policy=nan_policy)


def validate_config(config: ml_collections.ConfigDict, mesh_batch: int):
    rc = config.reward_model
    run_lib.require(config.data.kind == "preference", "data.kind", config.data.kind,
                    "'preference'")
    run_lib.require(rc.invalid_pairs in pairs_lib.INVALID_PAIRS, "reward_model.invalid_pairs",
                    rc.invalid_pairs, f"one of {pairs_lib.INVALID_PAIRS}")
    run_lib.require(rc.margin >= 0, "reward_model.margin", rc.margin, "a float >= 0")
    run_lib.require(rc.center_coef >= 0, "reward_model.center_coef", rc.center_coef,
                    "a float >= 0")
    run_lib.require(
        rc.batch_size % (rc.num_micro_batches * mesh_batch) == 0, "reward_model.batch_size",
        rc.batch_size, f"a multiple of num_micro_batches × the mesh's data×fsdp size "
        f"({rc.num_micro_batches} × {mesh_batch})")
    run_lib.validate_common(config)
    if rc.invalid_pairs == "error" and config.data.input:
        # Named by file and line before anything is prepared or loaded (`load_pairs` names
        # a prepared data set's bad pairs by id, where there is no file to point at).
        pairs_lib.check_file(config.data.input,
                             "fix the line, or set --config.reward_model.invalid_pairs=drop")


def load_pairs(config, tokenizer, split: str,
               limit: int | None = None) -> tuple[PairBatch, np.ndarray]:
    """The valid pairs of one split, tokenised (see r1jax.data.pairs), and int[P, 2] the
    characters of their chosen and rejected responses (for the length baselines)."""
    records = data.open_split(config.data, split, limit)
    records = pairs_lib.valid_pairs(records, invalid=config.reward_model.invalid_pairs,
                                    source=f"data set {config.data.name!r} split {split!r}")
    batch, stats = pairs_lib.tokenize_pairs(records, tokenizer, config.reward_model.seq_len)
    log.info("Reward model %s split: %s", split, stats)
    return batch, np.array([[len(r["chosen"]), len(r["rejected"])] for r in records])


def held_out_rewards(run, params, held_out: PairBatch, score) -> np.ndarray:
    """float32[N, 2] rewards of the held-out pairs, scored in batches of batch_size (the last
    one filled with repeats that are then dropped); each process feeds its share of a batch."""
    size, n = run.config.reward_model.batch_size, held_out.num_pairs
    local = size // jax.process_count()
    offset = jax.process_index() * local
    out = [np.asarray(score(params, run_lib.global_batch(
        run, held_out.take(np.arange(i + offset, i + offset + local) % n))))
        for i in range(0, n, size)]
    return np.concatenate(out)[:n]


def write_info(run, metrics: dict):
    """WORKDIR/reward_model.json (see the module docstring); process 0 writes."""
    if not distributed.is_main_process():
        return
    info = {"seq_len": run.config.reward_model.seq_len,
            "reward_mean": metrics.get("eval_reward_mean", 0.0),
            "reward_std": metrics.get("eval_reward_std", 1.0)}
    with open(os.path.join(run.workdir, INFO_FILE), "w") as f:
        json.dump(info, f, indent=2)


def initial_backbone(run):
    """The loaded backbone, or a seeded random one created on its shards."""
    if run.initial_params is not None:
        return run.initial_params
    return sharding.init_params_sharded(run.model_config, jax.random.key(run.config.train.seed),
                                        run.mesh, run.rules)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes) reward-model training in workdir; returns the last step's metrics."""
    rc, tc = config.reward_model, config.train
    run = run_lib.start(config, workdir, validate_config)
    run = dataclasses.replace(
        run, param_shardings=rm.param_shardings(run.model_config, run.mesh, run.rules))
    train_pairs, _ = load_pairs(config, run.tokenizer, config.data.train_split,
                                rc.max_train_pairs or None)
    held_out, held_out_lengths = (load_pairs(config, run.tokenizer, config.data.eval_split,
                                             rc.eval_pairs) if rc.eval_pairs else (None, None))
    iterator = data.BatchIterator(
        list(range(train_pairs.num_pairs)), global_batch_size=rc.batch_size,
        seed=config.data.seed, process_index=jax.process_index(),
        process_count=jax.process_count())
    schedule = run_lib.learning_rate_schedule(config.optimizer, tc.num_steps)
    optimizer = run_lib.make_optimizer(config.optimizer, schedule, run.model_config)
    params = rm.shard_params(run.model_config, initial_backbone(run),
                             rm.init_head(run.model_config, tc.seed), run.mesh, run.rules)
    state = run_lib.init_state(run, optimizer, with_reference=False, params=params)
    state, step = run_lib.restore(run, state, iterator)
    update = run_lib.jit_update(run, state, functools.partial(
        rm_update, model_config=run.model_config, optimizer=optimizer,
        num_micro_batches=rc.num_micro_batches, margin=rc.margin, center_coef=rc.center_coef,
        nan_policy=tc.nan_policy))
    score = run_lib.jit_forward(run, functools.partial(pair_rewards, run.model_config),
                                replicated_output=True)

    def evaluate(params) -> dict:
        if held_out is None:
            return {}
        rewards = held_out_rewards(run, params, held_out, score)
        return {f"eval_{k}": v for k, v in
                preference.pair_metrics(rewards, held_out_lengths).items()}

    if step == 0:
        run.writer.log(0, evaluate(state.params), tc.num_steps)
    metrics = {}
    while step < tc.num_steps:
        step += 1
        run_lib.trace_steps(run, step)
        watch = metrics_lib.Stopwatch()
        batch = train_pairs.take(np.asarray(next(iterator)))
        state, m = update(state, run_lib.global_batch(run, batch))
        metrics = {k: float(v) for k, v in jax.device_get(m).items()}
        metrics_lib.check_finite(metrics["loss"], step, tc.nan_policy)
        metrics.update(seconds_per_step=watch.lap(), learning_rate=float(schedule(step - 1)))
        if run_lib.is_due(step, tc.eval_every, tc.num_steps):
            metrics.update(evaluate(state.params))
        if run_lib.is_due(step, tc.log_every, tc.num_steps) or "eval_pair_accuracy" in metrics:
            run.writer.log(step, metrics, tc.num_steps)
        run_lib.save(run, state, step, iterator)
    write_info(run, metrics if "eval_pair_accuracy" in metrics else evaluate(state.params))
    run_lib.finish(run, state, step, iterator)
    return metrics
