"""A thin orbax wrapper: train state, trainer metadata and model config under WORKDIR/checkpoints.

Each step is saved as named items of sharded arrays (`params`, `opt_state`, ...; restored straight
onto their shards) and `meta` (JSON: step, data-iterator position, model config). Orbax writes into a
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
# The trainer saves its tokenizer here once, so a workdir alone is enough to sample from.
TOKENIZER_DIR = "tokenizer"


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

    def save(self, step: int, items: dict, meta: dict, *, force: bool = False) -> bool:
        """Saves `items` (name -> pytree of arrays, e.g. params, opt_state) and JSON `meta`."""
        if not force and (self.every <= 0 or step % self.every):
            return False
        args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
        return self._manager.save(step, args=ocp.args.Composite(meta=ocp.args.JsonSave(meta),
                                                                **args), force=force)

    def restore(self, step: int, abstract_items: dict) -> tuple[dict, dict]:
        """(items, meta); the abstract trees (ShapeDtypeStructs) carry the target shardings."""
        args = {name: ocp.args.StandardRestore(tree) for name, tree in abstract_items.items()}
        restored = self._manager.restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore(), **args))
        return {name: restored[name] for name in abstract_items}, restored["meta"]

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
