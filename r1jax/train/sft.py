"""Supervised fine-tuning: cold-start SFT, rejection-sampling SFT and distillation.

Examples (chat records, prompt/completion pairs, math Q&A rendered in R1's <think>/<answer>
format) are tokenised and packed into fixed-length rows once at start-up; the loop then walks
the rows in a seeded order, so resuming restores the exact position.
"""
from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from r1jax import data
from r1jax.data import packing
from r1jax.data.packing import Batch
from r1jax.losses.sft import sft_loss
from r1jax.models import flops, transformer
from r1jax.train import held_out, metrics as metrics_lib, run as run_lib, step as step_lib

log = logging.getLogger("r1jax")

TRAIN_ON = ("assistant", "completion", "all")


def sft_logits(model_config, params, batch: Batch) -> jax.Array:
    """float32[B, T, V] logits of packed rows (segments never attend to each other)."""
    return sft_forward(model_config, params, batch)[0]


def sft_forward(model_config, params, batch: Batch,
                dropout_rng: jax.Array | None = None) -> tuple[jax.Array, object]:
    """(logits, the MoE router's stats or None) of packed rows (LoRA dropout on with a key)."""
    return transformer.forward_with_router_stats(model_config, params, batch.inputs,
                                                 batch.positions, batch.segment_ids,
                                                 dropout_rng=dropout_rng)


def sft_update(state: run_lib.TrainState, batch: Batch, *, model_config, optimizer,
               num_micro_batches, z_loss, nan_policy, router_bias_rate: float = 0.0,
               seed: int = 0) -> tuple[run_lib.TrainState, dict]:
    """One optimizer update; the loss is the token mean over the whole batch (then, for MoE
    models, the routing biases' balancing step: `step.balance_experts`).

    LoRA dropout (model.lora.dropout > 0) draws its masks from (seed, update count): one key
    per update, shared by its micro-batches, so a resumed run draws the same masks."""
    dropout_rng = None
    if model_config.lora is not None and model_config.lora.dropout > 0:
        dropout_rng = jax.random.fold_in(jax.random.key(seed), state.updates)

    def loss_fn(params, mb: Batch):
        logits, router = sft_forward(model_config, params, mb, dropout_rng)
        loss, metrics = sft_loss(logits, mb.targets, mb.weights, z_loss=z_loss)
        return loss, {**metrics, **step_lib.router_outputs(router)}

    tokens = batch.weights.reshape(num_micro_batches, -1).sum(axis=1)
    weights = tokens / jnp.maximum(tokens.sum(), 1.0)
    state, metrics = step_lib.apply_gradients(
        loss_fn, state, batch, weights, optimizer=optimizer, num_micro_batches=num_micro_batches,
        nan_policy=nan_policy)
    return step_lib.balance_experts(state, metrics, router_bias_rate)


def eval_loss(model_config, params, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(summed cross-entropy, trained tokens) of a batch, to average over many batches."""
    loss, metrics = sft_loss(sft_logits(model_config, params, batch), batch.targets,
                             batch.weights)
    return loss * metrics["tokens"], metrics["tokens"]


def build_examples(data_config, sft_config, tokenizer, split: str) -> list[packing.Example]:
    """Tokenised examples of one split of the configured data set (see module docstring)."""
    records = data.open_split(data_config, split)
    system = data_config.system or None
    if data_config.kind == "chat":
        return [packing.chat_example(r["messages"], tokenizer, train_on=sft_config.train_on)
                for r in records]
    if data_config.kind == "completion":
        return [packing.completion_example(
            r["prompt"], r["completion"], tokenizer, template=data_config.template,
            system=system, train_on=sft_config.train_on) for r in records]
    if data_config.kind in ("math", "arithmetic"):
        return [packing.completion_example(
            r["question"], packing.r1_completion(r["solution"], r["answer"]), tokenizer,
            template=data_config.template, system=system, train_on=sft_config.train_on)
            for r in records]
    raise ValueError(f"config.data.kind={data_config.kind!r} cannot feed SFT; expected one of "
                     "chat, completion, math, arithmetic.")


def validate_config(config: ml_collections.ConfigDict, mesh_batch: int):
    sc = config.sft
    run_lib.require(sc.train_on in TRAIN_ON, "sft.train_on", sc.train_on, f"one of {TRAIN_ON}")
    run_lib.require(sc.overlong in packing.OVERLONG_POLICIES, "sft.overlong", sc.overlong,
                  f"one of {packing.OVERLONG_POLICIES}")
    run_lib.require(sc.z_loss >= 0, "sft.z_loss", sc.z_loss, "a float >= 0")
    run_lib.require(
        sc.batch_size % (sc.num_micro_batches * mesh_batch) == 0, "sft.batch_size",
        sc.batch_size, f"a multiple of num_micro_batches × the mesh's batch size (data×fsdp×expert) "
        f"({sc.num_micro_batches} × {mesh_batch})")
    run_lib.validate_common(config)


def _packed(config, tokenizer, split):
    examples = build_examples(config.data, config.sft, tokenizer, split)
    arrays, stats = packing.pack(examples, config.sft.seq_len, packing=config.sft.packing,
                                 overlong=config.sft.overlong)
    log.info("SFT %s split: %s", split, stats)
    return arrays, stats


def held_out_loss(run, params, rows: Batch | None, loss_sums) -> dict:
    """{"eval_loss": token-mean cross-entropy over the first sft.eval_rows held-out rows}."""
    sc = run.config.sft
    n = 0 if rows is None else min(sc.eval_rows, rows.num_rows) // sc.batch_size * sc.batch_size
    if n == 0:  # no held-out split, or fewer packed rows than one batch
        return {}
    local = sc.batch_size // jax.process_count()  # each process feeds its own rows
    offset = jax.process_index() * local
    sums = [np.asarray(loss_sums(params, run_lib.global_batch(
        run, rows.take(slice(i + offset, i + offset + local))))) for i in range(0, n, sc.batch_size)]
    total = np.sum(sums, axis=0)
    return {"eval_loss": float(total[0] / max(total[1], 1.0))}


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes) SFT in workdir; returns the last step's metrics."""
    sc, tc = config.sft, config.train
    run = run_lib.start(config, workdir, validate_config)
    rows, pack_stats = _packed(config, run.tokenizer, config.data.train_split)
    held_out_rows = (_packed(config, run.tokenizer, config.data.eval_split)[0]
                     if sc.eval_rows else None)
    if held_out_rows is not None and held_out_rows.num_rows < sc.batch_size:
        log.warning("The %s split packs into %d rows, fewer than sft.batch_size=%d: no eval_loss.",
                    config.data.eval_split, held_out_rows.num_rows, sc.batch_size)
    iterator = data.BatchIterator(
        list(range(rows.num_rows)), global_batch_size=sc.batch_size, seed=config.data.seed,
        process_index=jax.process_index(), process_count=jax.process_count())
    schedule = run_lib.learning_rate_schedule(config.optimizer, tc.num_steps)
    optimizer = run_lib.make_optimizer(config.optimizer, schedule, run.model_config)
    state = run_lib.init_state(run, optimizer, with_reference=False)
    state, step = run_lib.restore(run, state, iterator)
    update = run_lib.jit_update(run, state, functools.partial(
        sft_update, model_config=run.model_config, optimizer=optimizer,
        num_micro_batches=sc.num_micro_batches, z_loss=sc.z_loss, nan_policy=tc.nan_policy,
        router_bias_rate=config.optimizer.router_bias_rate, seed=tc.seed))
    loss_sums = run_lib.jit_forward(
        run, lambda params, batch: jnp.stack(eval_loss(run.model_config, params, batch)),
        replicated_output=True)
    eval_records = held_out.problems(config)

    if step == 0:
        run.writer.log(0, {**held_out_loss(run, state.params, held_out_rows, loss_sums),
                           **held_out.evaluate(run, state.params, eval_records)}, tc.num_steps)
    metrics = {}
    while step < tc.num_steps:
        step += 1
        run_lib.trace_steps(run, step)
        watch = metrics_lib.Stopwatch()
        indices = next(iterator)
        batch = rows.take(np.asarray(indices))
        state, m = update(state, run_lib.global_batch(run, batch))
        metrics = {k: float(v) for k, v in jax.device_get(m).items()}
        metrics_lib.check_finite(metrics["loss"], step, tc.nan_policy)
        seconds = watch.lap()
        metrics.update(seconds_per_step=seconds,
                       tokens_per_second=float(batch.weights.size) / seconds,
                       learning_rate=float(schedule(step - 1)), packing_fill=pack_stats["fill"])
        metrics.update(flops.throughput(
            "", float(batch.weights.size), seconds,
            flops.train_flops_per_token(run.model_config, batch.weights.shape[1]), jax.devices()))
        if run_lib.is_due(step, tc.eval_every, tc.num_steps):
            metrics.update(held_out_loss(run, state.params, held_out_rows, loss_sums))
            metrics.update(held_out.evaluate(run, state.params, eval_records))
        if run_lib.is_due(step, tc.log_every, tc.num_steps) or "accuracy" in metrics:
            run.writer.log(step, metrics, tc.num_steps)
        run_lib.save(run, state, step, iterator)
    run_lib.finish(run, state, step, iterator)
    return metrics
