"""Supervised fine-tuning loss: masked next-token cross-entropy with optional z-loss."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.losses.logprobs import token_logprobs


def sft_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array, *,
             z_loss: float = 0.0) -> tuple[jax.Array, dict]:
    """Cross-entropy averaged over the weighted tokens of the whole batch.

    Args:
      logits: float32[B, T, V]; targets: int32[B, T] (the next token of each position).
      weights: float32[B, T], 1 where the target is trained on (completion tokens), else 0.
      z_loss: coefficient of PaLM's log²Z penalty that keeps the softmax normaliser near 1.
    """
    logz = jax.nn.logsumexp(logits, axis=-1)
    nll = -token_logprobs(logits, targets)
    tokens = jnp.maximum(weights.sum(), 1.0)
    ce = (nll * weights).sum() / tokens
    loss = ce + z_loss * (jnp.square(logz) * weights).sum() / tokens
    accuracy = ((logits.argmax(-1) == targets) * weights).sum() / tokens
    return loss, {"cross_entropy": ce, "token_accuracy": accuracy, "tokens": weights.sum()}
