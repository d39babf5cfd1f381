"""How the next token is chosen from a row of logits: greedy, temperature, top-k, top-p.

A `Strategy` is static (hashable): it selects which code is compiled, so greedy decoding never pays
for a sort and top-p sorts once per step only when asked for. The order of the transforms is the
one `transformers` uses: temperature, then top-k, then top-p.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Strategy:
    """Sampling parameters.

    Attributes:
      temperature: 0 means greedy (argmax); otherwise logits are divided by it.
      top_k: keep only the k most likely tokens (None: all).
      top_p: keep the smallest set of most likely tokens whose mass reaches p (None or 1: all).
    """

    temperature: float = 0.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def validate(self, vocab_size: int) -> "Strategy":
        """Raises ValueError on a parameter outside its range; returns self."""
        if not self.temperature >= 0.0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}.")
        if self.top_k is not None and not 1 <= self.top_k <= vocab_size:
            raise ValueError(f"top_k must be in [1, {vocab_size}] (the vocabulary), got {self.top_k}.")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        return self


def top_k_logits(logits: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Masks all but the k largest logits of each row to -inf.

    logits: float32[N, V]. Returns (masked float32[N, V], the k kept values float32[N, k] sorted
    in descending order, which top-p can reuse instead of sorting the whole vocabulary).
    """
    kept, _ = jax.lax.top_k(logits, k)
    return jnp.where(logits >= kept[:, -1:], logits, -jnp.inf), kept


def top_p_logits(logits: jax.Array, p: float, sorted_logits: Optional[jax.Array] = None) -> jax.Array:
    """Masks logits outside the nucleus of mass p to -inf.

    A token is kept when the probability mass of the tokens ranked above it is below p, so the
    most likely token is always kept (as in `transformers`' TopPLogitsWarper).

    logits: float32[N, V]; sorted_logits: float32[N, K] the K largest logits in descending order
    when already known (K >= the nucleus size, e.g. after top-k), else the whole row is sorted.
    """
    if sorted_logits is None:
        sorted_logits = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_above = jnp.cumsum(probs, axis=-1) - probs
    threshold = jnp.min(jnp.where(mass_above < p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits >= threshold, logits, -jnp.inf)


def sampling_logits(logits: jax.Array, strategy: Strategy) -> jax.Array:
    """float32[N, V] logits of the distribution `strategy` samples from (before normalisation)."""
    logits = logits / jnp.float32(strategy.temperature)
    kept = None
    if strategy.top_k is not None and strategy.top_k < logits.shape[-1]:
        logits, kept = top_k_logits(logits, strategy.top_k)
    if strategy.top_p is not None and strategy.top_p < 1.0:
        logits = top_p_logits(logits, strategy.top_p, kept)
    return logits


def argmax(logits: jax.Array) -> jax.Array:
    """int32[N] index of each row's largest float32[N, V] logit, the first one on ties.

    `jnp.argmax` lowers to a (value, index) pair reduction that XLA:CPU runs unvectorized, about
    3x slower than these two plain reductions; at a large vocabulary that is felt every step.
    """
    vocab = logits.shape[-1]
    best = jnp.max(logits, axis=-1, keepdims=True)
    first = jnp.min(jnp.where(logits == best, jnp.arange(vocab, dtype=jnp.int32), vocab), axis=-1)
    return jnp.minimum(first, vocab - 1)  # A row of NaNs has no maximum; keep the id in range.


def sample(logits: jax.Array, rng: jax.Array, strategy: Strategy) -> jax.Array:
    """int32[N] next tokens for float32[N, V] logits; rows draw independent samples from one key.

    Sampling is the Gumbel-max trick, as in `jax.random.categorical` (same draws for the same
    key), with the faster `argmax`.
    """
    if strategy.greedy:
        return argmax(logits)
    noise = jax.random.gumbel(rng, logits.shape, logits.dtype)
    return argmax(sampling_logits(logits, strategy) + noise)


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """float32[N] log-probabilities of int32[N] tokens under the raw float32[N, V] logits.

    "Raw" means temperature 1 and no truncation: the policy distribution GRPO's ratio and KL use
    (the trainer computes its training logprobs with the same convention), whatever the sampling
    strategy was.
    """
    chosen = jnp.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0]
    return chosen - jax.nn.logsumexp(logits, axis=-1)
