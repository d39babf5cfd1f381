"""model.attention_impl: the kernels give the XLA reference's outputs where they can run, and a
clear error where they cannot."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import models
from r1jax.models import attention
from r1jax.models.transformer import attention_mask


def test_splash_kernel_matches_the_reference_on_packed_rows():
    """The Pallas TPU kernel, run by Pallas' interpreter on the CPU: causal, per segment."""
    b, t, heads, kv_heads, d = 2, 256, 4, 2, 32
    q, k, v = (jax.random.normal(key, (b, t, n, d)) for key, n in
               zip(jax.random.split(jax.random.key(0), 3), (heads, kv_heads, kv_heads)))
    segment_ids = np.ones((b, t), np.int32)
    segment_ids[1, 100:] = 2  # Two packed examples, then padding.
    segment_ids[1, 200:] = 0
    reference = attention.dot_product_attention(q, k, v, attention_mask(jnp.asarray(segment_ids)))
    out = attention.splash_attention(q, k, v, jnp.asarray(segment_ids), interpret=True)
    real = segment_ids != 0  # Padding queries' outputs are never used.
    np.testing.assert_allclose(np.asarray(out)[real], np.asarray(reference)[real], atol=1e-5)


@pytest.mark.parametrize("impl,backend", [("cudnn", "GPU"), ("splash", "TPU")])
def test_kernel_on_the_wrong_backend_is_refused(impl, backend):
    config = models.preset("tiny_llama", attention_impl=impl)
    params = models.init_params(config, jax.random.key(0))  # Parameters do not depend on it.
    with pytest.raises(ValueError, match=f"attention_impl='{impl}' needs a {backend} backend"):
        models.logits(config, params, jnp.zeros((1, 8), jnp.int32))


def test_unknown_attention_impl_is_refused():
    with pytest.raises(ValueError, match="model.attention_impl='flash'.*xla, cudnn, splash"):
        models.preset("tiny_llama", attention_impl="flash")


def _numpy_attention(q, k, v, mask):
    """Softmax attention by hand: q [B, T, H, D], k/v [B, S, K, D], query head h reading kv head
    h // (H / K), mask bool[B, T, S]."""
    b, t, h, d = q.shape
    group = h // k.shape[2]
    out = np.zeros(q.shape, np.float64)
    for row in range(b):
        for query in range(t):
            for head in range(h):
                keys, values = k[row, :, head // group], v[row, :, head // group]
                scores = keys @ q[row, query, head] / np.sqrt(d)
                scores = np.where(mask[row, query], scores, -np.inf)
                weights = np.exp(scores - scores.max())
                out[row, query, head] = weights / weights.sum() @ values
    return out


def test_single_query_attention_matches_softmax_attention_by_hand():
    """The decode loop's form (block-diagonal queries against keys with the heads side by side)
    is grouped-query attention: each query head reads only its own kv head."""
    b, s, heads, kv_heads, d = 3, 11, 6, 3, 8
    q, k, v = (np.asarray(jax.random.normal(key, shape)) for key, shape in zip(
        jax.random.split(jax.random.key(4), 3),
        ((b, 1, heads, d), (b, s, kv_heads, d), (b, s, kv_heads, d))))
    mask = np.random.default_rng(0).random((b, 1, s)) < 0.7
    mask[:, :, 0] = True  # Every row attends to something.
    flat = lambda x: jnp.asarray(x.reshape(b, s, kv_heads * d))
    out = attention.single_query_attention(jnp.asarray(q), flat(k), flat(v), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(out), _numpy_attention(q, k, v, mask), atol=1e-5)
