"""Rule rewards for R1-style RL, by name: `get(name, **params)`, `combine(specs, ...)`.

Built-in: math_accuracy, countdown, format, format_soft, language_consistency, code, overlong,
generative_judge, reward_model (see registry.py for the signature every reward shares).
`check_rewards_fit_data` refuses a config whose correctness reward cannot verify its data kind;
`check` refuses unknown rewards and params, and a reward model's bad path, at start-up.
"""
from r1jax.rewards.registry import (check, check_rewards_fit_data, combine, evaluate, get, metrics,
                                    names, register, resolve, score)

__all__ = ["check", "check_rewards_fit_data", "combine", "evaluate", "get", "metrics", "names",
           "register", "resolve", "score"]
