"""How the next token is chosen from a row of logits: greedy, temperature, top-k, top-p.

A `Strategy` is static (hashable): it selects which code is compiled, so greedy decoding pays for
nothing but an argmax, and top-k / top-p cost their threshold searches only when asked for. The
order of the transforms is the one `transformers` uses: temperature, then top-k, then top-p.
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
            raise ValueError(f"top_k must be in [1, {vocab_size}] (the vocabulary), got "
                             f"{self.top_k}.")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        return self


def from_config(section) -> Strategy:
    """The Strategy of a config's `sampling` section (configs/common.py: None means off)."""
    return Strategy(temperature=float(section.temperature), top_k=section.top_k,
                    top_p=section.top_p)


def _order_keys(x: jax.Array) -> jax.Array:
    """uint32 keys ordered as the float32 values of x are (-inf lowest, +inf highest)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    negative = (bits >> 31) == 1
    return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def _largest_threshold(keys: jax.Array, holds) -> jax.Array:
    """uint32[N, 1]: per row, the largest t for which holds(keys >= t) is True.

    keys: uint32[N, V]; holds: bool[N, V] -> bool[N], monotone (True for every t up to the answer,
    and for t = 0, where everything is kept). 32 halvings of the key range find t exactly. This
    replaces a sort: XLA:CPU sorts a [16, 49152] batch of logits in ~100 ms, more than a whole
    decoding step of a 135M model, while these 32 vectorized passes take a few milliseconds.
    """
    rows = keys.shape[0]

    def halve(_, bounds):
        low, high = bounds
        gap = high - low
        middle = low + gap // 2 + gap % 2  # ceil((low + high) / 2) without overflowing uint32.
        ok = holds(keys >= middle[:, None])
        return jnp.where(ok, middle, low), jnp.where(ok, high, middle - 1)

    bounds = (jnp.zeros((rows,), jnp.uint32), jnp.full((rows,), 0xFFFFFFFF, jnp.uint32))
    return jax.lax.fori_loop(0, 32, halve, bounds)[0][:, None]


def top_k_logits(logits: jax.Array, k: int) -> jax.Array:
    """Masks all but the k largest of float32[N, V] logits to -inf (ties at the k-th all kept)."""
    keys = _order_keys(logits)
    threshold = _largest_threshold(keys, lambda kept: jnp.sum(kept, axis=-1) >= k)
    return jnp.where(keys >= threshold, logits, -jnp.inf)


def top_p_logits(logits: jax.Array, p: float) -> jax.Array:
    """Masks float32[N, V] logits outside the nucleus of mass p to -inf.

    A token is kept when the probability mass of the tokens ranked above it is below p, so the
    most likely token is always kept (as in `transformers`' TopPLogitsWarper): the kept set is
    the tokens at or above the largest logit whose "at or above" mass reaches p.
    """
    probs = jax.nn.softmax(logits, axis=-1)
    keys = _order_keys(logits)
    threshold = _largest_threshold(
            keys, lambda kept: jnp.sum(jnp.where(kept, probs, 0.0), axis=-1) >= p)
    return jnp.where(keys >= threshold, logits, -jnp.inf)


def sampling_logits(logits: jax.Array, strategy: Strategy) -> jax.Array:
    """float32[N, V] logits of the distribution `strategy` samples from (before normalisation)."""
    logits = logits / jnp.float32(strategy.temperature)
    if strategy.top_k is not None and strategy.top_k < logits.shape[-1]:
        logits = top_k_logits(logits, strategy.top_k)
    if strategy.top_p is not None and strategy.top_p < 1.0:
        logits = top_p_logits(logits, strategy.top_p)
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


def sample(logits: jax.Array, rngs: jax.Array, strategy: Strategy) -> jax.Array:
    """int32[N] next tokens for float32[N, V] logits, row i drawn with its own key rngs[i].

    One key per row (not one for the batch) makes a row's draw independent of which rows it is
    batched with: see `sample_keys`. Sampling is the Gumbel-max trick, as in
    `jax.random.categorical` (the same draws for the same key), with the faster `argmax`.
    """
    return sample_with_logprobs(logits, rngs, strategy)[0]


def sample_with_logprobs(logits: jax.Array, rngs: jax.Array,
                         strategy: Strategy) -> tuple[jax.Array, jax.Array]:
    """(int32[N] next tokens as `sample` draws them, float32[N] their log-probabilities under the
    distribution they were drawn from: softmax(logits / T) cut to top-k / top-p and renormalised;
    0 for greedy, a point mass)."""
    if strategy.greedy:
        return argmax(logits), jnp.zeros(logits.shape[:1], jnp.float32)
    shaped = sampling_logits(logits, strategy)
    noise = jax.vmap(lambda key: jax.random.gumbel(key, logits.shape[1:], logits.dtype))(rngs)
    token = argmax(shaped + noise)
    picked = jnp.take_along_axis(shaped, token[:, None], axis=-1)[:, 0]
    return token, picked - jax.nn.logsumexp(shaped, axis=-1)


def sample_keys(rng: jax.Array, prompt_ids: jax.Array, n: int) -> jax.Array:
    """key[B * n]: the key of sample j of prompt prompt_ids[b] at row b * n + j (prompt-major).

    A sample's randomness is a function of (rng, prompt id, sample index) only, and its t-th
    token's of `step_keys(...)` at t: the same completion whether the sample is drawn alone,
    in a static batch of any size or order, or in whichever slot continuous batching gives it.
    """
    ids = jnp.repeat(jnp.asarray(prompt_ids, jnp.int32), n)
    index = jnp.tile(jnp.arange(n, dtype=jnp.int32), ids.shape[0] // n)
    return jax.vmap(lambda i, j: jax.random.fold_in(jax.random.fold_in(rng, i), j))(ids, index)


def step_keys(keys: jax.Array, steps: jax.Array) -> jax.Array:
    """key[N]: the keys of token number steps (int32[] or int32[N]) of the samples `keys`."""
    steps = jnp.broadcast_to(jnp.asarray(steps, jnp.int32), keys.shape)
    return jax.vmap(jax.random.fold_in)(keys, steps)
