"""The optimizer every trainer uses: AdamW with warmup + decay and global-norm clipping."""
from __future__ import annotations

import optax

SCHEDULES = ("constant", "cosine", "linear")


def learning_rate_schedule(*, learning_rate: float, warmup_steps: int, decay: str,
                           total_steps: int, final_fraction: float = 0.0) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then constant / cosine / linear decay to the final value."""
    if decay not in SCHEDULES:
        raise ValueError(f"optimizer.decay={decay!r}; choose one of {SCHEDULES}.")
    warmup = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
    decay_steps = max(total_steps - warmup_steps, 1)
    final = learning_rate * final_fraction
    if decay == "constant":
        after = optax.constant_schedule(learning_rate)
    elif decay == "cosine":
        after = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=final_fraction)
    else:
        after = optax.linear_schedule(learning_rate, final, decay_steps)
    return optax.join_schedules([warmup, after], [warmup_steps])


def make_optimizer(opt_config, total_steps: int) -> optax.GradientTransformation:
    """AdamW from config keys: learning_rate, warmup_steps, decay, final_fraction, b1, b2,
    weight_decay, clip_norm (0 disables clipping)."""
    schedule = learning_rate_schedule(
        learning_rate=opt_config.learning_rate, warmup_steps=opt_config.warmup_steps,
        decay=opt_config.decay, total_steps=total_steps,
        final_fraction=opt_config.final_fraction)
    adamw = optax.adamw(schedule, b1=opt_config.b1, b2=opt_config.b2,
                        weight_decay=opt_config.weight_decay)
    if opt_config.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(opt_config.clip_norm), adamw)
    return adamw
