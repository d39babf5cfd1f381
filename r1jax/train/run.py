"""The shape every stage shares: a `TrainState` pytree that a pure jitted update takes and returns,
and the explicit set-up around it.

    run = start(config, workdir, validate)                   # mesh, model, tokenizer, writers
    state = init_state(run, optimizer, with_reference=False)  # params + optimizer state, sharded
    state, step = restore(run, state, iterator)               # newest checkpoint, data position too
    update = jit_update(run, state, update_fn)                # (state, batch) -> (state, metrics)
    while step < num_steps:
        state, metrics = update(state, batch); step += 1
        save(run, state, step, iterator)
    finish(run, state, step, iterator)

Nothing here keeps state between calls: each function takes what it needs and returns what it
made, so no call depends on another having run first except through its arguments.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from r1jax import checkpoint, distributed, models, sharding
from r1jax.models import config as model_configs, lora, moe, value_head
from r1jax.train import metrics as metrics_lib

log = logging.getLogger("r1jax")


@flax.struct.dataclass
class TrainState:
    """Everything an update changes, as one pytree (donated to and returned by the update).

    With LoRA (model.lora.rank > 0) `params` holds the frozen base and the adapters beside it;
    only `lora.trainable(params)`, the adapters, are trained, held by the optimizer, copied into
    `reference` and checkpointed. Without, `lora.trainable(params)` is all of `params`.

    Attributes:
      params: the policy's parameters.
      opt_state: the optimizer's state for `lora.trainable(params)`.
      reference: π_ref's trainable parameters (GRPO with β > 0), or None: `reference_params`
        puts them together with the frozen ones.
      updates: int32[] optimizer updates applied so far (the learning-rate schedule's count).
    """

    params: Any
    opt_state: Any
    reference: Any
    updates: jax.Array


@dataclasses.dataclass(frozen=True)
class Run:
    """What a stage's loop reads but never changes: built once by `start`.

    Attributes:
      config: the stage's ConfigDict; workdir: where everything is written.
      mesh, rules: the device mesh and the logical-axis rules.
      model_config: the policy's r1jax.models.ModelConfig; tokenizer: its Hugging Face tokenizer;
        stop_tokens: the token ids that end a completion (eos and chat end-of-turn tokens).
      initial_params: params as loaded (numpy) or None for a random init; `init_state` shards them.
      param_shardings: NamedShardings shaped like the params.
      checkpointer: checkpoint.Checkpointer; writer: metrics.MetricsWriter (process 0 writes).
    """

    config: ml_collections.ConfigDict
    workdir: str
    mesh: jax.sharding.Mesh
    rules: tuple
    model_config: models.ModelConfig
    tokenizer: Any
    stop_tokens: tuple
    initial_params: Any
    param_shardings: Any
    checkpointer: checkpoint.Checkpointer
    writer: metrics_lib.MetricsWriter



# ----------------------------------------------------------------------------- validation


def require(ok: bool, key: str, value: Any, allowed: str):
    """Raises a start-up error naming the config key, its value and what is allowed."""
    if not ok:
        raise ValueError(f"config.{key}={value!r} is not allowed: expected {allowed}.")


def validate_common(config: ml_collections.ConfigDict):
    """Checks of the sections every stage has (train, optimizer, model)."""
    require(config.train.nan_policy in metrics_lib.NAN_POLICIES, "train.nan_policy",
            config.train.nan_policy, f"one of {metrics_lib.NAN_POLICIES}")
    require(config.optimizer.decay in SCHEDULES, "optimizer.decay", config.optimizer.decay,
            f"one of {SCHEDULES}")
    require(config.optimizer.learning_rate > 0, "optimizer.learning_rate",
            config.optimizer.learning_rate, "a float > 0")
    require(config.train.num_steps >= 1, "train.num_steps", config.train.num_steps,
            "an integer >= 1")
    require(config.train.profile_start >= 1, "train.profile_start", config.train.profile_start,
            "an integer >= 1 (step 1 compiles; 2 is the first step worth a trace)")
    require(config.train.profile_steps >= 0, "train.profile_steps", config.train.profile_steps,
            "an integer >= 0 (0: no trace)")
    require(bool(config.model.path or config.model.preset), "model.path", config.model.path,
            "a HF directory or .gguf file (or set model.preset for a random init)")
    validate_lora(config)


LORA_BASE_DTYPES = ("float32", "bfloat16")
# Stages whose policy never samples while it trains: dropout there cannot make the sampled
# policy differ from the one the loss scores (π_old ≠ π_θ at the first update).
LORA_DROPOUT_STAGES = ("sft",)


def validate_lora(config: ml_collections.ConfigDict):
    """Checks of model.lora (rank 0: off, nothing else read)."""
    section = config.model.lora
    require(isinstance(section.rank, int) and section.rank >= 0, "model.lora.rank", section.rank,
            "an integer >= 0 (0: off)")
    if section.rank == 0:
        return
    require(config.stage != "reward_model", "model.lora.rank", section.rank,
            "0 for the reward-model stage (its head would stay frozen)")
    require(section.alpha > 0, "model.lora.alpha", section.alpha, "a float > 0")
    targets = tuple(section.targets)
    require(bool(targets) and set(targets) <= set(model_configs.LORA_TARGETS),
            "model.lora.targets", targets, f"a non-empty subset of {model_configs.LORA_TARGETS}")
    require(section.base_dtype in LORA_BASE_DTYPES, "model.lora.base_dtype", section.base_dtype,
            f"one of {LORA_BASE_DTYPES}")
    require(0 <= section.dropout < 1, "model.lora.dropout", section.dropout, "a float in [0, 1)")
    require(section.dropout == 0 or config.stage in LORA_DROPOUT_STAGES, "model.lora.dropout",
            section.dropout, f"0 in stage {config.stage!r}: its policy samples, and dropout "
            f"would make the trained policy differ from the sampling one")


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


# ----------------------------------------------------------------------------- optimizer

SCHEDULES = ("constant", "cosine", "linear")


def learning_rate_schedule(opt: ml_collections.ConfigDict, total_updates: int) -> optax.Schedule:
    """Linear warmup to `opt.learning_rate`, then constant / cosine / linear decay towards
    learning_rate × final_fraction over the remaining updates.

    Update k (counting from 0) of the warmup uses learning_rate × (k + 1) / warmup_steps: the
    first update already learns (a ramp from 0, as optax's, would spend it at rate 0).
    """
    decay_steps = max(total_updates - opt.warmup_steps, 1)
    if opt.decay == "constant":
        after = optax.constant_schedule(opt.learning_rate)
    elif opt.decay == "cosine":
        after = optax.cosine_decay_schedule(opt.learning_rate, decay_steps,
                                            alpha=opt.final_fraction)
    else:
        after = optax.linear_schedule(opt.learning_rate, opt.learning_rate * opt.final_fraction,
                                      decay_steps)

    def schedule(count):
        ramp = opt.learning_rate * jnp.minimum(1.0, (count + 1) / max(opt.warmup_steps, 1))
        return jnp.where(count < opt.warmup_steps, ramp, after(count - opt.warmup_steps))

    return schedule


def make_optimizer(opt: ml_collections.ConfigDict, schedule: optax.Schedule,
                   model_config: models.ModelConfig) -> optax.GradientTransformation:
    """AdamW (b1, b2, weight_decay) on `schedule`, after global-norm clipping (clip_norm 0: off).

    An MoE model's routing biases are left out: no gradient reaches them and weight decay would
    pull them to 0; `train.step.balance_experts` moves them instead.
    """
    adamw = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay)
    if opt.clip_norm > 0:
        adamw = optax.chain(optax.clip_by_global_norm(opt.clip_norm), adamw)
    if model_config.moe is None:
        return adamw
    return optax.multi_transform({"trainable": adamw, "frozen": optax.set_to_zero()},
                                 moe.optimizer_labels)


# ----------------------------------------------------------------------------- set-up


def start(config: ml_collections.ConfigDict, workdir: str,
          validate: Callable[[ml_collections.ConfigDict, int], None]) -> Run:
    """Validates the config (`validate(config, mesh_batch)`), builds the mesh, loads the model
    and tokenizer, and opens the checkpointer and metrics writer of `workdir`."""
    shape = resolve_mesh_shape(config.mesh.shape, jax.device_count())
    mesh = sharding.make_mesh(shape)
    rules = tuple(tuple(r) for r in config.mesh.rules) or sharding.DEFAULT_RULES
    # Every batch is split over the mesh's batch axes (data × fsdp × expert).
    validate(config, sharding.batch_shards(shape))
    model_config, params, tokenizer = models.load_policy(config.model)
    checkpointer = checkpoint.Checkpointer(
        workdir, every=config.train.checkpoint_every, keep=config.train.keep_checkpoints)
    writer = metrics_lib.MetricsWriter(workdir, enabled=distributed.is_main_process())
    tokenizer_dir = os.path.join(workdir, checkpoint.TOKENIZER_DIR)
    if distributed.is_main_process() and not os.path.isdir(tokenizer_dir):
        tokenizer.save_pretrained(tokenizer_dir)
    log.info("Model %s (%.1fM params) on mesh %s; workdir %s", model_config.architecture,
             model_config.num_params / 1e6, dict(mesh.shape), workdir)
    return Run(config=config, workdir=workdir, mesh=mesh, rules=rules, model_config=model_config,
               tokenizer=tokenizer, stop_tokens=models.stop_tokens(tokenizer),
               initial_params=params,
               param_shardings=sharding.param_shardings(model_config, mesh, rules),
               checkpointer=checkpointer, writer=writer)


def init_state(run: Run, optimizer: optax.GradientTransformation, *,
               with_reference: bool, params: Any = None,
               wrap: Optional[Callable[[Any], Any]] = None) -> TrainState:
    """The step-0 state: the loaded (or seeded random) params on their shards, the optimizer's
    initial state beside them, and a copy of the params as π_ref when asked.

    `params`, already on their shards, replace the policy's (a reward model's backbone and head).
    With LoRA, fresh adapters (B = 0: the base model's outputs) join the loaded base, which is
    stored in model.lora.base_dtype. `wrap`, policy params -> the state's params, puts other
    trained weights beside the policy (PPO's value head: `models.value_head.with_value`); they
    are then optimised, copied into π_ref and checkpointed with it.
    """
    rng = jax.random.key(run.config.train.seed)
    if params is None and run.initial_params is None:
        params = sharding.init_params_sharded(run.model_config, rng, run.mesh, run.rules)
    elif params is None and run.model_config.lora is None:
        params = sharding.shard_params(run.model_config, run.initial_params, run.mesh, run.rules)
    elif params is None:
        params = lora.combine(
            sharding.shard_params(run.model_config.replace(lora=None), run.initial_params,
                                  run.mesh, run.rules),
            init_adapters(run.model_config, rng, run.param_shardings))
    if run.model_config.lora is not None:
        params = lora.with_base_dtype(params, run.config.model.lora.base_dtype)
        log.info("LoRA rank %d on %s: %.2fM trainable parameters, base frozen in %s",
                 run.model_config.lora.rank, ",".join(run.model_config.lora.targets),
                 lora.count(lora.adapters(params)) / 1e6, run.config.model.lora.base_dtype)
    if wrap is not None:
        params = wrap(params)
    trainable = lora.trainable(params)
    opt_shardings = sharding.shardings_like(jax.eval_shape(optimizer.init, trainable),
                                            jax.tree.map(lambda x: x.sharding, trainable))
    opt_state = jax.jit(optimizer.init, out_shardings=opt_shardings)(trainable)
    reference = jax.tree.map(jnp.copy, trainable) if with_reference else None
    return TrainState(params=params, opt_state=opt_state, reference=reference,
                      updates=jax.device_put(jnp.zeros((), jnp.int32),
                                             sharding.replicated(run.mesh)))


def init_adapters(model_config: models.ModelConfig, rng: jax.Array, param_shardings) -> dict:
    """The adapters of a fresh init on their shards (the base's initialisers are compiled away:
    their outputs are unused)."""
    return jax.jit(lambda key: lora.adapters(models.init_params(model_config, key)),
                   out_shardings=lora.adapters(param_shardings))(rng)


def reference_params(state: TrainState):
    """π_ref's full params: the frozen base (LoRA) with the reference's trainable part."""
    return lora.combine(lora.frozen(state.params), state.reference)


def refreshed_reference(state: TrainState) -> TrainState:
    """The state with π_ref set to a copy of the policy's trainable params."""
    return state.replace(reference=jax.tree.map(jnp.copy, lora.trainable(state.params)))


def state_shardings(state: TrainState) -> TrainState:
    """The state's own shardings, as a TrainState: the update's in and out shardings."""
    return jax.tree.map(lambda x: x.sharding, state)


def restore(run: Run, state: TrainState, iterator) -> tuple[TrainState, int]:
    """(state, step) of the newest checkpoint in the workdir that restores, with the data
    iterator moved to where that run was; (state, 0) untouched when there is none.

    A checkpoint that does not restore (corrupt, truncated or missing file, other shapes) is
    moved aside to checkpoints/corrupt-<step>/ with one warning, and the one before it is
    used (`checkpoint.Checkpointer.restore_latest`).
    """
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), _items(state))
    restored = run.checkpointer.restore_latest(abstract)
    if restored is None:
        return state, 0
    _, items, meta = restored
    iterator.set_state(meta["data"])
    log.info("Resumed from step %d in %s", meta["step"], run.workdir)
    return TrainState(params=lora.combine(lora.frozen(state.params), items["params"]),
                      opt_state=items["opt_state"],
                      reference=items.get("reference"),
                      updates=items["counters"]["updates"]), meta["step"]


def _items(state: TrainState) -> dict:
    """The checkpoint's named items (`params` is the one `checkpoint.restore_params` reads back
    for sampling and evaluation; orbax saves no bare scalar, so counters go in a dict). With
    LoRA `params` holds the adapters only: the base is model.path's (see `save`)."""
    items = {"params": lora.trainable(state.params), "opt_state": state.opt_state,
             "counters": {"updates": state.updates}}
    if state.reference is not None:
        items["reference"] = state.reference
    return items


def save(run: Run, state: TrainState, step: int, iterator, *, force: bool = False):
    """Checkpoints the state and the data position at `step` (every checkpoint_every steps)."""
    meta = {"step": step, "data": iterator.get_state(),
            "model_config": checkpoint.model_config_to_dict(run.model_config)}
    if run.model_config.lora is not None:
        # What `checkpoint.restore_params` rebuilds the frozen base from.
        meta["lora_base"] = {"path": run.config.model.path, "seed": run.config.train.seed,
                             "dtype": run.config.model.lora.base_dtype}
    if isinstance(state.params, dict) and value_head.POLICY in state.params:
        # PPO: what `checkpoint.restore_params` reads the policy from, and whether the value
        # params hold a backbone of their own (rl.value.head = "separate") to skip past.
        meta["policy_key"] = value_head.POLICY
        meta["value_backbone"] = value_head.is_separate(state.params)
    run.checkpointer.save(step, _items(state), meta, force=force)


_tracing = False  # jax.profiler's trace is process-wide state, so is whether it runs.


def trace_steps(run: Run, step: int) -> None:
    """Called as each step begins: starts jax.profiler's trace into WORKDIR/profile at step
    train.profile_start and stops it train.profile_steps steps later (the trace covers whole
    steps: sampling, rewards, the update and the host work between them)."""
    global _tracing
    first, count = run.config.train.profile_start, run.config.train.profile_steps
    if count and step == first and not _tracing:
        jax.profiler.start_trace(os.path.join(run.workdir, "profile"))
        _tracing = True
        log.info("Tracing steps %d-%d into %s/profile", first, first + count - 1, run.workdir)
    elif _tracing and step >= first + count:
        stop_trace()


def stop_trace() -> None:
    global _tracing
    if _tracing:
        jax.profiler.stop_trace()
        _tracing = False


def finish(run: Run, state: TrainState, step: int, iterator):
    """Saves the last step if it was not, waits for the writes, closes the writers (and stops
    a trace still running)."""
    stop_trace()
    if run.checkpointer.latest_step() != step:
        save(run, state, step, iterator, force=True)
    run.checkpointer.wait()
    run.checkpointer.close()
    run.writer.close()


# ----------------------------------------------------------------------------- compiled functions


def train_compiler_options(mesh: jax.sharding.Mesh) -> Optional[dict]:
    """XLA options of the train steps: on CPU, YNNPACK takes only the matmuls. Its fusions of
    exponentials into reductions over the vocabulary (the loss's log-sum-exp and entropy) ran
    several times slower than XLA's own loops: a quarter of a small model's GRPO update
    (benchmarks/grpo_step.py --model=tiny, 2-core EPYC). No options elsewhere."""
    if mesh.devices.flat[0].platform != "cpu":
        return None
    return {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


def jit_update(run: Run, state: TrainState, update: Callable, *,
               frozen_shardings: Any = None) -> Callable:
    """Compiles update(state, batch) -> (state, metrics): the state keeps its shardings and is
    donated (its buffers become the new state's), the batch is split over the batch axes, the
    metrics come back replicated.

    With `frozen_shardings` (shardings of arrays the update reads but never changes, such as a
    distillation teacher's params) it compiles update(state, batch, frozen): they stay on their
    shards, outside the state, the optimizer and the checkpoints.
    """
    shardings = state_shardings(state)
    # ndim=1: a spec for the leading axis only, a prefix valid for every array of the batch.
    batch = sharding.batch_sharding(run.mesh, ndim=1)
    inputs = (shardings, batch) if frozen_shardings is None else (shardings, batch,
                                                                  frozen_shardings)
    return sharding.sharded_jit(update, run.mesh, run.rules, in_shardings=inputs,
                                out_shardings=(shardings, sharding.replicated(run.mesh)),
                                donate_argnums=0,
                                compiler_options=train_compiler_options(run.mesh))


def jit_forward(run: Run, fn: Callable, *, replicated_output: bool = False,
                param_shardings: Any = None) -> Callable:
    """Compiles fn(params, batch) -> an array split over the batch axes (or replicated).

    `param_shardings` places params of another form or model (PPO's whole `state.params`, a
    teacher's); default: the policy's."""
    batch = sharding.batch_sharding(run.mesh, ndim=1)
    out = sharding.replicated(run.mesh) if replicated_output else batch
    params = run.param_shardings if param_shardings is None else param_shardings
    return sharding.sharded_jit(fn, run.mesh, run.rules,
                                in_shardings=(params, batch), out_shardings=out,
                                compiler_options=train_compiler_options(run.mesh))


def global_batch(run: Run, local_batch):
    """Host arrays of this process's rows -> global arrays split over the batch axes."""
    return sharding.global_batch(local_batch, run.mesh)


def is_due(step: int, every: int, total: int, *, first: bool = False) -> bool:
    """Whether a periodic action (log, evaluate, checkpoint) runs at `step`: every `every` steps
    (0: never), at the last step, and at step 0 when `first`."""
    if step == 0:
        return first
    return step == total or (every > 0 and step % every == 0)
