"""Memory savers change nothing but memory: chunked log-probs and remat give the unchunked,
un-rematerialised numbers and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import models
from r1jax.losses import logprobs

TEMPERATURE = 0.7
LENGTH = 37  # Not a multiple of the chunk: the padded tail must not leak into the results.


def _inputs(config):
    tokens = jax.random.randint(jax.random.key(2), (2, LENGTH), 0, config.vocab_size)
    return tokens, jnp.broadcast_to(jnp.arange(LENGTH), tokens.shape)


def _full(config, params, tokens, positions):
    logits, _ = models.forward(config, params, tokens, positions)
    return (logprobs.token_logprobs(logits[:, :-1], tokens[:, 1:], TEMPERATURE),
            logprobs.token_entropy(logits[:, :-1], TEMPERATURE))


def _chunked(config, params, tokens, positions, chunk=8):
    hidden, _ = models.forward(config, params, tokens, positions, return_hidden=True)
    return logprobs.chunked_logprobs(hidden[:, :-1], models.output_head(config, params),
                                     tokens[:, 1:], TEMPERATURE, chunk=chunk)


def _loss(fn, config, tokens, positions):
    """A GRPO-like scalar: weighted log-probs plus an entropy bonus."""
    weights = jnp.linspace(-1.0, 1.0, tokens.shape[1] - 1)

    def loss(params):
        token_logprobs, entropy = fn(config, params, tokens, positions)
        return (token_logprobs * weights).sum() + 0.1 * entropy.sum()

    return loss


def _assert_same_grads(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        scale = float(jnp.abs(x).max()) + 1e-6
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("preset", ["tiny_llama", "tiny_qwen2"])  # Untied and tied heads.
def test_chunked_logprobs_match_full_logits_with_equal_gradients(preset):
    config = models.preset(preset)
    params = models.init_params(config, jax.random.key(1))
    tokens, positions = _inputs(config)
    full = _full(config, params, tokens, positions)
    for chunk in (8, 64):  # Several chunks with a padded tail; one chunk covering everything.
        chunked = _chunked(config, params, tokens, positions, chunk)
        np.testing.assert_allclose(chunked[0], full[0], atol=1e-6)
        np.testing.assert_allclose(chunked[1], full[1], atol=1e-6)
    _assert_same_grads(jax.grad(_loss(_full, config, tokens, positions))(params),
                       jax.grad(_loss(_chunked, config, tokens, positions))(params))


def test_chunked_backward_never_holds_the_full_logits():
    """The compiled gradient's temporaries stay far below one [B, T, V] float32 array."""
    config = models.preset("tiny_llama", vocab_size=8192, max_seq_len=1024)
    params = models.init_params(config, jax.random.key(1))
    tokens = jnp.zeros((1, 1024), jnp.int32)
    positions = jnp.arange(1024)[None]
    logits_bytes = 1024 * config.vocab_size * 4

    def temp_bytes(fn):
        compiled = jax.jit(jax.grad(_loss(fn, config, tokens, positions))).lower(params).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert temp_bytes(_full) > 2 * logits_bytes
    assert temp_bytes(lambda *a: _chunked(*a, chunk=128)) < logits_bytes / 2


def test_remat_policies_give_the_same_gradients():
    base = models.preset("tiny_llama")
    params = models.init_params(base, jax.random.key(1))
    tokens, positions = _inputs(base)
    reference = jax.grad(_loss(_full, base, tokens, positions))(params)
    for remat in ("dots", "full"):
        config = base.replace(remat=remat)
        _assert_same_grads(reference, jax.grad(_loss(_full, config, tokens, positions))(params))


def test_unknown_remat_policy_is_refused():
    with pytest.raises(ValueError, match="model.remat='some'.*none, dots, full"):
        models.preset("tiny_llama", remat="some")
