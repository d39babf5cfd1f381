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
