"""r1jax.checkpoint: a checkpoint that fails to restore is reported, moved aside, and the next
newest restores instead; with none left, a clear error."""
import glob
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import checkpoint
from r1jax.errors import CheckpointError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE = jax.sharding.SingleDeviceSharding(jax.devices()[0])


def items_at(step: int, width: int = 64, dtype=jnp.float32) -> dict:
    """Random weights (incompressible, so stored in data files, not inlined) that differ by step,
    and an optimizer-state-like tuple."""
    w = jax.random.normal(jax.random.key(step), (32, width)).astype(dtype)
    return {"params": {"w": w, "b": jnp.full((4,), float(step))},
            "opt_state": (jnp.asarray(step, jnp.int32), {"mu": w * 0.5})}


def abstract(items: dict) -> dict:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=DEVICE), items)


def save_steps(workdir, steps=(1, 2, 3), **kwargs) -> checkpoint.Checkpointer:
    saver = checkpoint.Checkpointer(str(workdir), every=1, keep=10)
    for step in steps:
        saver.save(step, items_at(step, **kwargs), {"step": step})
    saver.close()
    return checkpoint.Checkpointer(str(workdir), every=1, keep=10)


def params_data_file(workdir, step: int) -> str:
    """The largest data file of a step's params: where the weights' bytes are."""
    files = glob.glob(os.path.join(workdir, "checkpoints", str(step), "params", "**", "d", "*"),
                      recursive=True)
    return max(files, key=os.path.getsize)


def flip_bytes(path: str):
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    open(path, "wb").write(bytes(data))


def truncate(path: str):
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])


def assert_same(tree, expected):
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def restore_latest_logged(saver, caplog, target=None):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="r1jax.checkpoint"):
        result = saver.restore_latest(abstract(target or items_at(0)))
    return result, [r.getMessage() for r in caplog.records if r.name == "r1jax.checkpoint"]


def test_the_newest_checkpoint_restores_exactly(tmp_path, caplog):
    saver = save_steps(tmp_path)
    (step, items, meta), messages = restore_latest_logged(saver, caplog)
    assert (step, meta, messages) == (3, {"step": 3}, [])
    assert_same(items, items_at(3))
    saver.close()


def test_prune_keeps_the_newest_steps_and_what_was_moved_aside_and_they_restore(tmp_path, caplog):
    save_steps(tmp_path, steps=(1, 2, 3, 4)).close()
    flip_bytes(params_data_file(tmp_path, 4))
    saver = checkpoint.Checkpointer(str(tmp_path), every=1, keep=10)
    restore_latest_logged(saver, caplog)  # moves step 4 aside
    saver.close()
    assert checkpoint.prune(str(tmp_path), keep=1) == [2, 1]
    assert sorted(os.listdir(os.path.join(tmp_path, "checkpoints"))) == ["3", "corrupt-4"]
    saver = checkpoint.Checkpointer(str(tmp_path), every=1, keep=10)
    (step, items, _), messages = restore_latest_logged(saver, caplog)
    assert (step, messages) == (3, [])
    assert_same(items, items_at(3))
    saver.close()
    assert checkpoint.prune(str(tmp_path), keep=0) == [3]
    assert checkpoint.prune(str(tmp_path / "elsewhere"), keep=0) == []


def test_no_checkpoints_gives_none(tmp_path):
    saver = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
    assert saver.restore_latest(abstract(items_at(0))) is None
    saver.close()


@pytest.mark.parametrize("damage, reason", [
    (flip_bytes, "checksum mismatch"),
    (truncate, "bytes, "),
    (os.remove, "missing file params"),
])
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_previous_one_restores(
        tmp_path, caplog, damage, reason):
    saver = save_steps(tmp_path)
    damage(params_data_file(tmp_path, 3))
    (step, items, meta), messages = restore_latest_logged(saver, caplog)
    assert (step, meta) == (2, {"step": 2})
    assert_same(items, items_at(2))
    corrupt = os.path.join(tmp_path, "checkpoints", "corrupt-3")
    assert os.path.isdir(corrupt) and not os.path.exists(os.path.join(tmp_path, "checkpoints", "3"))
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "step 3" in messages[0] and reason in messages[0] and corrupt in messages[0]
    saver.close()


def test_flipped_bytes_would_otherwise_restore_as_wrong_numbers(tmp_path):
    """Why checksums: without them orbax reads the damaged weights without complaint."""
    saver = save_steps(tmp_path)
    flip_bytes(params_data_file(tmp_path, 3))
    os.remove(os.path.join(tmp_path, "checkpoints", "3", checkpoint.CHECKSUMS_FILE))
    step, items, _ = saver.restore_latest(abstract(items_at(0)))
    assert step == 3
    assert not np.array_equal(np.asarray(items["params"]["w"]), np.asarray(items_at(3)["params"]["w"]))
    saver.close()


def test_an_unreadable_checkpoint_without_checksums_falls_back_with_orbax_reason(tmp_path, caplog):
    """Checkpoints of a run killed before its checksums were written: orbax's read error is the
    reason, cut to its one line that names the file."""
    saver = save_steps(tmp_path)
    os.remove(os.path.join(tmp_path, "checkpoints", "3", checkpoint.CHECKSUMS_FILE))
    truncate(params_data_file(tmp_path, 3))
    (step, _, _), messages = restore_latest_logged(saver, caplog)
    assert step == 2
    assert len(messages) == 1 and "\n" not in messages[0] and "step 3" in messages[0]
    assert "OCDBT" in messages[0] and "TensorStore({" not in messages[0]
    saver.close()


@pytest.mark.parametrize("changed, expected", [
    ({"width": 48}, "['mu'] is float32[32, 48] in the checkpoint, float32[32, 64] expected"),
    ({"dtype": jnp.bfloat16}, "['mu'] is bfloat16[32, 64] in the checkpoint, float32[32, 64] expected"),
])
def test_a_shape_or_dtype_other_than_the_target_is_moved_aside(tmp_path, caplog, changed, expected):
    save_steps(tmp_path, steps=(1, 2)).close()
    saver = save_steps(tmp_path, steps=(3,), **changed)
    (step, items, _), messages = restore_latest_logged(saver, caplog)
    assert step == 2
    assert_same(items, items_at(2))
    assert len(messages) == 1 and expected in messages[0]
    saver.close()


def test_an_item_missing_from_the_checkpoint_is_named(tmp_path, caplog):
    saver = save_steps(tmp_path, steps=(1,))
    target = {**items_at(0), "reference": items_at(0)["params"]}
    with pytest.raises(CheckpointError, match="corrupt-1"):
        restore_latest_logged(saver, caplog, target)
    assert "no item 'reference'" in caplog.records[-1].getMessage()
    saver.close()


def test_with_none_left_it_stops_naming_what_was_moved(tmp_path, caplog):
    saver = save_steps(tmp_path, steps=(1, 2))
    for step in (1, 2):
        flip_bytes(params_data_file(tmp_path, step))
    with pytest.raises(CheckpointError) as error:
        restore_latest_logged(saver, caplog)
    message = str(error.value)
    assert "corrupt-2, corrupt-1" in message and "new --workdir" in message
    assert sorted(os.listdir(os.path.join(tmp_path, "checkpoints"))) == ["corrupt-1", "corrupt-2"]
    saver.close()


def test_a_run_that_fell_back_saves_over_the_step_again(tmp_path):
    """The resumed run writes step 3 anew; a second bad step 3 keeps the first one aside."""
    saver = save_steps(tmp_path)
    flip_bytes(params_data_file(tmp_path, 3))
    assert saver.restore_latest(abstract(items_at(0)))[0] == 2
    saver.save(3, items_at(3), {"step": 3})
    saver.close()
    saver = checkpoint.Checkpointer(str(tmp_path), every=1, keep=10)
    step, items, _ = saver.restore_latest(abstract(items_at(0)))
    assert step == 3
    assert_same(items, items_at(3))
    truncate(params_data_file(tmp_path, 3))
    assert saver.restore_latest(abstract(items_at(0)))[0] == 2
    assert {"corrupt-3", "corrupt-3-2"} <= set(os.listdir(os.path.join(tmp_path, "checkpoints")))
    saver.close()


def test_restore_params_refuses_a_corrupted_checkpoint(tmp_path):
    from r1jax.models import config as model_configs
    from r1jax.models.transformer import abstract_params
    import flax.linen as nn

    config = model_configs.ModelConfig(architecture="llama", vocab_size=128, embed_dim=32, num_layers=1, num_heads=2,
                                       num_kv_heads=1, head_dim=16, mlp_dim=64)
    shapes = nn.meta.unbox(abstract_params(config))
    params = jax.tree.map(lambda s: jax.random.normal(jax.random.key(0), s.shape, s.dtype), shapes)
    saver = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
    saver.save(1, {"params": params}, {"step": 1,
                                       "model_config": checkpoint.model_config_to_dict(config)})
    saver.close()
    assert checkpoint.restore_params(str(tmp_path))[0] == config
    flip_bytes(params_data_file(tmp_path, 1))
    with pytest.raises(CheckpointError, match="step 1 .* checksum mismatch"):
        checkpoint.restore_params(str(tmp_path))


def test_an_error_during_an_async_save_exits_without_teardown_noise(tmp_path):
    """Orbax's writer threads, left running when an error ends the program, used to print
    pages of 'Event loop is closed' after the error's own traceback."""
    script = (
        "import jax.numpy as jnp\n"
        "from r1jax import checkpoint\n"
        f"saver = checkpoint.Checkpointer({str(tmp_path)!r}, every=1, keep=2)\n"
        "saver.save(1, {'params': {f'w{i}': jnp.ones((64, 64)) * i for i in range(20)}}, {})\n"
        "raise ValueError('stopped')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1 and "ValueError: stopped" in result.stderr
    assert "Event loop is closed" not in result.stderr and "meta_path" not in result.stderr
    assert result.stderr.count("Traceback") == 1
    assert checkpoint.latest_step(str(tmp_path)) == 1  # The save completed before exit.
