"""All-scenario RL: the prompt mixture's split and state, and configs/all_scenario_rl.py:tiny
through launch.train with a tiny reward model trained here: per-source metrics, and a run
SIGKILLed after its first checkpoint ending where an uninterrupted one does."""
import subprocess

import numpy as np
import pytest

from configs import all_scenario_rl
from configs import reward_model as rm_configs
from r1jax.data import mixture, pairs
from r1jax.train import reward_model
from tests.test_train_runs import (
    ROOT,
    _command,
    _env,
    _metrics,
    _without_timings,
    kill_after_first_checkpoint_and_restart,
)

CONFIG = "configs/all_scenario_rl.py:tiny"


def test_source_counts_by_largest_remainder():
    assert mixture.source_counts({"a": 0.5, "b": 0.25, "c": 0.25}, 4) == {"a": 2, "b": 1, "c": 1}
    # 10 × (3/7, 2/7, 2/7) = 4.29, 2.86, 2.86: floors 4, 2, 2; the two largest remainders (b, c
    # tie at .86, ahead of a's .29) get the 2 left.
    assert mixture.source_counts({"a": 3, "b": 2, "c": 2}, 10) == {"a": 4, "b": 3, "c": 3}
    assert mixture.source_counts({"a": 1, "b": 1}, 8, unit=2) == {"a": 4, "b": 4}
    with pytest.raises(ValueError, match=r"sources \['b'\] get no prompt of 4"):
        mixture.source_counts({"a": 10, "b": 1}, 4)
    with pytest.raises(ValueError, match="must be > 0"):
        mixture.source_counts({"a": 1, "b": 0}, 4)


def test_rl_prompts_of_pairs_are_distinct_single_turn_questions():
    records = [{"id": "1", "prompt": "\n\nHuman: Hi?\n\nAssistant:"},
               {"id": "2", "prompt": "\n\nHuman: Hi?\n\nAssistant:"},
               {"id": "3", "prompt": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:"},
               {"id": "4", "prompt": "Write a poem."}]
    out, stats = pairs.rl_prompts(records)
    assert out == [{"id": "1", "question": "Hi?"}, {"id": "4", "question": "Write a poem."}]
    assert stats == {"pairs": 4, "prompts": 2, "multi_turn_dropped": 1}


def _tiny_reward_model(tmp_path) -> str:
    config = rm_configs.get_config("tiny")
    config.data.data_dir = str(tmp_path / "data")
    config.train.update(num_steps=2, eval_every=2, checkpoint_every=2)
    workdir = str(tmp_path / "rm")
    reward_model.train(config, workdir)
    return workdir


def test_tiny_run_logs_each_source_and_resumes_exactly_after_sigkill(tmp_path):
    rm = _tiny_reward_model(tmp_path)
    flags = (f"--config.mixture.helpful.rewards_params.helpfulness.path={rm}",
             f"--config.mixture.harmless.rewards_params.harmlessness.path={rm}")
    env = _env(tmp_path / "data")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_command(CONFIG, straight, *flags), cwd=ROOT, env=env, check=True,
                   timeout=600, capture_output=True)
    rows = _metrics(straight)
    assert [r["step"] for r in rows] == list(range(rows[-1]["step"] + 1))
    config = all_scenario_rl.get_config("tiny")
    counts = mixture.source_counts({n: s.proportion for n, s in config.mixture.items()},
                                   config.rl.prompts_per_step)
    assert counts == {"reasoning": 4, "helpful": 2, "harmless": 2}
    for row in rows[1:]:
        for key in ("reasoning/accuracy", "reasoning/reward/math_accuracy",
                    "reasoning/reward/language_consistency", "helpful/reward/helpfulness",
                    "harmless/reward/harmlessness", "helpful/final_answer_empty",
                    "harmless/final_answer_empty"):
            assert np.isfinite(row[key]), key
        for source in counts:
            assert 0 < row[f"{source}/response_length"] <= config.rl.max_new_tokens
            assert row[f"{source}/reward_errors/" + next(iter(config.mixture[source].rewards))] == 0
        # A source's total is its rewards' weighted sum; the step's, the sources' by prompts.
        assert row["helpful/reward"] == pytest.approx(row["helpful/reward/helpfulness"], abs=1e-5)
        total = sum(counts[s] * row[f"{s}/reward"] for s in counts) / sum(counts.values())
        assert row["reward/total"] == pytest.approx(total, abs=1e-5)
        assert "reward/helpfulness" not in row  # only per source: rows of others are not its
    assert "accuracy" in rows[0] and "accuracy" in rows[-1]
    # Evaluations score fixed held-out general prompts with each source's reward model.
    for row in (r for r in rows if "accuracy" in r):
        for source, reward in (("helpful", "helpfulness"), ("harmless", "harmlessness")):
            assert np.isfinite(row[f"eval_{source}/reward/{reward}"])
            assert row[f"eval_{source}/reward"] == pytest.approx(
                row[f"eval_{source}/reward/{reward}"], abs=1e-6)
            assert 0 < row[f"eval_{source}/response_length"] <= config.rl.max_new_tokens
            assert 0 <= row[f"eval_{source}/final_answer_empty"] <= 1
        assert not any(k.startswith("eval_reasoning/") for k in row)  # rules: no RM

    kill_after_first_checkpoint_and_restart(CONFIG, straight, killed, env, *flags)
    assert _without_timings(_metrics(killed)) == _without_timings(rows)
