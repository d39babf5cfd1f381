"""Reward functions by name, and their weighted combination with per-component metrics.

Every reward has one signature:

    fn(prompts: list[str], completions: list[str], **fields: list) -> list[float]

`fields` are per-example columns of the data set (`answer`, `tests`, `language`,
`completion_lengths`, ...), each a list as long as `completions`; a reward reads the ones it
needs and ignores the rest. A reward marks a completion it failed to score (an exception or a
timeout inside it) with NaN: `combine` turns NaN into 0 and counts it in `reward_errors/<name>`.

The built-in rewards are imported on first `get`, so that using `format` does not import sympy
(through math-verify) and a config names only what it uses:

    fn = get("overlong", max_completion_len=4096, overlong_buffer=512)
    total, metrics = combine({"math_accuracy": 1.0, "format": 0.2}, prompts, completions,
                             {"answer": answers})

A config may use one reward twice under two names: its params name the registered reward with
`reward`, e.g. rewards {"helpfulness": 1.0, "harmlessness": 1.0} with rewards_params
{"helpfulness": {"reward": "reward_model", "path": HELPFUL_RM, "apply_to": "final_answer"},
 "harmlessness": {"reward": "reward_model", "path": HARMLESS_RM, "apply_to": "response"}}.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

RewardFn = Callable[..., list[float]]

# name -> (module, attribute): resolved lazily by `get` (see the module docstring).
_BUILTIN: dict[str, tuple[str, str]] = {
    "math_accuracy": ("r1jax.rewards.math", "math_accuracy"),
    "countdown": ("r1jax.rewards.countdown", "countdown"),
    "format": ("r1jax.rewards.format", "format_strict"),
    "format_soft": ("r1jax.rewards.format", "format_soft"),
    "language_consistency": ("r1jax.rewards.language", "language_consistency"),
    "code": ("r1jax.rewards.code", "code"),
    "overlong": ("r1jax.rewards.length", "overlong"),
    # A model as the verifier (loaded on first call): for prompts no rule can check.
    "generative_judge": ("r1jax.rejection.judge", "generative_judge"),
    "reward_model": ("r1jax.rewards.reward_model", "reward_model"),
}
_REGISTERED: dict[str, RewardFn] = {}
# The param naming the registered reward a config entry is an instance of (module docstring).
INSTANCE_OF = "reward"
# Rewards that check their params before the first step (a path that must hold a model):
# name -> (module, function(config key, params)), imported when a config uses the reward.
_CHECKS: dict[str, tuple[str, str]] = {
    "reward_model": ("r1jax.rewards.reward_model", "check_params"),
}
# Correctness rewards -> the data kinds (r1jax.data.KINDS) whose answers they verify. On any other
# kind they pay for something else: math_accuracy on countdown data pays the target, which the
# question prints, without an equation. The other rewards (format, language, length) judge the
# form of a completion and fit any kind.
VERIFIES: dict[str, tuple[str, ...]] = {
    "math_accuracy": ("math", "arithmetic"),
    "countdown": ("countdown",),
    "code": ("code",),
}


def register(name: str, fn: RewardFn | None = None):
    """Registers `fn` under `name`; usable as a decorator (`@register("my_reward")`).

    Raises:
      ValueError: `name` is already taken (built-in or registered).
    """
    def add(f: RewardFn) -> RewardFn:
        if name in _BUILTIN or name in _REGISTERED:
            raise ValueError(f"reward {name!r} is already registered")
        _REGISTERED[name] = f
        return f

    return add if fn is None else add(fn)


def check_rewards_fit_data(data_kind: str, reward_names) -> None:
    """Refuses correctness rewards that cannot verify `data_kind`'s answers (see VERIFIES).

    Args:
      data_kind: the config's data.kind ("math", "countdown", ...).
      reward_names: the names of the config's rewards (e.g. the keys of config.rewards).

    Raises:
      ValueError: naming the rewards at fault, the data kind and the rewards that verify it.
    """
    wrong = sorted(name for name in reward_names if name in VERIFIES and data_kind not in VERIFIES[name])
    if wrong:
        fitting = sorted(name for name, kinds in VERIFIES.items() if data_kind in kinds)
        raise ValueError(
            f"rewards {wrong} cannot verify data.kind={data_kind!r} (they verify "
            f"{ {name: list(VERIFIES[name]) for name in wrong} }); remove them from config.rewards"
            + (f" and score {data_kind!r} data with {fitting}" if fitting else
               f"; no built-in reward verifies {data_kind!r} answers"))


def resolve(name: str, params: Mapping[str, Any] | None) -> tuple[str, dict]:
    """(the registered reward, its params) of config entry `name` (see INSTANCE_OF)."""
    params = dict(params or {})
    return str(params.pop(INSTANCE_OF, name)), params


def check(specs, params: Mapping[str, Mapping[str, Any]] | None, key: str) -> None:
    """Fails at start-up on what `score` would meet only at the first step: an unknown reward
    or param, and a reward's own check of its params (a reward model's path).

    Args:
      specs, params: as `score` takes them.
      key: where params sit in the config ("rewards_params"), for the messages.

    Raises:
      ValueError or KeyError, naming config.`key`.<name>.
    """
    params = params or {}
    for name, _ in _normalise_specs(specs):
        reward, bound = resolve(name, params.get(name))
        try:
            get(reward, **bound)
        except TypeError as e:
            raise ValueError(f"config.{key}.{name}: {e}") from None
        if reward in _CHECKS:
            module, attribute = _CHECKS[reward]
            getattr(importlib.import_module(module), attribute)(f"{key}.{name}", bound)


def names() -> list[str]:
    """Sorted names of every reward `get` knows."""
    return sorted({*_BUILTIN, *_REGISTERED})


def get(name: str, **params: Any) -> RewardFn:
    """The reward registered under `name`, with `params` bound as keyword arguments.

    Raises:
      KeyError: unknown name (the message lists the known ones).
      TypeError: a param that is not a named parameter of the reward.
    """
    if name in _REGISTERED:
        fn = _REGISTERED[name]
    elif name in _BUILTIN:
        module, attribute = _BUILTIN[name]
        fn = getattr(importlib.import_module(module), attribute)
    else:
        raise KeyError(f"unknown reward {name!r}; registered rewards: {', '.join(names())}")
    if not params:
        return fn
    # Checked here so that a typo fails at config time: `**fields` would swallow it silently.
    named = {p.name for p in inspect.signature(fn).parameters.values()
             if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    unknown = sorted(set(params) - named)
    if unknown:
        raise TypeError(f"reward {name!r} takes no params {unknown}; its params: {sorted(named)}")
    return functools.partial(fn, **params)


def safe_map(score: Callable[..., float], *columns: Sequence) -> list[float]:
    """[score(*row) for row in zip(*columns)], with NaN where `score` raises.

    The per-completion guard every reward uses, so that one bad completion costs its own reward
    and an error count, not the batch.
    """
    out = []
    for row in zip(*columns):
        try:
            out.append(float(score(*row)))
        except Exception:  # noqa: BLE001 - any failure of one completion is that completion's error.
            logging.debug("reward failed on one completion", exc_info=True)
            out.append(float("nan"))
    return out


def _normalise_specs(specs) -> list[tuple[str, float]]:
    """(name, weight) pairs from a mapping (dict, ConfigDict) or a sequence of pairs."""
    pairs = list(specs.items()) if hasattr(specs, "items") else [tuple(s) for s in specs]
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"a reward spec is (name, weight), got {pair!r}")
    return [(str(name), float(weight)) for name, weight in pairs]


def evaluate(name: str, prompts: list[str], completions: list[str], fields: Mapping[str, list],
             params: Mapping[str, Any] | None = None) -> np.ndarray:
    """float32[N] scores of one reward, NaN where it failed; never raises for the reward's sake.

    A reward that raises for the whole batch, or returns the wrong number of scores, gives NaN
    for every completion. Unknown names and bad params do raise: they are config errors.
    """
    reward, bound = resolve(name, params)
    fn = get(reward, **bound)
    n = len(completions)
    try:
        scores = np.asarray(fn(prompts, completions, **fields), dtype=np.float32)
        if scores.shape != (n,):
            raise ValueError(f"reward {name!r} returned shape {scores.shape} for {n} completions")
        return scores
    except Exception:  # noqa: BLE001 - a failing reward must not stop training.
        logging.exception("reward %r failed on a batch of %d completions", name, n)
        return np.full((n,), np.nan, np.float32)


def combine(specs, prompts: list[str], completions: list[str], fields: Mapping[str, list],
            params: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """(total, metrics): `score`'s weighted sum (failures as 0) and `metrics` of its components."""
    total, _, components = score(specs, prompts, completions, fields, params)
    return total, metrics(components, total)


def score(specs, prompts: list[str], completions: list[str], fields: Mapping[str, list],
          params: Mapping[str, Mapping[str, Any]] | None = None
          ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The named rewards of each completion, their weighted sum, and which rows failed.

    Args:
      specs: {name: weight} (dict or ConfigDict) or a sequence of (name, weight) pairs.
      prompts, completions: N strings each.
      fields: per-example columns, each a list of N values.
      params: optional {name: {param: value}} bound to each reward (see `get`), e.g. a config's
        `rewards_params`.

    Returns:
      (total: float32[N], the weighted sum with failures as 0; failed: bool[N], rows that a
      reward with a non-zero weight could not score; components: {name: float32[N]}, each
      reward's scores with NaN where it failed).
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    params = params or {}
    total = np.zeros((len(completions),), np.float32)
    failed = np.zeros((len(completions),), bool)
    components = {}
    for name, weight in _normalise_specs(specs):
        scores = evaluate(name, prompts, completions, fields, params.get(name))
        components[name] = scores
        total += np.float32(weight) * np.nan_to_num(scores, nan=0.0)
        failed |= np.isnan(scores) & (weight != 0)
    return total, failed, components


def metrics(components: Mapping[str, np.ndarray], total: np.ndarray) -> dict[str, float]:
    """`reward/<name>` (mean score, failures as 0), `reward_errors/<name>` (completions the
    reward failed on) and `reward/total` of `score`'s outputs."""
    out = {}
    for name, scores in components.items():
        out[f"reward/{name}"] = float(np.nan_to_num(scores, nan=0.0).mean()) if scores.size else 0.0
        out[f"reward_errors/{name}"] = float(np.isnan(scores).sum())
    out["reward/total"] = float(total.mean()) if total.size else 0.0
    return out
