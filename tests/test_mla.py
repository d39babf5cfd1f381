"""Multi-head Latent Attention: the absorbed (latent-space) and expanded forms agree, the decoding
cache holds only the latent, and cached decoding reproduces the full forward pass."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import models
from r1jax.models import mla
from r1jax.sampling import sampler

TOL = dict(rtol=1e-5, atol=1e-5)


def test_absorbed_attention_equals_expanded():
    b, t, s, h, n, r, c, v = 2, 3, 7, 4, 16, 8, 32, 16
    keys = jax.random.split(jax.random.key(0), 6)
    q_nope, q_rope = (jax.random.normal(keys[0], (b, t, h, n)),
                      jax.random.normal(keys[1], (b, t, h, r)))
    latent, k_rope = jax.random.normal(keys[2], (b, s, c)), jax.random.normal(keys[3], (b, s, r))
    k_up, v_up = jax.random.normal(keys[4], (c, h, n)), jax.random.normal(keys[5], (c, h, v))
    mask = jnp.tril(jnp.ones((t, s), bool), k=s - t)[None].repeat(b, 0).at[1, :, 0].set(False)
    args = (q_nope, q_rope, latent, k_rope, k_up, v_up, mask, 0.1)
    np.testing.assert_allclose(mla.absorbed_attention(*args), mla.expanded_attention(*args),
                               rtol=1e-4, atol=1e-4)


def test_latent_cache_holds_kv_lora_rank_plus_rope_dim_per_token():
    config = models.preset("tiny_deepseek_v3")
    cache = models.init_cache(config, batch_size=2, max_len=10)
    assert set(cache) == {"latent", "k_rope", "valid", "index"}
    m = config.mla
    assert cache["latent"].shape == (config.num_layers, 2, 10, 1, m.kv_lora_rank)
    assert cache["k_rope"].shape == (config.num_layers, 2, 10, 1, m.qk_rope_head_dim)
    per_token = sum(cache[k].size for k in ("latent", "k_rope")) // (2 * 10 * config.num_layers)
    assert per_token == m.kv_lora_rank + m.qk_rope_head_dim  # 40 numbers per token and layer,
    expanded = config.num_heads * (m.qk_head_dim + m.v_head_dim)  # instead of 4 * (24 + 16).
    assert per_token * 4 == expanded


def test_cached_decoding_through_latent_cache_matches_forward():
    """Left-padded prompts prefilled into a latent cache, then fed one token at a time (the
    absorbed path): every step's logits equal the uncached forward pass over the real tokens."""
    config = models.preset("tiny_deepseek_v3")
    params = models.init_params(config, jax.random.key(1))
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, config.vocab_size, 12).astype(np.int32) for _ in range(2)]
    prompt_lengths = np.array([5, 3], np.int32)
    width, steps = 5, 7
    prompts = np.zeros((2, width), np.int32)
    for row, (sequence, length) in enumerate(zip(sequences, prompt_lengths)):
        prompts[row, width - length:] = sequence[:length]
    logits, cache = jax.jit(functools.partial(sampler.prefill, config, cache_len=width + steps),
                            )(params, prompts, prompt_lengths)
    step = jax.jit(functools.partial(sampler.decode_step, config))
    cached = [logits]
    for i in range(steps - 1):
        tokens = jnp.array([s[length + i] for s, length in zip(sequences, prompt_lengths)])
        logits, cache = step(params, tokens, jnp.asarray(prompt_lengths + i), cache)
        cached.append(logits)
    cached = np.stack(cached, 1)  # [B, steps, V]: logits after each prompt + i tokens.
    full = jax.jit(functools.partial(models.logits, config))(params, np.stack(sequences))
    for row, length in enumerate(prompt_lengths):  # Causal: a prefix's logits are the full one's.
        np.testing.assert_allclose(cached[row], full[row, length - 1:length - 1 + steps], **TOL)


def test_yarn_mscale_scales_the_softmax():
    """DeepSeek multiplies 1/sqrt(qk_head_dim) by (0.1 * mscale_all_dim * ln(factor) + 1)^2."""
    config = models.preset("tiny_deepseek_v3")  # YaRN factor 4, mscale_all_dim 1.
    expected = (0.1 * np.log(4.0) + 1) ** 2 / np.sqrt(24)
    np.testing.assert_allclose(mla.softmax_scale(config), expected, rtol=1e-12)
    plain = config.replace(rope_scaling=None)
    np.testing.assert_allclose(mla.softmax_scale(plain), 1 / np.sqrt(24), rtol=1e-12)
