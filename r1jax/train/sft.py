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
from r1jax.losses.sft import sft_loss
from r1jax.models import transformer
from r1jax.train import loop, prompts as prompts_lib, state as setup, step as step_lib

log = logging.getLogger("r1jax")

TRAIN_ON = ("assistant", "completion", "all")


def sft_logits(model_config, params, batch) -> jax.Array:
    """float32[B, T, V] logits of packed rows (segments never attend to each other)."""
    logits, _ = transformer.forward(model_config, params, batch["inputs"], batch["positions"],
                                    batch["segment_ids"])
    return logits


def sft_update(params, opt_state, batch, *, model_config, optimizer, num_micro_batches, z_loss,
               nan_policy):
    """One AdamW update; the loss is the token mean over the whole batch."""
    def loss_fn(p, mb):
        return sft_loss(sft_logits(model_config, p, mb), mb["targets"], mb["weights"],
                        z_loss=z_loss)

    tokens = batch["weights"].reshape(num_micro_batches, -1).sum(axis=1)
    weights = tokens / jnp.maximum(tokens.sum(), 1.0)
    return step_lib.apply_gradients(loss_fn, params, opt_state, batch, weights,
                                    optimizer=optimizer, num_micro_batches=num_micro_batches,
                                    nan_policy=nan_policy)


def eval_loss(model_config, params, batch) -> tuple[jax.Array, jax.Array]:
    """(summed cross-entropy, trained tokens) of a batch, to average over many batches."""
    loss, metrics = sft_loss(sft_logits(model_config, params, batch), batch["targets"],
                             batch["weights"])
    return loss * metrics["tokens"], metrics["tokens"]


def build_examples(data_config, sft_config, tokenizer, split: str) -> list[packing.Example]:
    """Tokenised examples of one split of the configured data set (see module docstring)."""
    source = prompts_lib.open_split(data_config, split)
    records = [source[i] for i in range(len(source))]
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
    setup.require(sc.train_on in TRAIN_ON, "sft.train_on", sc.train_on, f"one of {TRAIN_ON}")
    setup.require(sc.overlong in packing.OVERLONG_POLICIES, "sft.overlong", sc.overlong,
                  f"one of {packing.OVERLONG_POLICIES}")
    setup.require(sc.z_loss >= 0, "sft.z_loss", sc.z_loss, "a float >= 0")
    setup.require(
        sc.batch_size % (sc.num_micro_batches * mesh_batch) == 0, "sft.batch_size",
        sc.batch_size, f"a multiple of num_micro_batches × the mesh's data×fsdp size "
        f"({sc.num_micro_batches} × {mesh_batch})")
    setup.validate_common(config)


def _packed(config, tokenizer, split):
    examples = build_examples(config.data, config.sft, tokenizer, split)
    arrays, stats = packing.pack(examples, config.sft.seq_len, packing=config.sft.packing,
                                 overlong=config.sft.overlong)
    log.info("SFT %s split: %s", split, stats)
    return arrays, stats


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes) SFT in workdir; returns the last step's metrics."""
    state = setup.TrainerState.create(config, workdir, validate_config)
    sc, tc = config.sft, config.train
    model_config = state.model_config
    rows, pack_stats = _packed(config, state.tokenizer, config.data.train_split)
    held_out = _packed(config, state.tokenizer, config.data.eval_split)[0] if sc.eval_rows else None
    state.iterator = data.BatchIterator(
        list(range(len(rows["inputs"]))), global_batch_size=sc.batch_size, seed=config.data.seed,
        process_index=jax.process_index(), process_count=jax.process_count())
    update = state.jit_update(functools.partial(
        sft_update, model_config=model_config, num_micro_batches=sc.num_micro_batches,
        z_loss=sc.z_loss, nan_policy=tc.nan_policy), total_updates=tc.num_steps)
    loss_sums = state.jit_forward(
        lambda params, batch: jnp.stack(eval_loss(model_config, params, batch)),
        replicated_output=True)
    state.restore_or_start(with_reference=False)

    def held_out_loss() -> dict:
        if held_out is None:
            return {}
        n = min(sc.eval_rows, len(held_out["inputs"])) // sc.batch_size * sc.batch_size
        local = sc.batch_size // jax.process_count()  # each process feeds its own rows
        offset = jax.process_index() * local
        sums = [np.asarray(loss_sums(state.params, state.to_device(
            {k: v[i + offset:i + offset + local] for k, v in held_out.items()})))
            for i in range(0, n, sc.batch_size)]
        total = np.sum(sums, axis=0)
        return {"eval_loss": float(total[0] / max(total[1], 1.0))}

    if state.step == 0:
        state.log(0, {**held_out_loss(), **state.evaluate_and_log(0, log_now=False)})
    metrics = {}
    while state.step < tc.num_steps:
        step = state.step + 1
        watch = loop.Stopwatch()
        indices = next(state.iterator)
        batch = state.to_device({k: v[indices] for k, v in rows.items()})
        state.params, state.opt_state, m = update(state.params, state.opt_state, batch)
        metrics = {k: float(v) for k, v in jax.device_get(m).items()}
        state.step = step
        loop.check_finite(metrics["loss"], step, tc.nan_policy)
        seconds = watch.lap()
        metrics.update(seconds_per_step=seconds,
                       tokens_per_second=float(rows["weights"][indices].size) / seconds,
                       learning_rate=float(state.learning_rate(step)),
                       packing_fill=pack_stats["fill"])
        if state.should_evaluate(step):
            metrics.update(held_out_loss())
            metrics.update(state.evaluate_and_log(step, log_now=False))
        state.log(step, metrics)
        state.save_checkpoint()
    state.finish()
    return metrics
