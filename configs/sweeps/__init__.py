"""Sweeps over configs: each file here defines `get_sweep(arg="") -> list[dict]`, one dict of
dotted config keys -> values per trial, run by `python -m launch.sweep` (see its docstring).

The helpers below build those lists. They live here, not in launch/sweep.py, so a sweep file can
import them without importing the sweep binary (whose absl flags may only be defined once).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Mapping, Sequence, Union

import numpy as np


def grid(axes: Mapping[str, Sequence[Any]]) -> list[dict]:
    """Every combination of the values of each key, the first key varying slowest.

    grid({"optimizer.learning_rate": [1e-3, 3e-3], "rl.beta": [0.0, 0.04]}) gives 4 trials.
    """
    for key, values in axes.items():
        if isinstance(values, (str, bytes)) or not len(values):
            raise ValueError(f"grid axis {key!r} needs a non-empty list of values, got {values!r}.")
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


@dataclasses.dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from [low, high] (or its logarithm, with log=True)."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self):
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"Uniform needs low < high (and low > 0 when log): {self}.")

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))


def uniform(low: float, high: float) -> Uniform:
    return Uniform(low, high)


def log_uniform(low: float, high: float) -> Uniform:
    """For scales such as learning rates and KL coefficients."""
    return Uniform(low, high, log=True)


Space = Mapping[str, Union[Sequence[Any], Uniform]]


def round_significant(value: float, digits: int = 3) -> float:
    """Random floats cut to a few significant digits: trial names stay readable, and the value a
    trial ran with is exactly the one its name and the summary table show."""
    return float(f"{value:.{digits}g}")


def random_search(space: Space, num_trials: int, seed: int = 0) -> list[dict]:
    """`num_trials` distinct trials, each key drawn independently: a list is a uniform choice,
    a `Uniform` a float (rounded to 3 significant digits). The same seed gives the same trials.
    """
    if num_trials < 1:
        raise ValueError(f"num_trials={num_trials}; expected >= 1.")
    rng = np.random.default_rng(seed)
    trials, seen = [], set()
    # Duplicates (likely with small choice lists) would share a workdir, so they are redrawn;
    # the bound stops a space with fewer than num_trials points from looping for ever.
    for _ in range(100 * num_trials):
        trial = {}
        for key, dist in space.items():
            if isinstance(dist, Uniform):
                trial[key] = round_significant(dist.sample(rng))
            else:
                trial[key] = dist[int(rng.integers(len(dist)))]
        frozen = tuple(sorted((k, repr(v)) for k, v in trial.items()))
        if frozen not in seen:
            seen.add(frozen)
            trials.append(trial)
        if len(trials) == num_trials:
            return trials
    raise ValueError(f"The space has fewer than {num_trials} distinct points; found {len(trials)}.")
