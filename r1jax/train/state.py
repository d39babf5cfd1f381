"""The state a trainer carries between steps and the set-up every stage shares: mesh, sharded
params and optimizer, jitted functions with declared shardings, resume, evaluation, logging."""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from r1jax import checkpoint, distributed, sharding
from r1jax.eval import evaluate as eval_lib
from r1jax.sampling import strategies
from r1jax.train import loop, optim, prompts

log = logging.getLogger("r1jax")


def require(ok: bool, key: str, value: Any, allowed: str):
    """Raises a start-up error naming the config key, its value and what is allowed."""
    if not ok:
        raise ValueError(f"config.{key}={value!r} is not allowed: expected {allowed}.")


def validate_common(config: ml_collections.ConfigDict):
    require(config.train.nan_policy in loop.NAN_POLICIES, "train.nan_policy",
            config.train.nan_policy, f"one of {loop.NAN_POLICIES}")
    require(config.optimizer.decay in optim.SCHEDULES, "optimizer.decay", config.optimizer.decay,
            f"one of {optim.SCHEDULES}")
    require(config.optimizer.learning_rate > 0, "optimizer.learning_rate",
            config.optimizer.learning_rate, "a float > 0")
    require(config.train.num_steps >= 1, "train.num_steps", config.train.num_steps,
            "an integer >= 1")
    require(bool(config.model.path or config.model.preset), "model.path", config.model.path,
            "a HF directory or .gguf file (or set model.preset for a random init)")


def resolve_mesh_shape(shape: dict, num_devices: int) -> dict:
    """Replaces one -1 axis size by the devices the other axes leave."""
    shape = dict(shape)
    free = [axis for axis, size in shape.items() if size == -1]
    require(len(free) <= 1, "mesh.shape", shape, "at most one axis of size -1")
    if free:
        fixed = math.prod(size for size in shape.values() if size != -1)
        require(num_devices % fixed == 0, "mesh.shape", shape,
                f"fixed axes dividing the {num_devices} devices")
        shape[free[0]] = num_devices // fixed
    return shape


def split_batch(batch: dict, parts: int) -> list[dict]:
    """`parts` equal consecutive slices of every [N, ...] array in batch."""
    size = next(iter(batch.values())).shape[0] // parts
    return [jax.tree.map(lambda x, i=i: x[i * size:(i + 1) * size], batch) for i in range(parts)]


class TrainerState:
    """Model, optimizer state, data position and workdir of one training run."""

    @classmethod
    def create(cls, config: ml_collections.ConfigDict, workdir: str,
               validate: Callable[[ml_collections.ConfigDict, int], None]) -> "TrainerState":
        distributed.maybe_initialize()
        self = cls()
        self.config, self.workdir, self.step = config, workdir, 0
        shape = resolve_mesh_shape(config.mesh.shape, jax.device_count())
        self.mesh = sharding.make_mesh(shape)
        self.rules = tuple(tuple(r) for r in config.mesh.rules) or sharding.DEFAULT_RULES
        validate(config, shape.get("data", 1) * shape.get("fsdp", 1))
        self.model_config, numpy_params, self.tokenizer = loop.load_policy(config.model)
        self.param_shardings = sharding.param_shardings(self.model_config, self.mesh, self.rules)
        if numpy_params is None:
            self.params = sharding.init_params_sharded(
                self.model_config, jax.random.key(config.train.seed), self.mesh, self.rules)
        else:
            self.params = sharding.shard_params(self.model_config, numpy_params, self.mesh,
                                                self.rules)
        self.stop_tokens = eval_lib.stop_tokens(self.tokenizer)
        self.reference = None
        self.iterator = None
        self.checkpointer = checkpoint.Checkpointer(
            workdir, every=config.train.checkpoint_every, keep=config.train.keep_checkpoints)
        self.eval_problems = self._eval_problems()
        tokenizer_dir = os.path.join(workdir, checkpoint.TOKENIZER_DIR)
        if distributed.is_main_process() and not os.path.isdir(tokenizer_dir):
            self.tokenizer.save_pretrained(tokenizer_dir)
        log.info("Model %s (%.1fM params) on mesh %s; workdir %s", self.model_config.architecture,
                 self.model_config.num_params / 1e6, shape, workdir)
        return self

    def _eval_problems(self) -> list[dict]:
        if not self.config.eval.max_problems:
            return []
        source = prompts.open_split(self.config.data, self.config.data.eval_split)
        return [source[i] for i in range(min(len(source), self.config.eval.max_problems))]

    # ------------------------------------------------------------------ jitted functions

    def jit_update(self, update: Callable, total_updates: int) -> Callable:
        """Compiles update(params, opt_state, batch, optimizer=...) with params and optimizer
        state sharded as declared and donated; the batch split over the data axes."""
        optimizer = optim.make_optimizer(self.config.optimizer, total_updates)
        self.learning_rate = optim.learning_rate_schedule(
            learning_rate=self.config.optimizer.learning_rate,
            warmup_steps=self.config.optimizer.warmup_steps, decay=self.config.optimizer.decay,
            total_steps=total_updates, final_fraction=self.config.optimizer.final_fraction)
        self.opt_shardings = sharding.shardings_like(
            jax.eval_shape(optimizer.init, self.params), self.param_shardings)
        self.opt_state = jax.jit(optimizer.init, out_shardings=self.opt_shardings)(self.params)
        # ndim=1: a spec for the leading axis only, a prefix valid for every array of the batch.
        batch = sharding.batch_sharding(self.mesh, ndim=1)
        return sharding.sharded_jit(
            lambda p, o, b: update(p, o, b, optimizer=optimizer), self.mesh, self.rules,
            in_shardings=(self.param_shardings, self.opt_shardings, batch),
            out_shardings=(self.param_shardings, self.opt_shardings, sharding.replicated(self.mesh)),
            donate_argnums=(0, 1))

    def jit_forward(self, fn: Callable, *, replicated_output: bool = False) -> Callable:
        """Compiles fn(params, batch) -> an array split over the batch axes (or replicated)."""
        batch = sharding.batch_sharding(self.mesh, ndim=1)
        out = sharding.replicated(self.mesh) if replicated_output else batch
        return sharding.sharded_jit(fn, self.mesh, self.rules,
                                    in_shardings=(self.param_shardings, batch), out_shardings=out)

    def to_device(self, local_batch: dict) -> dict:
        """Host arrays of this process's rows -> global arrays split over the batch axes."""
        return sharding.global_batch(local_batch, self.mesh)

    # ------------------------------------------------------------------ checkpoints

    def _items(self) -> dict:
        items = {"params": self.params, "opt_state": self.opt_state}
        if self.reference is not None:
            items["reference"] = self.reference
        return items

    def restore_or_start(self, *, with_reference: bool):
        """Restores the newest complete checkpoint in workdir, if any, then opens the logger."""
        if with_reference:
            self.reference = jax.tree.map(lambda x: x.copy(), self.params)
        latest = self.checkpointer.latest_step()
        if latest is not None:
            abstract = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                self._items())
            items, meta = self.checkpointer.restore(latest, abstract)
            self.params, self.opt_state = items["params"], items["opt_state"]
            self.reference = items.get("reference")
            self.step = meta["step"]
            if self.iterator is not None:
                self.iterator.set_state(meta["data"])
            log.info("Resumed from step %d in %s", self.step, self.workdir)
        self.logger = loop.MetricsLogger(self.workdir, resume_step=latest,
                                         enabled=distributed.is_main_process())

    def save_checkpoint(self, force: bool = False):
        meta = {"step": self.step, "model_config": checkpoint.model_config_to_dict(self.model_config),
                "data": self.iterator.get_state() if self.iterator is not None else {}}
        self.checkpointer.save(self.step, self._items(), meta, force=force)

    def refresh_reference(self):
        self.reference = jax.tree.map(lambda x: x.copy(), self.params)

    # ------------------------------------------------------------------ evaluation and logs

    def should_evaluate(self, step: int) -> bool:
        every = self.config.train.eval_every
        return step == self.config.train.num_steps or (every > 0 and step % every == 0)

    def evaluate_and_log(self, step: int, log_now: bool = True) -> dict:
        """Held-out pass@1 (as `accuracy`) with the evaluation binary's code."""
        if not self.eval_problems:
            return {}
        ec = ml_collections.ConfigDict(self.config.eval.to_dict())
        ec.template = ec.template or self.config.data.template
        ec.system = ec.system or self.config.data.system or None
        summary, _ = eval_lib.evaluate_with_config(
            self.model_config, self.params, self.tokenizer, self.eval_problems, ec,
            mesh=self.mesh, rules=self.rules, progress=False)
        metrics = {"accuracy": summary["pass@1"],
                   "eval_completion_length": summary["mean_completion_tokens"]}
        if log_now:
            if self.logger is None:
                raise RuntimeError("restore_or_start must run before evaluate_and_log.")
            self.log(step, metrics)
        log.info("Evaluation at step %d: accuracy %.4f on %d problems", step,
                 metrics["accuracy"], len(self.eval_problems))
        return metrics

    def log(self, step: int, metrics: dict):
        if step % self.config.train.log_every == 0 or "accuracy" in metrics:
            self.logger.write(step, metrics)
            self.logger.console(step, metrics, self.config.train.num_steps)

    def finish(self):
        if self.checkpointer.latest_step() != self.step:
            self.save_checkpoint(force=True)
        self.checkpointer.wait()
        self.checkpointer.close()
        self.logger.close()
