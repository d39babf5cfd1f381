"""PPO with a learned value model (the baseline the R1 paper compares GRPO against).

Per completion token t (mask m_t, last counted token L), with value estimates V_t:

    r_t   = -β_r · KL_t + [t == L] · R                       (reward at the last token, KL as penalty)
    δ_t   = r_t + γ V_{t+1} m_{t+1} - V_t                      (V after the last token is 0)
    A_t   = δ_t + γ λ A_{t+1}                                  (GAE, computed right to left)
    G_t   = A_t + V_t                                          (value targets, before whitening)
    L_V   = ½ · agg max((V'_t - G_t)², (clip(V'_t, V_t ± ε_v) - G_t)²)     (clipped value loss)

The policy term is GRPO's clipped surrogate with the per-token advantage A_t (losses.grpo.grpo_loss
accepts [B] or [B, T] advantages).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Scalar

from r1jax.losses.grpo import aggregate


def token_rewards(rewards: Float[Array, "B"], mask: Float[Array, "B T"],
                  kl: Float[Array, "B T"] | None, kl_coef: float) -> Float[Array, "B T"]:
    """float32[B, T]: the sequence reward on each row's last counted token, minus kl_coef · kl."""
    positions = jnp.arange(mask.shape[1])[None, :]
    last = jnp.max(jnp.where(mask > 0, positions, -1), axis=1, keepdims=True)
    per_token = jnp.where(positions == last, rewards[:, None], 0.0)
    if kl is not None and kl_coef:
        per_token = per_token - kl_coef * jnp.where(mask > 0, kl, 0.0)
    return per_token * mask


def gae(token_rewards: Float[Array, "B T"], values: Float[Array, "B T"], mask: Float[Array, "B T"],
        *, gamma: float, lam: float) -> tuple[Float[Array, "B T"], Float[Array, "B T"]]:
    """(advantages, returns), each float32[B, T], by GAE right to left; 0 where mask is 0.

    A_t = δ_t + γλ A_{t+1}, δ_t = r_t + γ V_{t+1} - V_t, with V and A beyond the mask taken as 0.
    """
    values = values * mask
    next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
    deltas = (token_rewards + gamma * next_values - values) * mask

    def step(carry, xs):
        delta, m = xs
        advantage = (delta + gamma * lam * carry) * m
        return advantage, advantage

    _, advantages = jax.lax.scan(step, jnp.zeros(mask.shape[0], jnp.float32),
                                 (deltas.T, mask.T), reverse=True)
    advantages = advantages.T
    return advantages, (advantages + values) * mask


def whiten(values: Float[Array, "B T"], mask: Float[Array, "B T"],
           eps: float = 1e-8) -> Float[Array, "B T"]:
    """(x - mean) / sqrt(var + eps) over the counted tokens (population variance); 0 elsewhere."""
    count = jnp.maximum(mask.sum(), 1.0)
    mean = (values * mask).sum() / count
    var = (((values - mean) * mask) ** 2).sum() / count
    return (values - mean) * jax.lax.rsqrt(var + eps) * mask


def value_loss(values: Float[Array, "B T"], old_values: Float[Array, "B T"],
               returns: Float[Array, "B T"], mask: Float[Array, "B T"], *, clip: float,
               aggregation: str = "token_mean") -> tuple[Float[Scalar, ""], dict]:
    """½ · agg max((V - G)², (clip(V, V_old ± clip) - G)²) and the fraction of clipped tokens."""
    clipped = old_values + jnp.clip(values - old_values, -clip, clip)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped - returns) ** 2
    loss = 0.5 * aggregate(jnp.maximum(unclipped_err, clipped_err), mask, aggregation)
    tokens = jnp.maximum(mask.sum(), 1.0)
    return loss, {"value_clipfrac": ((clipped_err > unclipped_err) * mask).sum() / tokens}

