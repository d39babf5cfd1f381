"""launch/evaluate.py: data and model resolution, its clear errors, and a whole run from a workdir."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from launch import evaluate as launcher
from r1jax import models
from r1jax.models import policy
from tests.test_eval import byte_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_jsonl(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return str(path)


def test_jsonl_rows_of_each_form_become_problems(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"question": "Q1", "answer": "work #### 1,200"},  # GSM8K.
        {"problem": "Q2", "solution": "so \\boxed{\\frac{1}{2}}"},  # MATH.
        {"question": "Q3", "answer": "7"},  # Already normalised.
    ])
    problems = launcher.load_problems(path, "math_accuracy")
    assert [(p["question"], p["answer"]) for p in problems] == [
            ("Q1", "1200"), ("Q2", "\\frac{1}{2}"), ("Q3", "7")]


def test_a_prepared_data_set_split_becomes_problems(tmp_path):
    from r1jax.data import builders

    builders.prepare("arithmetic", name="sums", data_dir=str(tmp_path), num_train=3, num_test=2, seed=0,
                     digits=1, operations="+")
    problems = launcher.load_problems("sums", "math_accuracy", str(tmp_path), "test")
    assert len(problems) == 2 and all(p["question"].startswith("What is") and p["answer"] for p in problems)


def test_a_row_without_answer_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "Q1", "answer": "1"}, {"question": "Q2"}])
    with pytest.raises(ValueError, match=rf"{path}:2: missing field 'answer'"):
        launcher.load_problems(path, "math_accuracy")


def test_missing_data_file_unknown_reward_and_data_set_without_data_dir(tmp_path):
    with pytest.raises(ValueError, match="unknown reward 'math_acuracy'; registered rewards: .*math_accuracy"):
        launcher.load_problems(str(tmp_path / "absent.jsonl"), "math_acuracy")
    with pytest.raises(FileNotFoundError, match="no such file"):
        launcher.load_problems(str(tmp_path / "absent.jsonl"), "math_accuracy")
    with pytest.raises(ValueError, match="pass --data_dir"):
        launcher.load_problems("gsm8k", "math_accuracy")


def test_a_model_path_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        policy.load_model(str(tmp_path / "no_such_model"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """An r1jax workdir with checkpoints at steps 1 and 2 (different params), and a tokenizer dir."""
    checkpoint = pytest.importorskip("r1jax.checkpoint", reason="r1jax.checkpoint (the trainer's) not there yet")
    root = tmp_path_factory.mktemp("eval_launch")
    tokenizer = byte_tokenizer()
    tokenizer.save_pretrained(root / "tokenizer")
    config = models.preset("tiny_llama", vocab_size=len(tokenizer))
    saver = checkpoint.Checkpointer(str(root / "work"), every=1, keep=5)
    params_by_step = {}
    for step in (1, 2):
        params_by_step[step] = models.init_params(config, jax.random.key(step))
        saver.save(step, {"params": params_by_step[step]},
                   {"model_config": checkpoint.model_config_to_dict(config)}, force=True)
    saver.wait()
    saver.close()
    return {"root": root, "workdir": str(root / "work"), "tokenizer": str(root / "tokenizer"),
            "config": config, "params": params_by_step}


def test_a_workdir_gives_its_newest_checkpoint(workdir):
    config, params, tokenizer, step = policy.load_model(workdir["workdir"], workdir["tokenizer"])
    assert step == 2 and config == workdir["config"]
    jax.tree.map(np.testing.assert_array_equal, params, workdir["params"][2])
    assert len(tokenizer) == config.vocab_size


def test_a_checkpoint_step_is_read_or_refused(workdir):
    path = os.path.join(workdir["workdir"], "checkpoints", "1")
    _, params, _, step = policy.load_model(path, workdir["tokenizer"])
    assert step == 1
    jax.tree.map(np.testing.assert_array_equal, params, workdir["params"][1])
    with pytest.raises(FileNotFoundError, match=r"step 7 not found.*available steps: \[1, 2\]"):
        policy.load_model(os.path.join(workdir["workdir"], "checkpoints", "7"), workdir["tokenizer"])
    with pytest.raises(ValueError, match="pass --tokenizer"):
        policy.load_model(workdir["workdir"])


def test_a_trainer_starts_from_a_workdir(workdir):
    """config.model.path may name a workdir (or one of its checkpoints), as a stage's config
    takes the stage before it: its params, with the section's settings (dtype) applied."""
    from configs import common
    section = common.model_config()
    section.update(path=os.path.join(workdir["workdir"], "checkpoints", "1"),
                   tokenizer=workdir["tokenizer"], dtype="bfloat16")
    config, params, tokenizer = models.load_policy(section)
    assert config.dtype == "bfloat16" and config.num_layers == workdir["config"].num_layers
    jax.tree.map(np.testing.assert_array_equal, params, workdir["params"][1])
    assert len(tokenizer) == config.vocab_size
    section.update(path=workdir["workdir"], tokenizer="")
    with pytest.raises(ValueError, match="model.tokenizer"):  # this workdir saved no tokenizer
        models.load_policy(section)


def run_launcher(*flags):
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}  # One device is enough here.
    return subprocess.run([sys.executable, "-m", "launch.evaluate", *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_whole_run_from_a_workdir(workdir):
    data = write_jsonl(workdir["root"] / "test.jsonl", [
        {"question": "What is 2 + 2?", "answer": "4"},
        {"question": "What is 3 + 3?", "answer": "so #### 6"},
        {"question": "What is 4 + 4?", "answer": "8"},
    ])
    out = workdir["root"] / "out"
    result = run_launcher("--config=configs/eval.py:tiny", f"--model={workdir['workdir']}",
                          f"--tokenizer={workdir['tokenizer']}", f"--data={data}", f"--output_dir={out}",
                          "--config.max_problems=2")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["checkpoint_step"] == 2 and summary["num_problems"] == 2 and summary["k"] == 4
    assert {"pass@1", "pass@2", "pass@4", "cons@4"} <= set(summary)
    problems = [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]
    assert len(problems) == 2
    for problem in problems:
        assert {"prompt", "completions", "extracted_answers", "correct"} <= set(problem)
        assert len(problem["completions"]) == len(problem["extracted_answers"]) == len(problem["correct"]) == 4
    assert problems[0]["prompt"] == "What is 2 + 2?"  # The tiny config's "plain" template.
    assert "pass@1" in result.stdout and "cons@4" in result.stdout


def test_launcher_exits_with_the_message(tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", [{"question": "Q"}])
    result = run_launcher("--config=configs/eval.py:tiny", f"--model={tmp_path}/nowhere", f"--data={data}",
                          f"--output_dir={tmp_path}/out")
    assert result.returncode != 0
    assert f"error: {data}:1: missing field 'answer'" in result.stderr
