"""Rule rewards for R1-style RL, by name: `get(name, **params)`, `combine(specs, ...)`.

Built-in: math_accuracy, format, format_soft, language_consistency, code, overlong (see
registry.py for the signature every reward shares).
"""
from r1jax.rewards.registry import combine, evaluate, get, metrics, names, register, score

__all__ = ["combine", "evaluate", "get", "metrics", "names", "register", "score"]
