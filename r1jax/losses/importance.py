"""Importance-sampling correction for rollouts the sampler drew from a distribution μ ≠ π_old.

The sampler draws o_i,t from μ, softmax(logits / T) cut to top-k / top-p and renormalised (its
`SampleOutput.sampled_logprobs`), while the GRPO ratio's π_old is softmax(logits / T) itself
(the sampler's untruncated log-probs, or the trainer's forward pass when rl.recompute_old_logprobs):
the two differ by the kept mass under truncation, and by numerics when the trainer recomputes
π_old in another precision. Each token's surrogate is weighted by

    r_i,t = π_old(o_i,t) / μ(o_i,t)
    w_i,t = min(r_i,t, C)                       "tis"  (truncated IS; Yao et al. 2025, TRL's
                                                        vllm_importance_sampling_mode="token_truncate")
    w_i,t = r_i,t if r_i,t <= C else 0          "mask" (masked IS; TRL's "token_mask")

a constant of the update (decoupled PPO: w · π_θ/π_old = π_θ/μ on the unclipped branch). With
top-k / top-p, r_i,t is the kept mass at that position (<= 1); without, 1 up to rounding.
"""
from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

CORRECTIONS = ("none", "tis", "mask")


def correction_weights(old_logprobs: Float[Array, "B T"], sampler_logprobs: Float[Array, "B T"],
                       mask: Float[Array, "B T"], mode: str,
                       bound: float) -> tuple[Float[Array, "B T"], dict]:
    """(float32[B, T] weights w, metrics) of the module docstring's formulas.

    Args:
      old_logprobs: float32[B, T] log π_old of the completion tokens.
      sampler_logprobs: float32[B, T] log μ, the truncated distribution each token was drawn from.
      mask: float32[B, T], 1 on tokens that count; weights are 1 elsewhere.
      mode: "tis" | "mask" ("none" needs no weights).
      bound: C > 0.
    Metrics (over counted tokens): is_weight_mean / _min / _max, is_bounded (share of tokens
    whose ratio exceeded C: truncated or masked), is_log_ratio_abs (mean |log π_old − log μ|,
    the sampler mismatch).
    """
    if mode not in CORRECTIONS[1:]:
        raise ValueError(f"Unknown importance-sampling correction {mode!r}; choose one of "
                         f"{CORRECTIONS[1:]}.")
    counted = mask > 0
    # Padding may hold anything: a log-ratio of 0 there keeps exp() finite.
    log_ratio = jnp.where(counted, old_logprobs - sampler_logprobs, 0.0)
    ratio = jnp.exp(log_ratio)
    beyond = ratio > bound
    if mode == "tis":
        weights = jnp.minimum(ratio, bound)
    else:
        weights = jnp.where(beyond, 0.0, ratio)
    weights = jnp.where(counted, weights, 1.0)
    tokens = jnp.maximum(mask.sum(), 1.0)
    metrics = dict(
        is_weight_mean=(weights * mask).sum() / tokens,
        is_weight_min=jnp.where(counted, weights, 1.0).min(),
        is_weight_max=jnp.where(counted, weights, 1.0).max(),
        is_bounded=(beyond & counted).sum() / tokens,
        is_log_ratio_abs=(jnp.abs(log_ratio) * mask).sum() / tokens)
    return weights, metrics
