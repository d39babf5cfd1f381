"""Distillation beyond SFT on traces: a teacher's distributions train the student.

Two modes (distill.mode):
  logits     forward KL(π_T || π_S) at every completion token of given prompt + completion
             records (packed as in SFT), full or over the teacher's top-k, computed chunk by chunk
             from both models' hidden states so [B, T, V] logits are never held
             (losses.distill.chunked_forward_kl).
  on_policy  the student samples G completions per prompt (GRPO's sampler path,
             rollouts.collect); the teacher scores the student's tokens in an inference-only
             forward pass; the per-token reverse KL is the loss (losses.distill.reverse_kl_loss).
             The configured rewards are only logged (the student's sampled accuracy).

The teacher (config.teacher: a HF directory, a .gguf file or an r1jax training workdir, whose
newest checkpoint is read) is sharded with the policy's rules and passed to the compiled
functions beside the state: it is never in the optimizer state or the checkpoints. Teacher and
student must share a tokenizer. `teacher_tokens` counts the tokens the teacher's forward passes
read (non-padding prompt + completion tokens), cumulatively over a resumed run, so runs can be
compared at equal teacher compute.
"""
from __future__ import annotations

import functools
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from r1jax import checkpoint, data, models, sharding
from r1jax.data import packing
from r1jax.data.packing import Batch
from r1jax.losses import distill as distill_lib, logprobs as logprobs_lib
from r1jax.models import transformer
from r1jax.train import grpo, held_out, metrics as metrics_lib, run as run_lib, sft, step as step_lib
from r1jax.train.rollouts import check_rewards, collect, validate_batching

log = logging.getLogger("r1jax")

MODES = ("logits", "on_policy")


# ---------------------------------------------------------------------------------------------
# The teacher.
# ---------------------------------------------------------------------------------------------

def load_teacher(section: ml_collections.ConfigDict) -> tuple[models.ModelConfig, object, object]:
    """(ModelConfig, params, tokenizer) of config.teacher: an r1jax workdir (its newest
    checkpoint; tokenizer from WORKDIR/tokenizer unless teacher.tokenizer), or a HF directory /
    .gguf file (tokenizer from teacher.tokenizer or the path)."""
    path = section.path
    if os.path.isdir(os.path.join(path, checkpoint.CHECKPOINT_DIR)):
        step = checkpoint.latest_step(path)
        if step is None:
            raise FileNotFoundError(f"config.teacher.path={path!r}: the workdir has no complete "
                                    f"checkpoint in {os.path.join(path, checkpoint.CHECKPOINT_DIR)}")
        config, params = checkpoint.restore_params(path, step)
        tokenizer = section.tokenizer or os.path.join(path, checkpoint.TOKENIZER_DIR)
        log.info("Teacher: step %d of %s", step, path)
    elif os.path.exists(path):
        config, params = models.load_pretrained_numpy(path)
        tokenizer = section.tokenizer or path
    else:
        raise FileNotFoundError(f"config.teacher.path={path!r} does not exist: expected a HF "
                                "model directory, a .gguf file or an r1jax training workdir")
    config = config.replace(dtype=section.dtype)
    if section.max_seq_len:
        config = config.replace(max_seq_len=section.max_seq_len)
    return config, params, models.load_tokenizer(tokenizer)


def check_shared_vocabulary(path: str, teacher_config, teacher_tokenizer, student_config,
                            student_tokenizer) -> None:
    """Refuses, naming config.teacher.path, a teacher whose logits or tokenizer differ from the
    student's: its distribution would be over other tokens."""
    if teacher_config.vocab_size != student_config.vocab_size:
        raise ValueError(
            f"config.teacher.path={path!r}: the teacher has {teacher_config.vocab_size} logits, "
            f"the student (config.model) {student_config.vocab_size}; teacher and student must "
            "share a tokenizer")
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise ValueError(
            f"config.teacher.path={path!r}: the teacher's tokenizer ({len(teacher_tokenizer)} "
            f"tokens) is not the student's ({len(student_tokenizer)} tokens); teacher and "
            "student must share a tokenizer")


class TeacherTokens:
    """A data iterator with the teacher's cumulative forward tokens kept beside its position, so
    both go into the checkpoint's meta and a resumed run continues the count."""

    def __init__(self, iterator):
        self.iterator, self.count = iterator, 0

    def __next__(self):
        return next(self.iterator)

    @property
    def width(self) -> int:  # rollouts.collect pads prompts to it
        return self.iterator.width

    def get_state(self) -> dict:
        return {"data": self.iterator.get_state(), "teacher_tokens": self.count}

    def set_state(self, state: dict):
        self.iterator.set_state(state["data"])
        self.count = int(state["teacher_tokens"])


# ---------------------------------------------------------------------------------------------
# Pure functions of one batch.
# ---------------------------------------------------------------------------------------------

def hidden_and_head(model_config, params, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(final hidden states float[B, T, E] of packed rows, output head [E, V])."""
    hidden, _ = transformer.forward(model_config, params, batch.inputs, batch.positions,
                                    batch.segment_ids, return_hidden=True)
    return hidden, transformer.output_head(model_config, params)


def logits_kl(model_config, params, teacher_config, teacher_params, batch: Batch, *, top_k: int,
              temperature: float, chunk: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(forward KL(π_T || π_S), log π_S(target), log π_T(target)), each float32[B, T], at every
    position of packed rows; the teacher's side carries no gradient."""
    s_hidden, s_head = hidden_and_head(model_config, params, batch)
    t_hidden, t_head = jax.lax.stop_gradient(
        hidden_and_head(teacher_config, teacher_params, batch))
    kl = distill_lib.chunked_forward_kl(t_hidden, t_head, s_hidden, s_head, top_k=top_k,
                                        temperature=temperature, chunk=chunk)
    s_logp, _ = logprobs_lib.chunked_logprobs(s_hidden, s_head, batch.targets, chunk=chunk)
    t_logp, _ = logprobs_lib.chunked_logprobs(t_hidden, t_head, batch.targets, chunk=chunk)
    return kl, s_logp, t_logp


def masked_means(mask: jax.Array, **values: jax.Array) -> dict:
    """{name: Σ mask · value / Σ mask} of float32[B, T] values."""
    denom = jnp.maximum(mask.sum(), 1.0)
    return {name: (v * mask).sum() / denom for name, v in values.items()}


def logits_update(state: run_lib.TrainState, batch: Batch, teacher_params, *, model_config,
                  teacher_config, optimizer, distill, nan_policy) -> tuple[run_lib.TrainState, dict]:
    """One optimizer update of the token-mean forward KL over the batch's trained tokens."""
    def loss_fn(params, mb: Batch):
        kl, s_logp, t_logp = logits_kl(model_config, params, teacher_config, teacher_params, mb,
                                       top_k=distill.top_k, temperature=distill.temperature,
                                       chunk=distill.chunk)
        metrics = masked_means(mb.weights, kl=kl, student_logprob=s_logp,
                               teacher_logprob=t_logp)
        return metrics["kl"], metrics

    tokens = batch.weights.reshape(distill.num_micro_batches, -1).sum(axis=1)
    return step_lib.apply_gradients(
        loss_fn, state, batch, tokens / jnp.maximum(tokens.sum(), 1.0), optimizer=optimizer,
        num_micro_batches=distill.num_micro_batches, nan_policy=nan_policy)


def on_policy_update(state: run_lib.TrainState, batch: dict, *, model_config, optimizer,
                     num_micro_batches, nan_policy) -> tuple[run_lib.TrainState, dict]:
    """One optimizer update of the per-token reverse KL on the student's own samples.

    batch: {"rollouts": Rollouts arrays (N rows), "teacher_logprobs": float32[N, C]}.
    """
    def loss_fn(params, mb: dict):
        rollouts = mb["rollouts"]
        s_logp, _ = grpo.completion_logprobs(model_config, params, rollouts)
        loss, kl = distill_lib.reverse_kl_loss(s_logp, mb["teacher_logprobs"], rollouts.mask)
        metrics = masked_means(rollouts.mask, student_logprob=s_logp,
                               teacher_logprob=mb["teacher_logprobs"])
        return loss, {"kl": kl, **metrics}

    masks = batch["rollouts"].mask
    masks = masks.reshape(num_micro_batches, -1, masks.shape[1])
    return step_lib.apply_gradients(
        loss_fn, state, batch, grpo.micro_batch_weights(masks, "token_mean"),
        optimizer=optimizer, num_micro_batches=num_micro_batches, nan_policy=nan_policy)


# ---------------------------------------------------------------------------------------------
# Start-up checks.
# ---------------------------------------------------------------------------------------------

def validate_config(config: ml_collections.ConfigDict, mesh_batch: int) -> None:
    """Fails at start-up, naming the key, on values the trainer cannot honour."""
    d = config.distill
    require = run_lib.require
    require(d.mode in MODES, "distill.mode", d.mode, f"one of {MODES}")
    require(("rl" in config) == (d.mode == "on_policy"), "distill.mode", d.mode,
            "the mode the configs/distill.py variant was built for (on_policy variants have an "
            "rl section, logits variants none)")
    require(bool(config.teacher.path), "teacher.path", config.teacher.path,
            "a HF model directory, a .gguf file or an r1jax training workdir")
    if d.mode == "logits":
        require(d.top_k >= 0, "distill.top_k", d.top_k, "an integer >= 0 (0: the full KL)")
        require(d.temperature > 0, "distill.temperature", d.temperature, "a float > 0")
        require(d.chunk >= 1, "distill.chunk", d.chunk, "an integer >= 1")
        require(d.train_on in sft.TRAIN_ON, "distill.train_on", d.train_on,
                f"one of {sft.TRAIN_ON}")
        require(d.overlong in packing.OVERLONG_POLICIES, "distill.overlong", d.overlong,
                f"one of {packing.OVERLONG_POLICIES}")
        require(d.batch_size % (d.num_micro_batches * mesh_batch) == 0, "distill.batch_size",
                d.batch_size, f"a multiple of distill.num_micro_batches × the mesh's batch size "
                f"({d.num_micro_batches} × {mesh_batch})")
    else:
        rl = config.rl
        strategy = rl.sampling
        # The loss is the score-function gradient of KL(π_S || π_T) only for tokens drawn from
        # π_S itself: a tempered or truncated sampler draws from another distribution.
        require(strategy.temperature == 1.0 and strategy.top_k is None and strategy.top_p is None,
                "rl.sampling", strategy.to_dict(),
                "temperature 1.0 without top_k / top_p (the student's own distribution)")
        require(rl.num_generations >= 1, "rl.num_generations", rl.num_generations,
                "an integer >= 1")
        rollouts = rl.prompts_per_step * rl.num_generations
        require(rl.prompts_per_step % mesh_batch == 0
                and rollouts % (rl.num_micro_batches * mesh_batch) == 0, "rl.prompts_per_step",
                rl.prompts_per_step, f"a multiple of the mesh's batch size ({mesh_batch}) making "
                f"prompts_per_step × num_generations ({rollouts}) divisible by "
                f"rl.num_micro_batches × {mesh_batch}")
        validate_batching(rl, mesh_batch)
        check_rewards(config)
    run_lib.validate_common(config)


# ---------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------

def packed_rows(config, tokenizer, split: str) -> Batch:
    """The split's prompt + completion records tokenised and packed as SFT packs them."""
    examples = sft.build_examples(config.data, config.distill, tokenizer, split)
    rows, stats = packing.pack(examples, config.distill.seq_len, packing=config.distill.packing,
                               overlong=config.distill.overlong)
    log.info("Distillation %s split: %s", split, stats)
    return rows


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes) logit or on-policy distillation in workdir; returns the last step's
    metrics."""
    tc, mode = config.train, config.distill.mode
    run = run_lib.start(config, workdir, validate_config)
    teacher_config, teacher_numpy, teacher_tokenizer = load_teacher(config.teacher)
    check_shared_vocabulary(config.teacher.path, teacher_config, teacher_tokenizer,
                            run.model_config, run.tokenizer)
    teacher_params = sharding.shard_params(teacher_config, teacher_numpy, run.mesh, run.rules)
    teacher_shardings = jax.tree.map(lambda x: x.sharding, teacher_params)
    del teacher_numpy
    schedule = run_lib.learning_rate_schedule(config.optimizer, tc.num_steps)
    optimizer = run_lib.make_optimizer(config.optimizer, schedule, run.model_config)

    if mode == "logits":
        rows = packed_rows(config, run.tokenizer, config.data.train_split)
        iterator = TeacherTokens(data.BatchIterator(
            list(range(rows.num_rows)), global_batch_size=config.distill.batch_size,
            seed=config.data.seed, process_index=jax.process_index(),
            process_count=jax.process_count()))
    else:
        rl = config.rl
        iterator = TeacherTokens(data.prompt_iterator(
            config.data, config.mixture, run.tokenizer, global_batch_size=rl.prompts_per_step,
            max_prompt_len=rl.max_prompt_len))
    state = run_lib.init_state(run, optimizer, with_reference=False)
    state, step = run_lib.restore(run, state, iterator)
    if mode == "logits":
        update = run_lib.jit_update(run, state, functools.partial(
            logits_update, model_config=run.model_config, teacher_config=teacher_config,
            optimizer=optimizer, distill=config.distill, nan_policy=tc.nan_policy),
            frozen_shardings=teacher_shardings)
    else:
        update = run_lib.jit_update(run, state, functools.partial(
            on_policy_update, model_config=run.model_config, optimizer=optimizer,
            num_micro_batches=config.rl.num_micro_batches, nan_policy=tc.nan_policy))
        teacher_logprobs = run_lib.jit_forward(
            run, lambda params, batch: grpo.completion_logprobs(teacher_config, params, batch)[0],
            param_shardings=teacher_shardings)
    eval_records = held_out.problems(config)

    if step == 0:
        run.writer.log(0, held_out.evaluate(run, state.params, eval_records), tc.num_steps)
    metrics = {}
    while step < tc.num_steps:
        step += 1
        run_lib.trace_steps(run, step)
        watch = metrics_lib.Stopwatch()
        if mode == "logits":
            batch = run_lib.global_batch(run, rows.take(np.asarray(next(iterator))))
            teacher_read = int(jnp.sum(batch.segment_ids > 0))
            state, m = update(state, batch, teacher_params)
            extra, rollouts = {}, None
        else:
            rollouts, extra = collect(run, state.params, iterator,
                                      jax.random.fold_in(jax.random.key(tc.seed), step))
            rows_on_device = sharding.global_batch_from_whole(rollouts.arrays(), run.mesh)
            scored = teacher_logprobs(teacher_params, rows_on_device)
            teacher_read = int(rollouts.prompt_lengths.sum() + rollouts.lengths.sum())
            state, m = update(state, {"rollouts": rows_on_device, "teacher_logprobs": scored})
            extra.update(grpo.rollout_metrics(rollouts))
        iterator.count += teacher_read
        metrics = {k: float(v) for k, v in jax.device_get(m).items()}
        metrics_lib.check_finite(metrics["loss"], step, tc.nan_policy)
        metrics.update(extra)
        metrics.update(seconds_per_step=watch.lap(), teacher_tokens=iterator.count,
                       learning_rate=float(schedule(step - 1)))
        if run_lib.is_due(step, tc.eval_every, tc.num_steps):
            metrics.update(held_out.evaluate(run, state.params, eval_records))
            if rollouts is not None:
                run.writer.samples(step, grpo.sample_rows(rollouts, tc.log_samples))
        if run_lib.is_due(step, tc.log_every, tc.num_steps) or "accuracy" in metrics:
            run.writer.log(step, metrics, tc.num_steps)
        run_lib.save(run, state, step, iterator)
    run_lib.finish(run, state, step, iterator)
    return metrics
