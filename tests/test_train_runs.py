"""Training binaries end to end on tiny configs: what a run writes, SIGKILL-and-resume giving
the same result as an uninterrupted run, fitting a small data set, and errors named at start-up."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import cold_start_sft
from r1jax import checkpoint
from r1jax.models import policy
from r1jax.train import sft
from tests.test_checkpoint import flip_bytes, params_data_file, truncate
from tests.test_two_process_train import sigkill_when

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(config, workdir, *extra):
    return [sys.executable, "-m", "launch.train", f"--config={config}", f"--workdir={workdir}",
            *extra]


def _env(data_dir):
    return {**os.environ, "R1JAX_DATA_DIR": str(data_dir), "PYTHONPATH": ROOT}


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _without_timings(rows):
    return [{k: v for k, v in r.items() if "second" not in k} for r in rows]


def kill_after_first_checkpoint_and_restart(config, straight, killed, env, *extra):
    """Runs `config` (with `extra` flags) in `killed`, SIGKILLs it once it has written the first
    checkpoint that the finished run in `straight` wrote, and runs it again to the end."""
    first_checkpoint = sorted(int(s) for s in os.listdir(straight / "checkpoints")
                              if s.isdigit())[0]
    sigkill_when(_command(config, killed, *extra), env,
                 lambda: checkpoint.latest_step(str(killed)) == first_checkpoint,
                 f"wrote checkpoint {first_checkpoint}", timeout=600)
    subprocess.run(_command(config, killed, *extra), cwd=ROOT, env=env, check=True, timeout=600,
                   capture_output=True)


@pytest.mark.parametrize("config", ["configs/r1_zero.py:tiny", "configs/cold_start_sft.py:tiny"])
def test_sigkill_then_restart_matches_an_uninterrupted_run(tmp_path, config):
    env = _env(tmp_path / "data")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_command(config, straight), cwd=ROOT, env=env, check=True, timeout=600,
                   capture_output=True)
    rows = _metrics(straight)
    num_steps = rows[-1]["step"]
    assert rows[0]["step"] == 0 and [r["step"] for r in rows[1:]] == list(range(1, num_steps + 1))
    assert all(np.isfinite(r["loss"]) for r in rows[1:])
    # Throughput per phase and device; no MFU on a CPU (its peak is unknown).
    phases = ("rollout_", "update_") if "r1_zero" in config else ("",)
    for r in rows[1:]:
        assert all(r[f"{p}tokens_per_second_per_device"] > 0 for p in phases)
        assert not any(k.endswith("mfu") for k in r)
    if "r1_zero" in config:  # The phases add up to the step; rewards are timed apart.
        assert all(r["sample_seconds"] + r["reward_seconds"] + r["prepare_seconds"]
                   + r["update_seconds"] == pytest.approx(r["seconds_per_step"])
                   and r["reward_seconds"] > 0 and r["host_seconds"] >= 0 for r in rows[1:])
        assert all(r["eval_seconds"] > 0 for r in rows[1:] if "accuracy" in r)
    assert os.listdir(straight / "tensorboard")

    kill_after_first_checkpoint_and_restart(config, straight, killed, env)

    a_config, a = checkpoint.restore_params(str(straight))
    b_config, b = checkpoint.restore_params(str(killed))
    assert a_config == b_config
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert _without_timings(_metrics(killed)) == _without_timings(rows)


def reshape_a_param(step_dir: str):
    """Rewrites a step's params with one array a row short, as a checkpoint of another model
    shape would be, without checksums (as one written before they existed), so that only the
    shape check can catch it."""
    handler = ocp.StandardCheckpointer()
    params = handler.restore(os.path.join(step_dir, "params"))
    leaves, tree = jax.tree.flatten(params)
    leaves[0] = leaves[0][:-1]
    shutil.rmtree(os.path.join(step_dir, "params"))
    handler.save(os.path.join(step_dir, "params"), jax.tree.unflatten(tree, leaves))
    handler.wait_until_finished()
    os.remove(os.path.join(step_dir, checkpoint.CHECKSUMS_FILE))


def _in_params_file(damage):
    return lambda step_dir: damage(params_data_file(os.path.dirname(os.path.dirname(step_dir)),
                                                    int(os.path.basename(step_dir))))


@pytest.mark.parametrize("damage", [_in_params_file(flip_bytes), _in_params_file(truncate),
                                    _in_params_file(os.remove), reshape_a_param],
                         ids=["flipped_bytes", "truncated", "missing_file", "other_shape"])
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_redone_from_the_one_before(
        tmp_path, damage):
    """The SFT tiny run (6 steps, checkpoints at 3 and 6) rerun after its step-6 params were
    damaged: step 6 moves to checkpoints/corrupt-6/, steps 4-6 are redone from step 3, and the
    run ends where the undamaged one did (same params, same metrics)."""
    env = _env(tmp_path / "data")
    straight, damaged = tmp_path / "straight", tmp_path / "damaged"
    config = "configs/cold_start_sft.py:tiny"
    subprocess.run(_command(config, straight), cwd=ROOT, env=env, check=True, timeout=600,
                   capture_output=True)
    shutil.copytree(straight, damaged)
    damage(str(damaged / "checkpoints" / "6"))
    rerun = subprocess.run(_command(config, damaged), cwd=ROOT, env=env, timeout=600,
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert os.path.isdir(damaged / "checkpoints" / "corrupt-6")
    assert "Resumed from step 3" in rerun.stderr
    for x, y in zip(jax.tree.leaves(checkpoint.restore_params(str(straight))[1]),
                    jax.tree.leaves(checkpoint.restore_params(str(damaged))[1])):
        np.testing.assert_array_equal(x, y)
    assert _without_timings(_metrics(damaged)) == _without_timings(_metrics(straight))


def test_grpo_run_logs_rewards_accuracy_and_samples(tmp_path):
    subprocess.run(_command("configs/r1_zero.py:tiny", tmp_path / "w",
                            "--config.train.profile_steps=1"), cwd=ROOT,
                   env=_env(tmp_path / "data"), check=True, timeout=600, capture_output=True)
    # train.profile_steps=1: step 2's jax.profiler trace, one file, in WORKDIR/profile.
    assert len(list((tmp_path / "w" / "profile").rglob("*.xplane.pb"))) == 1
    rows = _metrics(tmp_path / "w")
    assert "accuracy" in rows[0] and "accuracy" in rows[2] and "accuracy" in rows[-1]
    for key in ("reward_mean", "reward/math_accuracy", "kl", "clip_high", "entropy",
                "completion_length", "tokens_per_second"):
        assert key in rows[1], key
    with open(tmp_path / "w" / "samples.jsonl") as f:
        assert {"prompt", "completion", "reward"} <= set(json.loads(f.readline()))
    # The workdir alone is enough to evaluate: newest checkpoint, the tokenizer saved beside it.
    config, _, tokenizer, step = policy.load_model(str(tmp_path / "w"))
    assert step == rows[-1]["step"] and len(tokenizer) == config.vocab_size


def test_unknown_config_key_fails_at_start_up(tmp_path):
    result = subprocess.run(
        _command("configs/r1_zero.py:tiny", tmp_path / "w", "--config.rl.group_size=4"),
        cwd=ROOT, env=_env(tmp_path / "data"), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "group_size" in result.stderr


def test_tiny_sft_fits_a_small_data_set(tmp_path, monkeypatch):
    config = cold_start_sft.get_config("tiny")
    config.data.update(name="fit8", data_dir=str(tmp_path / "data"),
                       generate=dict(operations="+", digits=1, num_train=8, num_test=4, seed=1))
    # One example per row, all 8 in every batch of the 8-device mesh.
    config.sft.update(batch_size=8, packing=False, eval_rows=0)
    config.optimizer.update(decay="constant", learning_rate=1e-2)
    config.train.update(num_steps=30, eval_every=0, checkpoint_every=0)
    config.eval.max_problems = 0
    metrics = sft.train(config, str(tmp_path / "w"))
    first = _metrics(tmp_path / "w")[1]["loss"]
    assert first > 5.0  # a random model starts near ln(49152) ≈ 10.8
    assert metrics["loss"] < 0.1, metrics["loss"]


def test_malformed_sft_row_names_file_and_line(tmp_path):
    traces = tmp_path / "traces.jsonl"
    traces.write_text('{"prompt": "1 + 1?", "completion": "2"}\n{"prompt": "2 + 2?"}\n')
    result = subprocess.run(
        _command("configs/distill.py:tiny", tmp_path / "w", f"--config.data.input={traces}"),
        cwd=ROOT, env=_env(tmp_path / "data"), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"{traces}:2" in result.stderr and "completion" in result.stderr
