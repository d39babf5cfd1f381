"""launch/sweep.py and configs/sweeps: trial lists, names, commands, skipping, summary tables, and
a real sweep of 4 tiny R1-Zero trials that a rerun skips."""
import csv
import json
import os
import pathlib
import shlex
import struct
import subprocess
import sys

import pytest
from tensorboardX.proto import event_pb2

from configs import r1_zero
from configs.sweeps import grid, log_uniform, random_search, round_significant
from launch import sweep
from r1jax.errors import UserError

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY_SWEEP = "configs/sweeps/r1_zero_tiny.py"
TIMEOUT_S = 600


# ------------------------------------------------------------------------- trial lists

def test_grid_is_every_combination_first_key_slowest():
    assert grid({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    with pytest.raises(ValueError, match="'b'"):
        grid({"a": [1], "b": []})


def test_random_search_is_seeded_distinct_and_in_range():
    space = {"optimizer.learning_rate": log_uniform(1e-6, 1e-4), "rl.num_generations": [4, 8]}
    trials = random_search(space, num_trials=6, seed=3)
    assert trials == random_search(space, num_trials=6, seed=3)
    assert trials != random_search(space, num_trials=6, seed=4)
    assert len({sweep.trial_name(t) for t in trials}) == 6
    for t in trials:
        assert 1e-6 <= t["optimizer.learning_rate"] <= 1e-4
        assert t["optimizer.learning_rate"] == round_significant(t["optimizer.learning_rate"])
        assert t["rl.num_generations"] in (4, 8)
    with pytest.raises(ValueError, match="fewer than 3"):
        random_search({"a": [1, 2]}, num_trials=3)


def test_sweep_files_load_with_their_argument():
    assert len(sweep.load_sweep(TINY_SWEEP)) == 4
    assert len(sweep.load_sweep("configs/sweeps/r1_zero_grid.py")) == 12
    assert len(sweep.load_sweep("configs/sweeps/r1_zero_random.py:5")) == 5
    with pytest.raises(FileNotFoundError):
        sweep.load_sweep("configs/sweeps/missing.py")


def test_a_file_that_is_not_a_sweep_is_refused_by_name():
    """configs/sweeps/__init__.py (helpers, a dataclass) loads, and is named as not a sweep."""
    with pytest.raises(UserError, match=r"configs/sweeps/__init__.py is not a sweep file: it "
                       r"defines no get_sweep\(arg\)"):
        sweep.load_sweep("configs/sweeps/__init__.py")


@pytest.mark.parametrize("body, fault", [
    ("def get_sweep(arg):\n    return {'rl.beta': 0.1}", "got a dict: {'rl.beta': 0.1}"),
    ("def get_sweep(arg):\n    return []", "got an empty list"),
    ("def get_sweep(arg):\n    return [{'rl.beta': 0.1}, 3]", "trial 1 is a int: 3"),
    ("def get_sweep(arg):\n    return [{'rl': {'beta': 0.1}}]",
     "trial 0 has a dict under 'rl': write its entries as dotted keys"),
    ("def get_sweep(arg):\n    return [{'rl beta': 0.1}]",
     "trial 0 has the key 'rl beta', not a dotted config key"),
    ("def get_sweep(arg):\n    return [{'rl.beta': 1 / int(arg)}]",
     "get_sweep('0') of {path} failed: ZeroDivisionError"),
    ("get_sweep = [{'rl.beta': 0.1}]", "{path} is not a sweep file"),
    ("def get_sweep(arg) return []", "{path}: the file does not load: SyntaxError"),
])
def test_a_sweep_file_returning_anything_but_trials_is_refused_naming_file_and_fault(
        tmp_path, body, fault):
    path = tmp_path / "my_sweep.py"
    path.write_text(body + "\n")
    with pytest.raises(UserError) as error:
        sweep.load_sweep(f"{path}:0")
    assert fault.replace("{path}", str(path)) in str(error.value) and str(path) in str(error.value)


def test_a_sweep_file_may_define_dataclasses(tmp_path):
    """Dataclasses look their module up in sys.modules while the file runs."""
    path = tmp_path / "with_dataclass.py"
    path.write_text("from __future__ import annotations\nimport dataclasses\n\n"
                    "@dataclasses.dataclass\nclass Point:\n    beta: float\n\n"
                    "def get_sweep(arg):\n    return [{'rl.beta': Point(0.5).beta}]\n")
    assert sweep.load_sweep(str(path)) == [{"rl.beta": 0.5}]


# ------------------------------------------------------------------------- names and commands

def test_trial_names_are_short_readable_and_unambiguous():
    assert sweep.trial_name({"optimizer.learning_rate": 1e-3, "rl.beta": 0.04}) == \
        "lr=0.001,beta=0.04"
    assert sweep.trial_name({"rl.num_generations": 16, "rl.scale_by_std": False}) == \
        "G=16,scale_by_std=False"
    assert sweep.trial_name({"a.seed": 1, "b.seed": 2}) == "a.seed=1,b.seed=2"
    assert "/" not in sweep.trial_name({"model.path": "/x/y.gguf"})


def test_values_are_written_as_the_config_flags_read_them():
    assert sweep.format_value(3e-6) == "3e-06"
    assert sweep.format_value(0.1 + 0.2) == repr(0.1 + 0.2)  # never rounded away
    assert sweep.format_value(True) == "True"
    assert sweep.format_value("token_mean") == "token_mean"


def tiny_trials(workdir, overrides=None, base=None):
    return sweep.make_trials(r1_zero.get_config("tiny"), "configs/r1_zero.py:tiny", base or {},
                             overrides or sweep.load_sweep(TINY_SWEEP), str(workdir),
                             python="python")


def test_commands_carry_the_sweep_wide_and_the_trial_overrides(tmp_path):
    trials = tiny_trials(tmp_path, base={"train.num_steps": 2, "rl.beta": 0.5})
    assert trials[1].command == [
        "python", "-m", "launch.train", "--config=configs/r1_zero.py:tiny",
        f"--workdir={tmp_path}/lr=0.001,beta=0.04", "--config.train.num_steps=2",
        "--config.rl.beta=0.04", "--config.optimizer.learning_rate=0.001"]
    assert [t.num_steps for t in trials] == [2] * 4
    assert tiny_trials(tmp_path, [{"train.num_steps": 7}])[0].num_steps == 7


def test_bad_overrides_fail_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="Trial 'bogus=1' of the sweep: unknown config key "
                       "'rl.bogus'; rl has: .*beta"):
        tiny_trials(tmp_path, [{"rl.bogus": 1}])
    with pytest.raises(ValueError, match="of my_sweep.py: unknown config key 'nope.beta'; the "
                       "config has: .*optimizer"):
        sweep.make_trials(r1_zero.get_config("tiny"), "configs/r1_zero.py:tiny", {},
                          [{"nope.beta": 1}], str(tmp_path), source="my_sweep.py")
    with pytest.raises(ValueError, match="'rl.beta.x'; rl.beta is a value, not a group"):
        tiny_trials(tmp_path, [{"rl.beta.x": 1}])
    with pytest.raises(ValueError, match="beta"):
        tiny_trials(tmp_path, [{"rl.beta": "high"}])
    with pytest.raises(ValueError, match="share a workdir"):
        tiny_trials(tmp_path, [{"rl.beta": 0.0}, {"rl.beta": 0.0}])


# ------------------------------------------------------------------------- results

def write_metrics(workdir: pathlib.Path, rows: list[dict]):
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def test_summary_takes_final_values_and_leaves_compilation_out_of_the_speed(tmp_path):
    rows = [{"step": 0, "accuracy": 0.25},
            {"step": 1, "loss": 1.0, "reward_mean": 0.1, "seconds_per_step": 30.0},
            {"step": 2, "loss": 0.5, "reward_mean": 0.3, "accuracy": 0.5, "seconds_per_step": 0.5},
            {"step": 3, "loss": 0.25, "reward_mean": 0.4, "seconds_per_step": 0.5}]
    assert sweep.summarise(rows) == {"steps": 3, "reward_mean": 0.4, "accuracy": 0.5,
                                     "loss": 0.25, "steps_per_second": 2.0}
    assert sweep.summarise([])["steps_per_second"] is None
    write_metrics(tmp_path / "run", rows)
    assert sweep.is_finished(str(tmp_path / "run"), 3)
    assert not sweep.is_finished(str(tmp_path / "run"), 4)
    assert not sweep.is_finished(str(tmp_path / "missing"), 3)


def test_tables_list_every_trial_with_its_overrides(tmp_path):
    trials = tiny_trials(tmp_path)
    write_metrics(pathlib.Path(trials[0].workdir), [{"step": 4, "loss": 0.123456}])
    statuses = {t.name: "finished" for t in trials}
    columns, rows = sweep.summary_rows(trials, statuses)
    assert columns == ["trial", "optimizer.learning_rate", "rl.beta", "status",
                       *sweep.SUMMARY_METRICS]
    table = sweep.markdown_table(columns, rows).splitlines()
    assert len(table) == 2 + len(trials)
    assert table[2] == "| lr=0.001,beta=0 | 0.001 | 0 | finished | 4 |  |  | 0.1235 |  |"


# ------------------------------------------------------------------------- the binary

def run_sweep(workdir, *args, sweep_file=TINY_SWEEP):
    # One CPU device, not conftest's 8 fake ones: the tiny config's 4 prompts per step are
    # sampled split over the mesh's batch axes.
    env = dict(os.environ, R1JAX_DATA_DIR=str(pathlib.Path(workdir).parent / "data"),
               PYTHONPATH=str(REPO), XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return subprocess.run(
        [sys.executable, "-m", "launch.sweep", "--config=configs/r1_zero.py:tiny",
         f"--sweep={sweep_file}", f"--workdir={workdir}", "--config.train.num_steps=2", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def test_dry_run_prints_the_trial_commands_and_runs_nothing(tmp_path):
    workdir = tmp_path / "sweep"
    result = run_sweep(workdir, "--dry_run")
    assert result.returncode == 0, result.stderr
    expected = [
        shlex.join([sys.executable, "-m", "launch.train", "--config=configs/r1_zero.py:tiny",
                    f"--workdir={workdir}/{name}", "--config.train.num_steps=2",
                    f"--config.optimizer.learning_rate={lr}", f"--config.rl.beta={beta}"])
        for name, lr, beta in [("lr=0.001,beta=0", "0.001", "0"),
                               ("lr=0.001,beta=0.04", "0.001", "0.04"),
                               ("lr=0.003,beta=0", "0.003", "0"),
                               ("lr=0.003,beta=0.04", "0.003", "0.04")]]
    assert result.stdout.splitlines() == expected
    assert not workdir.exists()


def scalar_tags(tensorboard_dir: pathlib.Path) -> set[str]:
    """The scalar tags in a run's event files (TFRecords: length, CRC, event, CRC)."""
    tags = set()
    for path in tensorboard_dir.glob("events.*"):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
            tags |= {v.tag for v in event.summary.value}
            i += 12 + length + 4
    return tags


def read_summary(workdir) -> list[dict]:
    with open(workdir / "summary.csv") as f:
        return list(csv.DictReader(f))


def test_sweep_runs_trials_writes_the_summary_and_a_rerun_skips_finished_ones(tmp_path):
    workdir = tmp_path / "sweep"
    result = run_sweep(workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = read_summary(workdir)
    assert [r["trial"] for r in rows] == ["lr=0.001,beta=0", "lr=0.001,beta=0.04",
                                          "lr=0.003,beta=0", "lr=0.003,beta=0.04"]
    for row in rows:
        assert row["status"] == "finished" and row["steps"] == "2"
        assert float(row["steps_per_second"]) > 0
        assert 0 <= float(row["reward_mean"]) <= 1 and 0 <= float(row["accuracy"]) <= 1
        trial_dir = workdir / row["trial"]
        assert (trial_dir / "train.log").is_file()
        # `tensorboard --logdir WORKDIR` shows each trial as a run "<trial>/tensorboard".
        assert {"reward_mean", "accuracy", "loss"} <= scalar_tags(trial_dir / "tensorboard")
    assert (workdir / "summary.md").read_text().count("| finished |") == 4
    assert f"tensorboard --logdir {workdir}" in result.stdout

    # The rerun adds a trial that crashes at start-up (launch/train.py rejects the stage): the
    # four finished trials are skipped, the crash is reported in the table and the exit status.
    extended = tmp_path / "extended.py"
    extended.write_text("from configs.sweeps import grid\n\n"
                        "def get_sweep(arg=''):\n"
                        "    return grid({'optimizer.learning_rate': [1e-3, 3e-3], "
                        "'rl.beta': [0.0, 0.04]}) + [{'stage': 'bogus'}]\n")
    logs_before = {r["trial"]: (workdir / r["trial"] / "train.log").read_text() for r in rows}
    rerun = run_sweep(workdir, sweep_file=str(extended))
    assert rerun.returncode != 0 and "1 of 5 trials failed: stage=bogus" in rerun.stderr
    assert rerun.stdout.count("finished earlier, skipped") == 4
    statuses = {r["trial"]: r["status"] for r in read_summary(workdir)}
    assert statuses == {**{name: "finished earlier" for name in logs_before},
                        "stage=bogus": "failed (exit 1)"}
    for name, log in logs_before.items():
        assert (workdir / name / "train.log").read_text() == log  # not run again
