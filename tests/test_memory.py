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


def test_chunked_backward_memory_does_not_grow_with_vocabulary_times_length():
    """Doubling the vocabulary adds at least a [T, V] float32 array to the full-logits gradient's
    temporaries, and less than a quarter of one to the chunked gradient's."""
    length, chunk = 1024, 128
    tokens = jnp.zeros((1, length), jnp.int32)
    positions = jnp.arange(length)[None]

    def temp_bytes(fn, vocab_size):
        config = models.preset("tiny_llama", vocab_size=vocab_size, max_seq_len=length)
        params = jax.eval_shape(lambda: models.init_params(config, jax.random.key(1)))
        loss = _loss(fn, config, tokens, positions)
        return jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis().temp_size_in_bytes

    chunked = lambda *args: _chunked(*args, chunk=chunk)
    added_logits = length * 4096 * 4  # float32 [T, V] for the 4096 added tokens.
    assert temp_bytes(_full, 8192) - temp_bytes(_full, 4096) >= added_logits
    assert temp_bytes(chunked, 8192) - temp_bytes(chunked, 4096) < added_logits / 4


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


def test_the_config_keys_reach_the_model():
    from configs import r1_zero
    config = r1_zero.get_config("tiny")
    config.model.update(remat="full", attention_impl="xla")
    model_config, _, _ = models.load_policy(config.model)
    assert (model_config.remat, model_config.attention_impl) == ("full", "xla")
    config.model.remat = "some"
    with pytest.raises(ValueError, match="model.remat='some'"):
        models.load_policy(config.model)
