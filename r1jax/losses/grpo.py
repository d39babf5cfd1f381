"""The GRPO objective (DeepSeekMath / DeepSeek-R1), with DAPO's and Dr. GRPO's variants.

For each prompt q, G completions o_1..o_G are sampled from the old policy and scored r_1..r_G:

    A_i   = (r_i - mean(r)) / std(r)                                   (group-relative advantage)
    ρ_i,t = π_θ(o_i,t | q, o_i,<t) / π_old(o_i,t | q, o_i,<t)           (importance ratio)
    D_i,t = π_ref/π_θ - log(π_ref/π_θ) - 1                              (k3 estimate of KL(π_θ‖π_ref))
    J     = agg_i,t [ min(ρ A_i, clip(ρ, 1-ε_low, 1+ε_high) A_i) - β D_i,t ]

and the loss is -J. PPO (r1jax.losses.ppo) uses the same J with a per-token advantage A_i,t. `agg` is the paper's 1/G Σ_i 1/|o_i| Σ_t ("sequence_mean"), DAPO's token
mean over the whole batch ("token_mean"), or Dr. GRPO's sum over a constant B × T ("dr_grpo").

GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization") replaces ρ_i,t by one ratio per
sequence, the length-normalised likelihood ratio, clipped as a whole (`importance_ratios`):

    s_i   = exp( 1/|o_i| Σ_t log(π_θ(o_i,t) / π_old(o_i,t)) )                  ("sequence")
    s_i,t = sg[s_i] · π_θ(o_i,t) / sg[π_θ(o_i,t)]                              ("sequence_token")

The GSPO objective 1/G Σ_i min(s_i A_i, clip(s_i, 1-ε_low, 1+ε_high) A_i) is J above with ρ_i,t
replaced by s_i and agg = "sequence_mean" (TRL's importance_sampling_level="sequence" broadcasts
s_i over the tokens the same way). GSPO-token has s_i's value and clipping but lets each token
carry its own gradient (for token-wise advantages; with A_i per sequence it equals GSPO's).
The paper's clip range is ε_low = 3e-4, ε_high = 4e-4 (configs/r1_zero.py:gspo).

With importance-sampling correction (`losses.importance`), each token's surrogate is multiplied
by a fixed weight w_i,t (π_old over the sampler's truncated distribution, truncated or masked at
a bound), as TRL does with vLLM's log-probs; the KL term is not weighted.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Scalar

AGGREGATIONS = ("sequence_mean", "token_mean", "dr_grpo")
IMPORTANCE_LEVELS = ("token", "sequence", "sequence_token")


def group_advantages(rewards: Float[Array, "B"], group_size: int, *, scale_by_std: bool = True,
                     valid: Bool[Array, "B"] | None = None,
                     eps: float = 1e-4) -> Float[Array, "B"]:
    """float32[B] advantages from float32[B] rewards laid out prompt-major (G per prompt).

    The std is the unbiased sample std over the group, as TRL's; Dr. GRPO drops the division.
    valid: bool[B], False for rows whose reward could not be computed (a verifier's timeout, a
    sandbox error): they are left out of their group's mean and std and get advantage 0, so a
    failure is neither punished nor rewarded.
    """
    valid = jnp.ones(rewards.shape, bool) if valid is None else valid
    groups = rewards.reshape(-1, group_size)
    ok = valid.reshape(-1, group_size)
    count = ok.sum(axis=1, keepdims=True)
    mean = jnp.where(ok, groups, 0.0).sum(axis=1, keepdims=True) / jnp.maximum(count, 1)
    centred = jnp.where(ok, groups - mean, 0.0)
    if scale_by_std:
        variance = jnp.square(centred).sum(axis=1, keepdims=True) / jnp.maximum(count - 1, 1)
        centred = centred / (jnp.sqrt(variance) + eps)
    return centred.reshape(-1)


def aggregate(per_token: Float[Array, "B T"], mask: Float[Array, "B T"],
              aggregation: str) -> Float[Scalar, ""]:
    """Reduces float32[B, T] per-token values over mask float32[B, T] to a scalar.

    Masked positions are excluded (`where`), not multiplied by 0: an inf there stays out.
    """
    weighted = jnp.where(mask > 0, per_token * mask, 0.0)
    if aggregation == "sequence_mean":
        per_sequence = weighted.sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)
        return per_sequence.mean()
    if aggregation == "token_mean":
        return weighted.sum() / jnp.maximum(mask.sum(), 1.0)
    if aggregation == "dr_grpo":
        return weighted.sum() / mask.size
    raise ValueError(f"Unknown aggregation {aggregation!r}; choose one of {AGGREGATIONS}.")


def k3_kl(logprobs: Float[Array, "B T"], ref_logprobs: Float[Array, "B T"]) -> Float[Array, "B T"]:
    """Per-token k3 estimator of KL(π_θ ‖ π_ref): unbiased, always ≥ 0."""
    log_ratio = ref_logprobs - logprobs
    return jnp.exp(log_ratio) - log_ratio - 1.0


def importance_ratios(logprobs: Float[Array, "B T"], old_logprobs: Float[Array, "B T"],
                      mask: Float[Array, "B T"], level: str = "token") -> Float[Array, "B T"]:
    """float32[B, T] importance ratios, differentiable in logprobs (see the module docstring).

    "token": ρ_i,t = exp(log π_θ − log π_old) (GRPO, PPO). "sequence": GSPO's
    s_i = exp(Σ_t m_i,t (log π_θ − log π_old) / max(Σ_t m_i,t, 1)), the same for every token
    of row i. "sequence_token": GSPO-token's s_i,t = sg[s_i] · exp(log π_θ − sg[log π_θ]).
    Inputs must already be finite where mask is 0 (grpo_loss pins them to 0).
    """
    log_ratio = logprobs - old_logprobs
    if level == "token":
        return jnp.exp(log_ratio)
    if level not in IMPORTANCE_LEVELS:
        raise ValueError(f"Unknown importance level {level!r}; choose one of "
                         f"{IMPORTANCE_LEVELS}.")
    per_sequence = (jnp.where(mask > 0, log_ratio, 0.0).sum(axis=1, keepdims=True)
                    / jnp.maximum(mask.sum(axis=1, keepdims=True), 1.0))
    if level == "sequence":
        return jnp.exp(jnp.broadcast_to(per_sequence, log_ratio.shape))
    return jnp.exp(jax.lax.stop_gradient(per_sequence) + logprobs
                   - jax.lax.stop_gradient(logprobs))


def grpo_loss(logprobs: Float[Array, "B T"], old_logprobs: Float[Array, "B T"],
              ref_logprobs: Float[Array, "B T"] | None,
              advantages: Float[Array, "B"] | Float[Array, "B T"],
              mask: Float[Array, "B T"], *, eps_low: float, eps_high: float, beta: float,
              aggregation: str = "sequence_mean", importance_level: str = "token",
              is_weights: Float[Array, "B T"] | None = None) -> tuple[Float[Scalar, ""], dict]:
    """-J(θ) and its diagnostics; GSPO / GSPO-token with importance_level "sequence" /
    "sequence_token" (eps_low / eps_high then clip the sequence ratio s_i).

    Args:
      logprobs: float32[B, T] log π_θ of the completion tokens (differentiated).
      old_logprobs: float32[B, T] log π_old, the policy that sampled them.
      ref_logprobs: float32[B, T] log π_ref, or None when beta == 0.
      advantages: float32[B], one per sequence (GRPO), or float32[B, T], one per token (PPO's
        GAE advantages, r1jax.losses.ppo).
      mask: float32[B, T], 1 on completion tokens that count.
      importance_level: "token" | "sequence" | "sequence_token" (`importance_ratios`).
      is_weights: float32[B, T] importance-sampling correction weights multiplying each token's
        surrogate (`losses.importance.correction_weights`; treated as constants), or None.
    """
    # Masked positions (padding, tokens after a stop) may hold anything, inf included: pin them
    # to a ratio of 1 so neither the loss nor its gradient can see them.
    counted = mask > 0
    logprobs = jnp.where(counted, logprobs, 0.0)
    old_logprobs = jnp.where(counted, old_logprobs, 0.0)
    if ref_logprobs is not None:
        ref_logprobs = jnp.where(counted, ref_logprobs, 0.0)
    ratio = importance_ratios(logprobs, old_logprobs, mask, importance_level)
    adv = advantages[:, None] if advantages.ndim == 1 else jnp.where(counted, advantages, 0.0)
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    objective = jnp.minimum(unclipped, clipped)
    if is_weights is not None:
        objective = jax.lax.stop_gradient(jnp.where(counted, is_weights, 0.0)) * objective
    metrics = {}
    if beta > 0:
        kl = k3_kl(logprobs, ref_logprobs)
        objective = objective - beta * kl
        metrics["kl"] = aggregate(kl, mask, "token_mean")
    loss = -aggregate(objective, mask, aggregation)

    tokens = jnp.maximum(mask.sum(), 1.0)
    metrics.update(
        clip_low=(((ratio < 1.0 - eps_low) & (adv < 0)) * mask).sum() / tokens,
        clip_high=(((ratio > 1.0 + eps_high) & (adv > 0)) * mask).sum() / tokens,
        ratio_mean=(ratio * mask).sum() / tokens,
        # Extremes over counted tokens (1 when none): reduced as max / min, never averaged.
        ratio_max=jnp.where(counted, ratio, 1.0).max(),
        ratio_min=jnp.where(counted, ratio, 1.0).min(),
    )
    return loss, metrics
