"""A thin orbax wrapper: train state, trainer metadata and model config under WORKDIR/checkpoints.

Each step is saved as three items: `params`, `opt_state` (sharded arrays, restored straight onto
their shards) and `meta` (JSON: step, data-iterator position, model config). Orbax writes into a
temporary directory and renames it when complete, so a checkpoint whose writer died is never
listed, let alone restored.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from r1jax.models.config import ModelConfig, RopeScaling

CHECKPOINT_DIR = "checkpoints"


def _manager(workdir: str, keep: Optional[int] = None, read_only: bool = False):
    directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           read_only=read_only)
    return ocp.CheckpointManager(directory, options=options)


def model_config_to_dict(config: ModelConfig) -> dict:
    return dataclasses.asdict(config)


def model_config_from_dict(values: dict) -> ModelConfig:
    values = dict(values)
    if values.get("rope_scaling"):
        values["rope_scaling"] = RopeScaling(**values["rope_scaling"])
    return ModelConfig(**values)


class Checkpointer:
    """Saves every `every` steps, keeps the newest `keep`, restores the newest complete one."""

    def __init__(self, workdir: str, *, every: int, keep: int):
        self.every = every
        self._manager = _manager(workdir, keep)

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def save(self, step: int, params, opt_state, meta: dict, *, force: bool = False) -> bool:
        if not force and (self.every <= 0 or step % self.every):
            return False
        args = ocp.args.Composite(params=ocp.args.StandardSave(params),
                                  opt_state=ocp.args.StandardSave(opt_state),
                                  meta=ocp.args.JsonSave(meta))
        return self._manager.save(step, args=args, force=force)

    def restore(self, step: int, abstract_params, abstract_opt_state) -> tuple[Any, Any, dict]:
        """(params, opt_state, meta); the abstract trees carry the target shardings."""
        args = ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params),
                                  opt_state=ocp.args.StandardRestore(abstract_opt_state),
                                  meta=ocp.args.JsonRestore())
        restored = self._manager.restore(step, args=args)
        return restored["params"], restored["opt_state"], restored["meta"]

    def wait(self):
        self._manager.wait_until_finished()

    def close(self):
        self._manager.close()


def latest_step(workdir: str) -> Optional[int]:
    """The newest complete checkpoint step under workdir, or None."""
    if not os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
        return None
    manager = _manager(workdir, read_only=True)
    try:
        return manager.latest_step()
    finally:
        manager.close()


def restore_params(workdir: str, step: Optional[int] = None, shardings=None):
    """(model_config, params) of checkpoint `step` (default: newest) in an r1jax workdir.

    `shardings`, a tree like params of jax.sharding.Sharding, places them; default: device 0.
    """
    from r1jax.models.transformer import abstract_params  # Avoids a models <-> checkpoint cycle.
    import flax.linen as nn

    directory = os.path.join(workdir, CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"No checkpoints in {workdir!r}: expected a directory {directory!r} written by "
            "launch/train.py.")
    manager = _manager(workdir, read_only=True)
    try:
        step = manager.latest_step() if step is None else step
        if step is None or step not in manager.all_steps():
            raise FileNotFoundError(
                f"Checkpoint step {step} not found in {directory!r}; available steps: "
                f"{sorted(manager.all_steps())}.")
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        config = model_config_from_dict(meta["model_config"])
        shapes = nn.meta.unbox(abstract_params(config))
        if shardings is None:
            device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            shardings = jax.tree.map(lambda _: device, shapes)
        target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                              shapes, shardings)
        params = manager.restore(
            step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))["params"]
        return config, params
    finally:
        manager.close()
