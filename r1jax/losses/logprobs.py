"""Token log-probabilities and entropy from logits: the one place the sampler, SFT, GRPO and every
other loss turn logits into per-token numbers, so that π_old (sampler), π_θ and π_ref (trainer)
are computed by the same code."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from r1jax.models.transformer import head_logits


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


def token_logprobs_and_entropy(logits: Float[Array, "*B V"], targets: Int[Array, "*B"],
                               temperature: float = 1.0
                               ) -> tuple[Float[Array, "*B"], Float[Array, "*B"]]:
    """(`token_logprobs`, `token_entropy`) from one log-softmax over the vocabulary, whose
    exponentials the two apart compute twice (on CPU a large share of a small model's update).
    H = -Σ p·log p, not lse - Σ p·logits, which loses a peaked distribution's small entropy to
    cancellation in float32."""
    logp = jax.nn.log_softmax(tempered(logits, temperature), axis=-1)
    picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return picked, -(jnp.exp(logp) * logp).sum(axis=-1)


def chunked_logprobs(hidden: Float[Array, "B T E"], head: Float[Array, "E V"],
                     targets: Int[Array, "B T"], temperature: float = 1.0, chunk: int = 1024
                     ) -> tuple[Float[Array, "B T"], Float[Array, "B T"]]:
    """Token log-probs and entropy from final hidden states, never holding [B, T, V] logits.

    The sequence is cut into chunks of `chunk` positions; each chunk's logits are projected,
    reduced to log-probs and entropy, and dropped (jax.lax.map), and the backward pass
    recomputes them chunk by chunk (jax.checkpoint): memory for logits is [B, chunk, V] instead
    of [B, T, V] (152k vocabulary x 16k tokens is 10 GB in float32, per sequence). The numbers
    are those of `token_logprobs` / `token_entropy` on the full logits.

    Args:
      hidden: [B, T, E] final normed hidden states (`models.forward(..., return_hidden=True)`).
      head: [E, V] the output projection (`models.output_head(config, params)`).
      targets: int32[B, T] the tokens to score.
      temperature: as in `token_logprobs`.
      chunk: positions per chunk (T is padded up to a multiple of it).
    Returns:
      (logprobs float32[B, T], entropy float32[B, T]).
    """
    b, t, e = hidden.shape
    chunk = min(chunk, t)
    pad = -t % chunk
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
    chunks = (t + pad) // chunk
    as_chunks = lambda x: jnp.moveaxis(x.reshape(b, chunks, chunk, *x.shape[2:]), 1, 0)

    @jax.checkpoint
    def one_chunk(args):
        hidden, targets = args
        logits = head_logits(hidden, head)
        return token_logprobs_and_entropy(logits, targets, temperature)

    logprobs, entropy = jax.lax.map(one_chunk, (as_chunks(hidden), as_chunks(targets)))
    from_chunks = lambda x: jnp.moveaxis(x, 0, 1).reshape(b, chunks * chunk)[:, :t]
    return from_chunks(logprobs), from_chunks(entropy)
