"""The training binary across two processes on localhost matches one process with as many devices.

Two `python -m launch.train` processes with one CPU device each join through r1jax/distributed.py
(R1JAX_COORDINATOR / R1JAX_NUM_PROCESSES / R1JAX_PROCESS_ID, a local coordinator) into one
2-device mesh; one process with two fake devices runs the same mesh alone. Both train a tiny
config, cold-start SFT, a reward model or R1-Zero GRPO (sampling, statically or continuously
batched, rewards, DAPO group filtering and the held-out evaluation across processes); the metrics in metrics.jsonl (written by process 0 only)
must agree to 1e-5.
"""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import jax
import numpy as np
import pytest

from configs import cold_start_sft, r1_zero, reward_model
from r1jax import checkpoint, data
from r1jax.models import reward_model as rm

REPO = pathlib.Path(__file__).resolve().parent.parent
TIMEOUT_S = 240  # An idle 2-core machine needs ~60 s for all three processes together.
NUM_STEPS = 3
DISTRIBUTED_ENV = ("R1JAX_COORDINATOR", "R1JAX_NUM_PROCESSES", "R1JAX_PROCESS_ID",
                   "R1JAX_DISTRIBUTED")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GRPO_METRICS = ("loss", "reward_mean", "reward/language_consistency", "kl", "entropy",
                "accuracy", "groups_informative")
# config, the metrics that must agree, extra flags.
STAGES = {
    "sft": (cold_start_sft, ("loss", "eval_loss"), ["--config.eval.max_problems=0"]),
    "grpo": (r1_zero, GRPO_METRICS, ["--config.rl.filter_groups=True"]),
    # Rollouts and the evaluation through continuous batching's slots, split over the processes:
    # every process runs the refill loop on the same gathered slot states.
    "grpo_continuous": (r1_zero, GRPO_METRICS,
                        ["--config.rl.filter_groups=True", "--config.rl.batching=continuous",
                         "--config.rl.num_slots=6", "--config.eval.batching=continuous"]),
    "reward_model": (reward_model, ("loss", "pair_accuracy", "eval_pair_accuracy"), []),
}
# The params' form where it is not the policy's (checkpoint.restore_params' `shapes`).
PARAM_SHAPES = {"reward_model": rm.abstract_params}


def train_command(stage: str, workdir: pathlib.Path, data_dir: pathlib.Path) -> list[str]:
    config, _, extra = STAGES[stage]
    return [sys.executable, "-m", "launch.train", f"--config={config.__file__}:tiny",
            f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
            f"--config.train.num_steps={NUM_STEPS}", f"--config.train.eval_every={NUM_STEPS}",
            *extra]


def environment(devices: int, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), **extra)
    return env


def prepare_data(stage: str, data_dir: pathlib.Path):
    """Writes the data set once, so the three processes only read it (no racing writers)."""
    config = STAGES[stage][0].get_config("tiny")
    config.data.data_dir = str(data_dir)
    for split in (config.data.train_split, config.data.eval_split):
        data.open_split(config.data, split)


def run_all(commands: list[tuple[list[str], dict]]):
    """Runs the processes concurrently, killing all of them on a timeout; fails on any error."""
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for cmd, env in commands]
    try:
        logs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, f"{p.args} failed (rc={p.returncode}):\n{log[-4000:]}"


def sigkill_when(command: list[str], env: dict, ready: Callable[[], bool], what: str,
                 timeout: float = TIMEOUT_S) -> None:
    """Starts `command` and SIGKILLs it as soon as `ready()` holds (polled); fails, naming
    `what` it waited for, if the process ends or `timeout` passes first."""
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, f"never {what}"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


def read_metrics(workdir: pathlib.Path) -> list[dict]:
    with open(workdir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("stage", STAGES)
def test_two_processes_train_like_one(stage, tmp_path):
    data_dir = tmp_path / "data"
    prepare_data(stage, data_dir)
    one, two = tmp_path / "one_process", tmp_path / "two_processes"
    coordinator = f"127.0.0.1:{free_port()}"
    run_all([(train_command(stage, one, data_dir), environment(devices=2))] + [
        (train_command(stage, two, data_dir),
         environment(devices=1, R1JAX_COORDINATOR=coordinator, R1JAX_NUM_PROCESSES="2",
                     R1JAX_PROCESS_ID=str(i))) for i in range(2)])

    single, multi = read_metrics(one), read_metrics(two)
    # Process 0 alone writes: one line per step, none duplicated by process 1.
    assert [m["step"] for m in multi] == [m["step"] for m in single] == list(range(NUM_STEPS + 1))
    compared = set()
    for a, b in zip(single, multi):
        for key in STAGES[stage][1]:
            if key in a:
                np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-5,
                                           err_msg=f"{key} at step {a['step']}")
                compared.add(key)
    assert compared == set(STAGES[stage][1])  # Every listed metric was logged at least once.
    assert (two / "checkpoints" / str(NUM_STEPS)).is_dir()
    _, params_one = checkpoint.restore_params(str(one), shapes=PARAM_SHAPES.get(stage))
    _, params_two = checkpoint.restore_params(str(two), shapes=PARAM_SHAPES.get(stage))
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                         params_one, params_two)
    assert max(jax.tree.leaves(moved)) < 1e-5, moved
