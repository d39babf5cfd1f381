"""A thin orbax wrapper: train state, trainer metadata and model config under WORKDIR/checkpoints.

Each step is saved as named items of sharded arrays (`params`, `opt_state`, ...; restored straight
onto their shards) and `meta` (JSON: step, data-iterator position, model config). Orbax writes into a
temporary directory and renames it when complete, so a checkpoint whose writer died is never
listed, let alone restored.

What orbax does not catch, this module does: once a step is complete, the size and CRC-32 of each
of its files go to STEP/CHECKSUMS_FILE (bytes flipped in a weights file otherwise restore silently
as wrong numbers: zstd stores incompressible float data uncompressed, without a checksum), and
stored shapes and dtypes are compared with the restore target before anything is read (orbax
would cast a dtype silently). `Checkpointer.restore_latest` moves a checkpoint that fails either
check, or fails to read, aside to CHECKPOINT_DIR/corrupt-<step>/ and falls back to the next newest.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import threading
import weakref
import zlib
from typing import Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from r1jax.errors import CheckpointError
from r1jax.models.config import LoraConfig, ModelConfig, RopeScaling

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
CHECKSUMS_FILE = "r1jax_checksums.json"
CORRUPT_PREFIX = "corrupt-"
# The trainer saves its tokenizer here once, so a workdir alone is enough to sample from.
TOKENIZER_DIR = "tokenizer"


def _directory(workdir: str) -> str:
    return os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))


def _manager(workdir: str, keep: Optional[int] = None, read_only: bool = False):
    directory = _directory(workdir)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           read_only=read_only)
    return ocp.CheckpointManager(directory, options=options)


def model_config_to_dict(config: ModelConfig) -> dict:
    return dataclasses.asdict(config)


def model_config_from_dict(values: dict) -> ModelConfig:
    values = dict(values)
    if values.get("rope_scaling"):
        values["rope_scaling"] = RopeScaling(**values["rope_scaling"])
    if values.get("lora"):
        values["lora"] = LoraConfig(**{**values["lora"], "targets": tuple(values["lora"]["targets"])})
    return ModelConfig(**values)


# ------------------------------------------------------------------ integrity checks

def _crc32(path: str, block: int = 1 << 24) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(block):
            crc = zlib.crc32(chunk, crc)
    return crc


def file_checksums(step_dir: str) -> dict:
    """{relative path: [size, crc32]} of the files of a step's items (its subdirectories; the
    top-level files are orbax's bookkeeping, which it may rewrite)."""
    sums = {}
    for item in sorted(os.listdir(step_dir)):
        root = os.path.join(step_dir, item)
        for parent, _, names in os.walk(root):
            for name in names:
                path = os.path.join(parent, name)
                sums[os.path.relpath(path, step_dir)] = [os.path.getsize(path), _crc32(path)]
    return sums


def write_checksums(step_dir: str):
    """Writes STEP/CHECKSUMS_FILE, atomically: a partial file would condemn a good checkpoint."""
    tmp = os.path.join(step_dir, CHECKSUMS_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(file_checksums(step_dir), f)
    os.replace(tmp, os.path.join(step_dir, CHECKSUMS_FILE))


def checksum_failure(step_dir: str, items: Optional[tuple] = None) -> Optional[str]:
    """What differs from the checksums written at save time in the files of `items` (default:
    all), or None: all match, or none were written."""
    path = os.path.join(step_dir, CHECKSUMS_FILE)
    if not os.path.exists(path):
        return None  # Written before checksums existed, or killed before they were.
    with open(path) as f:
        expected = json.load(f)
    for name, (size, crc) in expected.items():
        if items is not None and name.split(os.sep, 1)[0] not in items:
            continue
        file = os.path.join(step_dir, name)
        if not os.path.exists(file):
            return f"missing file {name}"
        if os.path.getsize(file) != size:
            return f"{name} has {os.path.getsize(file)} bytes, {size} when saved"
        if _crc32(file) != crc:
            return f"{name}: checksum mismatch (data corrupted since it was saved)"
    return None


def _path_key(path) -> tuple:
    """A tree path as plain names: orbax's metadata turns named tuples into dicts."""
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _spec(shape, dtype) -> str:
    return f"{np.dtype(dtype).name}{list(shape)}"


def layout_failure(step_dir: str, name: str, abstract) -> Optional[str]:
    """How item `name` as stored differs from `abstract` (arrays' shapes and dtypes), or None."""
    item_dir = epath.Path(step_dir) / name
    if not item_dir.exists():
        return f"no item {name!r}"
    stored = ocp.StandardCheckpointHandler().metadata(item_dir).tree
    stored = {_path_key(p): x for p, x in jax.tree_util.tree_flatten_with_path(stored)[0]}
    for path, want in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        key, where = _path_key(path), name + jax.tree_util.keystr(path)
        if key not in stored:
            return f"{where} is not in the checkpoint"
        have = stored[key]
        if tuple(have.shape) != tuple(want.shape) or np.dtype(have.dtype) != np.dtype(want.dtype):
            return (f"{where} is {_spec(have.shape, have.dtype)} in the checkpoint, "
                    f"{_spec(want.shape, want.dtype)} expected")
    return None


def _reason(error: BaseException) -> str:
    """One line from a read failure: orbax wraps TensorStore's message (the one that names the
    file and the fault) in an exception whose text is a page of JSON spec."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[0]


def _all_processes(ok: bool) -> bool:
    """Whether `ok` holds on every process: they must agree on which checkpoint to restore."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils
    return bool(np.all(multihost_utils.process_allgather(np.array(ok))))


def _sync(name: str):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


_open_checkpointers: weakref.WeakSet = weakref.WeakSet()
_exit_hook_registered = False


def _close_open_checkpointers():
    """Finishes pending saves of checkpointers nobody closed (an error stopped the program)."""
    for checkpointer in list(_open_checkpointers):
        try:
            checkpointer.close()
        except Exception as e:  # The program is already failing; say why this failed too.
            log.error("Checkpoint save at exit failed: %s", _reason(e))


def _close_at_exit(checkpointer: "Checkpointer"):
    """Closes `checkpointer` at interpreter exit if nobody did. Through threading's exit hooks:
    they run before concurrent.futures stops taking work, which atexit's do not, and orbax's
    writer threads cut off there print pages of "Event loop is closed" after the real error."""
    global _exit_hook_registered
    _open_checkpointers.add(checkpointer)
    if not _exit_hook_registered:
        threading._register_atexit(_close_open_checkpointers)
        _exit_hook_registered = True


class Checkpointer:
    """Saves every `every` steps, keeps the newest `keep`, restores the newest one that restores.

    Closed at interpreter exit if not before (see _close_at_exit).
    """

    def __init__(self, workdir: str, *, every: int, keep: int):
        self.every = every
        self.directory = _directory(workdir)
        self._manager = _manager(workdir, keep)
        self._unsealed: list[int] = []  # Steps saved here whose checksums are not written yet.
        self._closed = False
        _close_at_exit(self)

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def save(self, step: int, items: dict, meta: dict, *, force: bool = False) -> bool:
        """Saves `items` (name -> pytree of arrays, e.g. params, opt_state) and JSON `meta`."""
        if not force and (self.every <= 0 or step % self.every):
            return False
        self.wait()  # Orbax would wait for the previous save here anyway.
        args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
        saved = self._manager.save(step, args=ocp.args.Composite(meta=ocp.args.JsonSave(meta),
                                                                 **args), force=force)
        if saved:
            self._unsealed.append(step)
        return saved

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def restore(self, step: int, abstract_items: dict) -> tuple[dict, dict]:
        """(items, meta); the abstract trees (ShapeDtypeStructs) carry the target shardings.

        Raises:
          CheckpointError: a file differs from its checksum, or an array's shape or dtype from
            `abstract_items`.
          Exception: orbax's own, for a file it cannot read.
        """
        failure = self._check(step, abstract_items)
        if failure:
            raise CheckpointError(f"Checkpoint step {step} ({self.step_dir(step)}) does not "
                                  f"restore: {failure}")
        return self._read(step, abstract_items)

    def _check(self, step: int, abstract_items: dict) -> Optional[str]:
        """Why checkpoint `step` cannot restore into `abstract_items`, before reading an array."""
        step_dir = self.step_dir(step)
        failure = None
        if jax.process_index() == 0:  # Shared files: one process reads them all once.
            failure = checksum_failure(step_dir, items=(*abstract_items, "meta"))
        for name, abstract in abstract_items.items():
            failure = failure or layout_failure(step_dir, name, abstract)
        return failure

    def _read(self, step: int, abstract_items: dict) -> tuple[dict, dict]:
        args = {name: ocp.args.StandardRestore(tree) for name, tree in abstract_items.items()}
        restored = self._manager.restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore(), **args))
        return {name: restored[name] for name in abstract_items}, restored["meta"]

    def restore_latest(self, abstract_items: dict) -> Optional[tuple[int, dict, dict]]:
        """(step, items, meta) of the newest checkpoint that restores; None when there is none.

        A checkpoint that does not restore (a file missing, truncated or corrupted; an array's
        shape or dtype not that of `abstract_items`) is reported in one warning naming its step,
        path and the fault, moved aside to CHECKPOINT_DIR/corrupt-<step>/ (kept for a post
        mortem, never deleted) and the next newest is tried. All processes take the same path.

        Raises:
          CheckpointError: checkpoints exist but none restores. Starting over instead would
            silently throw the run away.
        """
        moved = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                failure = self._check(step, abstract_items)
            except Exception as e:  # Unreadable metadata.
                failure = _reason(e)
            # Agreed before reading: every process must enter orbax's restore, or none.
            if _all_processes(failure is None):
                try:
                    items, meta = self._read(step, abstract_items)
                except Exception as e:  # Orbax raises bare Exceptions for unreadable files.
                    failure = _reason(e)
                if _all_processes(failure is None):
                    return step, items, meta
            moved.append(self._move_aside(step, failure or "failed on another process"))
        if not moved:
            return None
        raise CheckpointError(
            f"No checkpoint in {self.directory} restores: {', '.join(moved)} (moved aside; reasons "
            "logged above). If the model or optimizer config changed, use a new --workdir; to retry "
            "a checkpoint, rename its directory back to its step; to start over, delete them.")

    def _move_aside(self, step: int, failure: str) -> str:
        """Renames STEP to corrupt-<step> (process 0; the others wait); returns the new name."""
        name = f"{CORRUPT_PREFIX}{step}"
        suffix = 1
        while os.path.exists(os.path.join(self.directory, name)):  # Moved aside in an earlier run.
            suffix += 1
            name = f"{CORRUPT_PREFIX}{step}-{suffix}"
        _sync(f"r1jax_checkpoint_move_{step}")  # Every process named it before it moves.
        if jax.process_index() == 0:
            log.warning("Checkpoint step %d (%s) does not restore: %s; moved aside to %s", step,
                        self.step_dir(step), failure, os.path.join(self.directory, name))
            os.rename(self.step_dir(step), os.path.join(self.directory, name))
        _sync(f"r1jax_checkpoint_moved_{step}")
        self._manager.reload()
        return name

    def wait(self):
        """Waits for the pending save, then writes the checksums of completed steps."""
        self._manager.wait_until_finished()
        if jax.process_index() == 0:
            for step in self._unsealed:
                if os.path.isdir(self.step_dir(step)):  # Not deleted since by max_to_keep.
                    write_checksums(self.step_dir(step))
        self._unsealed = []

    def close(self):
        if self._closed:
            return
        self._closed = True
        _open_checkpointers.discard(self)
        try:
            self.wait()
        finally:
            self._manager.close()


def prune(workdir: str, keep: int) -> list[int]:
    """Deletes all but the newest `keep` complete steps under WORKDIR/checkpoints (process 0;
    directories moved aside as corrupt are kept); returns the deleted steps. For a finished run
    whose output lives elsewhere (the pipeline's exported models): a 135M model's step with its
    optimizer state is ~1.6 GB, and a run keeps several."""
    directory = _directory(workdir)
    if not os.path.isdir(directory):
        return []
    steps = sorted((int(name) for name in os.listdir(directory) if name.isdigit()), reverse=True)
    deleted = steps[keep:]
    if jax.process_index() == 0:
        for step in deleted:
            shutil.rmtree(os.path.join(directory, str(step)))
    return deleted


def _lora_base(config: ModelConfig, source: dict, shardings) -> dict:
    """A LoRA run's frozen base as that run loaded it (see `restore_params`), on `shardings`."""
    from r1jax.models import convert, lora, transformer
    if source["path"]:
        _, base = convert.load_pretrained_numpy(source["path"], param_dtype=config.param_dtype)
    else:
        base = lora.base(transformer.init_params(config, jax.random.key(source["seed"])))
    base = lora.with_base_dtype(base, source["dtype"])
    return jax.tree.map(lambda x, s: jax.device_put(x, s), base, lora.base(shardings))


def latest_step(workdir: str) -> Optional[int]:
    """The newest complete checkpoint step under workdir, or None."""
    if not os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
        return None
    manager = _manager(workdir, read_only=True)
    try:
        return manager.latest_step()
    finally:
        manager.close()


def restore_params(workdir: str, step: Optional[int] = None, shardings=None, shapes=None):
    """(model_config, params) of checkpoint `step` (default: newest) in an r1jax workdir.

    `shardings`, a tree like params of jax.sharding.Sharding, places them; default: device 0.
    `shapes`, model_config -> a tree of jax.ShapeDtypeStruct, describes params of another form
    than the policy's (a reward model's backbone and head); default: the policy's.

    A LoRA run's checkpoint holds the adapters only: the base comes back from where that run
    loaded it (meta["lora_base"]: model.path, or the random init of its seed), so that file
    must still be there. The params returned are base and adapters in one tree.

    A PPO run's checkpoint (meta["policy_key"]) holds its value head beside the policy: the
    policy's params are returned, the value head is read (replicated) and dropped, as is a
    separate value model's backbone (meta["value_backbone"]; read on the policy's shardings).
    """
    from r1jax.models.transformer import abstract_params  # Avoids a models <-> checkpoint cycle.
    from r1jax.models import lora
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
        with_lora = config.lora is not None and shapes is None
        policy_key = meta.get("policy_key") if shapes is None else None
        shapes = (shapes or (lambda c: nn.meta.unbox(abstract_params(c))))(config)
        if shardings is None:
            device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            shardings = jax.tree.map(lambda _: device, shapes)
        full_shardings = shardings
        if with_lora:
            shapes, shardings = lora.adapters(shapes), lora.adapters(shardings)
        target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                              shapes, shardings)
        if policy_key:
            from r1jax.models import value_head
            everywhere = jax.sharding.NamedSharding(
                jax.sharding.Mesh(np.array(jax.devices()), ("all",)),
                jax.sharding.PartitionSpec())
            value = jax.tree.map(
                lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=everywhere),
                value_head.abstract_params(config))
            if meta.get("value_backbone"):  # a separate value model: read on the policy's shards
                value[value_head.BACKBONE] = target
            target = {policy_key: target, value_head.VALUE: value}
        step_dir = os.path.join(_directory(workdir), str(step))
        failure = (checksum_failure(step_dir, items=("params",))
                   or layout_failure(step_dir, "params", target))
        if failure:
            raise CheckpointError(f"Checkpoint step {step} ({step_dir}) does not restore: {failure}")
        params = manager.restore(
            step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))["params"]
        if policy_key:
            params = params[policy_key]
        if with_lora:
            params = lora.combine(_lora_base(config, meta["lora_base"], full_shardings), params)
        return config, params
    finally:
        manager.close()
