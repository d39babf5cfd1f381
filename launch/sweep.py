r"""Runs a sweep: one training run per trial of config overrides, each in its own sub-workdir.

    python -m launch.sweep --config=configs/r1_zero.py:tiny \
        --sweep=configs/sweeps/r1_zero_tiny.py[:ARG] --workdir=DIR [--dry_run] [--config.k=v ...]

A sweep file defines `get_sweep(arg="")`, returning a list of trials, each a dict of dotted
config keys -> values (helpers for grids and seeded random search: configs/sweeps/__init__.py).
Each trial runs as its own process,

    python -m launch.train --config=CONFIG --workdir=DIR/<trial name> --config.KEY=VALUE ...

one after another, its output in DIR/<trial name>/train.log, so a trial that crashes is reported
as failed and the sweep goes on. `--config.k=v` flags given to the sweep apply to every trial.
Every trial's overrides are checked against the config before the first one starts.

A trial whose metrics.jsonl or checkpoints already reach train.num_steps is skipped: rerunning
the same command after an interruption (or after adding trials) runs only what is missing; an
unfinished trial resumes from its newest checkpoint. `--dry_run` prints the commands instead.

At the end DIR/summary.csv and DIR/summary.md list each trial's status, final reward, held-out
accuracy, loss and training speed. Compare the runs side by side: `tensorboard --logdir DIR`.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any, Optional

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from launch import cli
from r1jax.errors import UserError


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Short names for the keys swept most often; any other key is named by its last part.
SHORT_NAMES = {"learning_rate": "lr", "num_generations": "G", "prompts_per_step": "prompts"}
SUMMARY_METRICS = ("steps", "reward_mean", "accuracy", "loss", "steps_per_second")


@dataclasses.dataclass(frozen=True)
class Trial:
    name: str
    overrides: dict          # this trial's keys only (the table's columns)
    workdir: str
    command: list            # argv of the training run
    num_steps: int           # train.num_steps once every override is applied


# ------------------------------------------------------------------------- the sweep file

SWEEP_FUNCTION = "get_sweep"
EXAMPLE = "configs/sweeps/r1_zero_tiny.py"
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def load_sweep(spec: str) -> list[dict]:
    """Calls get_sweep(arg) of the file in "path/to/sweep.py[:arg]" and checks what it returns.

    Raises:
      FileNotFoundError: no such file.
      UserError: the file does not load, has no get_sweep, or get_sweep fails or returns
        something other than a non-empty list of {dotted.key: value} dicts (see check_trials).
    """
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--sweep={spec!r}: no file {path!r}.")
    module = _load_module(path)
    function = getattr(module, SWEEP_FUNCTION, None)
    if not callable(function):
        raise UserError(f"--sweep={spec}: {path} is not a sweep file: it defines no "
                        f"{SWEEP_FUNCTION}(arg) function returning the trials (see {EXAMPLE}).")
    try:
        trials = function(arg)
    except Exception as e:  # The user's code: report it as their file's failure.
        raise UserError(f"--sweep={spec}: {SWEEP_FUNCTION}({arg!r}) of {path} failed: "
                        f"{type(e).__name__}: {e}") from e
    problem = check_trials(trials)
    if problem:
        raise UserError(f"--sweep={spec}: {SWEEP_FUNCTION}({arg!r}) of {path} must return a "
                        f"non-empty list of {{dotted.config.key: value}} dicts, one per trial; "
                        f"{problem}")
    return list(trials)


def _load_module(path: str):
    """The file's module. Registered in sys.modules while it runs: dataclasses (and pickling)
    look their module up there, and fail on one that is not."""
    name = f"r1jax_sweep_file_{abs(hash(os.path.abspath(path)))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        raise UserError(f"--sweep={path}: the file does not load: {type(e).__name__}: {e}") from e
    finally:
        del sys.modules[name]
    return module


def check_trials(trials: Any) -> Optional[str]:
    """What is wrong with a sweep file's trials, or None (their keys are checked against the
    config by make_trials)."""
    if not isinstance(trials, (list, tuple)):
        return f"got a {type(trials).__name__}: {_short(trials)}"
    if not trials:
        return "got an empty list"
    for i, trial in enumerate(trials):
        if not isinstance(trial, dict):
            return f"trial {i} is a {type(trial).__name__}: {_short(trial)}"
        for key, value in trial.items():
            if not isinstance(key, str) or not _KEY.fullmatch(key):
                return f"trial {i} has the key {key!r}, not a dotted config key like 'rl.beta'"
            if isinstance(value, dict):
                return (f"trial {i} has a dict under {key!r}: write its entries as dotted keys "
                        f"('{key}.name': value)")
    return None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ------------------------------------------------------------------------- trials

def format_value(value: Any) -> str:
    """A value as `--config.k=` parses it back (and as trial names show it)."""
    if isinstance(value, float):
        return format(value, "g") if value == float(format(value, "g")) else repr(value)
    if isinstance(value, (str, int)):
        return str(value)  # bools too: "True" / "False"
    return repr(value)


def trial_name(overrides: dict) -> str:
    """"lr=0.001,beta=0.04": short key names, unless two keys would share one."""
    shorts = [SHORT_NAMES.get(k.rsplit(".", 1)[-1], k.rsplit(".", 1)[-1]) for k in overrides]
    names = [s if shorts.count(s) == 1 else k for s, k in zip(shorts, overrides)]
    text = ",".join(f"{n}={format_value(v)}" for n, v in zip(names, overrides.values()))
    # A value may hold a path; a trial must stay one directory.
    return text.replace(os.sep, "_") or "default"


def unknown_key(config, key: str) -> Optional[str]:
    """Why the dotted `key` is not in config (naming the keys there are), or None."""
    node, path = config, []
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            where = ".".join(path) or "the config"
            known = ", ".join(node.keys()) if isinstance(node, ml_collections.ConfigDict) else ""
            return (f"unknown config key {key!r}; {where} has: {known}" if known
                    else f"unknown config key {key!r}; {where} is a value, not a group")
        node, path = node[part], path + [part]
    return None


def apply_overrides(config, overrides: dict, label: str):
    """A copy of config with the overrides, failing (naming the trial, `label`) on unknown keys
    or types."""
    problem = next(filter(None, (unknown_key(config, key) for key in overrides)), None)
    if problem:
        raise ValueError(f"Trial {label}: {problem}")
    config = copy.deepcopy(config)
    config.lock()  # What launch/train.py does: an unknown key is an error, not a new field.
    try:
        config.update_from_flattened_dict(overrides)
    except (KeyError, TypeError, ValueError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e  # Not repr's quotes.
        raise ValueError(f"Trial {label}: {message}") from e
    return config


def make_trials(config, config_spec: str, base: dict, sweep: list[dict], workdir: str,
                python: str = sys.executable, source: str = "the sweep") -> list[Trial]:
    """One Trial per sweep entry; base (the sweep's own --config.k=v) applies to all. `source`
    (the sweep file) names where a trial with a bad key or value comes from."""
    trials = []
    for overrides in sweep:
        name = trial_name(overrides)
        merged = {**base, **overrides}
        trial_config = apply_overrides(config, merged, f"{name!r} of {source}")
        directory = os.path.join(workdir, name)
        command = [python, "-m", "launch.train", f"--config={config_spec}",
                   f"--workdir={directory}"]
        command += [f"--config.{k}={format_value(v)}" for k, v in merged.items()]
        trials.append(Trial(name, dict(overrides), directory, command,
                            trial_config.train.num_steps))
    names = [t.name for t in trials]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Trials with the same overrides would share a workdir: {duplicates}.")
    return trials


# ------------------------------------------------------------------------- results

def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def is_finished(workdir: str, num_steps: int) -> bool:
    """Whether a trial already reached num_steps (a logged step or a complete checkpoint)."""
    if any(m.get("step") == num_steps for m in read_metrics(workdir)):
        return True
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return False
    from r1jax import checkpoint  # Imported late: orbax is slow to import, and rarely needed.
    return checkpoint.latest_step(workdir) == num_steps


def last_value(metrics: list[dict], key: str) -> Optional[float]:
    values = [m[key] for m in metrics if key in m]
    return values[-1] if values else None


def summarise(metrics: list[dict]) -> dict:
    """Final reward, accuracy and loss of a run, its last step, and steps per second.

    Steps per second leave out step 1, whose time is mostly compilation (unless it is the only
    step).
    """
    seconds = [m["seconds_per_step"] for m in metrics if "seconds_per_step" in m]
    timed = seconds[1:] or seconds
    return {"steps": last_value(metrics, "step"),
            "reward_mean": last_value(metrics, "reward_mean"),
            "accuracy": last_value(metrics, "accuracy"),
            "loss": last_value(metrics, "loss"),
            "steps_per_second": len(timed) / sum(timed) if timed else None}


def summary_rows(trials: list[Trial], statuses: dict) -> tuple[list[str], list[dict]]:
    """(columns, one row per trial): the trial, its overrides, status and SUMMARY_METRICS."""
    keys = list(dict.fromkeys(k for t in trials for k in t.overrides))
    columns = ["trial", *keys, "status", *SUMMARY_METRICS]
    rows = [{"trial": t.name, **{k: t.overrides.get(k) for k in keys}, "status": statuses[t.name],
             **summarise(read_metrics(t.workdir))} for t in trials]
    return columns, rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, ".4g")
    return str(value)


def markdown_table(columns: list[str], rows: list[dict]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_summary(workdir: str, columns: list[str], rows: list[dict]) -> tuple[str, str]:
    """Writes WORKDIR/summary.csv (full precision) and summary.md; returns their paths."""
    csv_path, md_path = (os.path.join(workdir, f"summary.{ext}") for ext in ("csv", "md"))
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: "" if row[c] is None else row[c] for c in columns} for row in rows)
    with open(md_path, "w") as f:
        f.write(markdown_table(columns, rows))
    return csv_path, md_path


# ------------------------------------------------------------------------- running

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags; defined only when it runs, so that tests can import this module
    beside other binaries that define --config and --workdir too."""
    config_flags.DEFINE_config_file("config", None, "A configs/*.py file[:variant].",
                                    lock_config=True)
    flags.DEFINE_string("sweep", None, "A configs/sweeps/*.py file[:arg].")
    flags.DEFINE_string("workdir", None, "The sweep's directory; each trial runs in "
                        "WORKDIR/<trial name>.")
    flags.DEFINE_bool("dry_run", False, "Print the trial commands; run nothing.")
    flags.mark_flags_as_required(["config", "sweep", "workdir"])


def trial_environment() -> dict:
    """This process's environment, with the repository importable from any directory."""
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=REPO + (os.pathsep + path if path else ""))


def run_trial(trial: Trial) -> str:
    """Runs one trial to completion (output in its train.log); returns its status."""
    os.makedirs(trial.workdir, exist_ok=True)
    log_path = os.path.join(trial.workdir, "train.log")
    with open(log_path, "a") as log:
        code = subprocess.run(trial.command, stdout=log, stderr=subprocess.STDOUT,
                              env=trial_environment()).returncode
    if code != 0:
        with open(log_path) as f:
            tail = f.readlines()[-15:]
        print(f"Trial {trial.name} failed (exit {code}); end of {log_path}:\n{''.join(tail)}",
              file=sys.stderr, flush=True)
        return f"failed (exit {code})"
    if not is_finished(trial.workdir, trial.num_steps):
        return f"stopped before step {trial.num_steps}"
    return "finished"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config_flag = FLAGS["config"]
    trials = make_trials(FLAGS.config, config_flags.get_config_filename(config_flag),
                         config_flags.get_override_values(config_flag), load_sweep(FLAGS.sweep),
                         FLAGS.workdir, source=FLAGS.sweep.partition(":")[0])
    statuses = {}
    for i, trial in enumerate(trials, 1):
        done = is_finished(trial.workdir, trial.num_steps)
        prefix = f"[{i}/{len(trials)}] {trial.name}"
        if FLAGS.dry_run:
            print(("# finished, would be skipped: " if done else "") + shlex.join(trial.command))
            continue
        if done:
            statuses[trial.name] = "finished earlier"
            print(f"{prefix}: finished earlier, skipped", flush=True)
            continue
        print(f"{prefix}: {shlex.join(trial.command)}", flush=True)
        start = time.perf_counter()
        statuses[trial.name] = run_trial(trial)
        print(f"{prefix}: {statuses[trial.name]} in {time.perf_counter() - start:.0f} s",
              flush=True)
    if FLAGS.dry_run:
        return
    columns, rows = summary_rows(trials, statuses)
    csv_path, md_path = write_summary(FLAGS.workdir, columns, rows)
    print(f"\n{markdown_table(columns, rows)}\nWrote {csv_path} and {md_path}. Compare the runs: "
          f"tensorboard --logdir {FLAGS.workdir}")
    failed = [t.name for t in trials if statuses[t.name].startswith("failed")]
    if failed:
        sys.exit(f"{len(failed)} of {len(trials)} trials failed: {', '.join(failed)}")


if __name__ == "__main__":
    cli.run(main, define_flags)
