"""Token log-probabilities and entropy from logits: the one place the sampler, SFT, GRPO and every
other loss turn logits into per-token numbers, so that π_old (sampler), π_θ and π_ref (trainer)
are computed by the same code."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


def tempered(logits: Float[Array, "*B V"], temperature: float = 1.0) -> Float[Array, "*B V"]:
    """logits / temperature in float32; temperature 0 (greedy) or 1 leaves them as they are.

    GRPO's ratio and KL compare the tempered policy the rollouts came from, as TRL and verl do.
    """
    logits = logits.astype(jnp.float32)
    if temperature > 0 and temperature != 1:
        logits = logits / jnp.float32(temperature)
    return logits


def token_logprobs(logits: Float[Array, "*B V"], targets: Int[Array, "*B"],
                   temperature: float = 1.0) -> Float[Array, "*B"]:
    """float32[...] log p(targets) from float32[..., V] logits and int32[...] targets."""
    logits = tempered(logits, temperature)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def token_entropy(logits: Float[Array, "*B V"], temperature: float = 1.0) -> Float[Array, "*B"]:
    """float32[...] entropy of the softmax over float32[..., V] logits."""
    logp = jax.nn.log_softmax(tempered(logits, temperature), axis=-1)
    return -(jnp.exp(logp) * logp).sum(axis=-1)
