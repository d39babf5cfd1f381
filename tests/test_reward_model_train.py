"""The reward-model stage through launch.train on its tiny config: what a run writes, and a run
SIGKILLed after its first checkpoint and restarted ending exactly where an uninterrupted one does."""
import json
import subprocess

import jax
import numpy as np

from r1jax import checkpoint
from r1jax.models import reward_model as rm
from tests.test_train_runs import (
    ROOT,
    _command,
    _env,
    _metrics,
    _without_timings,
    kill_after_first_checkpoint_and_restart,
)

CONFIG = "configs/reward_model.py:tiny"


def test_tiny_reward_model_run_logs_pairs_and_resumes_exactly_after_sigkill(tmp_path):
    env = _env(tmp_path / "data")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_command(CONFIG, straight), cwd=ROOT, env=env, check=True, timeout=600,
                   capture_output=True)
    rows = _metrics(straight)
    assert [r["step"] for r in rows] == list(range(rows[-1]["step"] + 1))
    assert "eval_pair_accuracy" in rows[0] and "eval_pair_accuracy" in rows[-1]
    for key in ("loss", "pair_accuracy", "margin", "chosen_reward", "rejected_reward"):
        assert np.isfinite(rows[1][key]), key
    with open(straight / "reward_model.json") as f:
        assert json.load(f)["reward_std"] == rows[-1]["eval_reward_std"]

    kill_after_first_checkpoint_and_restart(CONFIG, straight, killed, env)

    a = checkpoint.restore_params(str(straight), shapes=rm.abstract_params)[1]
    b = checkpoint.restore_params(str(killed), shapes=rm.abstract_params)[1]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert _without_timings(_metrics(killed)) == _without_timings(rows)
