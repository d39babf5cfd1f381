"""What a run reports: metrics.jsonl, TensorBoard and the console line, the NaN guard, timings."""
from __future__ import annotations

import json
import logging
import math
import os
import time

import jax
import numpy as np

from r1jax.train import step as step_lib

log = logging.getLogger("r1jax")

NAN_POLICIES = ("stop", "skip")


def check_finite(loss: float, step: int, policy: str):
    """Raises under policy 'stop' when the loss is NaN/inf; under 'skip' (the update already
    kept the old state, see train.step) says so."""
    if math.isfinite(loss):
        return
    if policy == "stop":
        raise FloatingPointError(
            f"Loss is {loss} at step {step}; stopping before anything is checkpointed "
            "(the newest checkpoint is untouched). Set --config.train.nan_policy=skip to drop "
            "such updates instead.")
    log.warning("Loss is %s at step %d: update skipped (nan_policy=skip).", loss, step)


def reduce_updates(updates: list[dict]) -> dict:
    """One step's metrics from its updates' (host values), by train.step's rule: extremes
    (`*_max`, `*_min`) as max / min, everything else as the mean."""
    weights = np.ones(len(updates))
    return {k: float(step_lib.reduce_metric(k, np.array([float(m[k]) for m in updates]), weights))
            for k in updates[0]}


def _to_python(value):
    if isinstance(value, (np.ndarray, jax.Array)):
        value = np.asarray(value).item()
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    return value


class MetricsWriter:
    """metrics.jsonl + TensorBoard events in the workdir, and a one-line console summary.

    Only process 0 writes. The first write of a run drops the file's lines of that step and
    later ones (written by a run that died after its last checkpoint, or before it saved any), so
    the file reads as one uninterrupted run whichever checkpoint the run resumed from.
    """

    CONSOLE_KEYS = (("reward_mean", "reward"), ("accuracy", "acc"), ("completion_length", "len"),
                    ("kl", "kl"), ("clip_high", "clip"), ("entropy", "ent"), ("loss", "loss"),
                    ("seconds_per_step", "s/step"), ("tokens_per_second", "tok/s"),
                    ("mfu", "mfu"), ("rollout_mfu", "rollout mfu"), ("update_mfu", "update mfu"))

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._writer = None
        self._first_write = True
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        from tensorboardX import SummaryWriter  # Imported late: only process 0 needs it.
        self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def _drop_from(self, step: int):
        """Removes the lines of `step` and later: a run that died after its last checkpoint
        wrote them, and this run is about to write them again."""
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            kept = [line for line in f if line.strip() and json.loads(line)["step"] < step]
        with open(self.path, "w") as f:
            f.writelines(kept)

    def write(self, step: int, metrics: dict):
        if not self.enabled:
            return
        if self._first_write:
            self._drop_from(step)
            self._first_write = False
        record = {"step": step, **{k: _to_python(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def log(self, step: int, metrics: dict, total_steps: int):
        """Writes `metrics` (if any) to the files and a summary line to the console."""
        if metrics:
            self.write(step, metrics)
            self.console(step, metrics, total_steps)

    def console(self, step: int, metrics: dict, total_steps: int):
        if not self.enabled:
            return
        parts = [f"step {step}/{total_steps}"]
        for key, short in self.CONSOLE_KEYS:
            if key in metrics:
                parts.append(f"{short} {_to_python(metrics[key]):.4g}")
        log.info(" | ".join(parts))

    def samples(self, step: int, rows: list[dict]):
        """Appends a few sampled completions (prompt, completion, reward) to samples.jsonl."""
        if not self.enabled:
            return
        with open(os.path.join(os.path.dirname(self.path), "samples.jsonl"), "a") as f:
            for row in rows:
                f.write(json.dumps({"step": step, **row}) + "\n")
        text = "\n\n".join(f"**reward {r['reward']:.2f}**\n\n{r['completion']}" for r in rows)
        self._writer.add_text("samples", text, step)

    def close(self):
        if self._writer is not None:
            self._writer.close()


class Stopwatch:
    """Seconds since the last lap."""

    def __init__(self):
        self._last = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        return elapsed
