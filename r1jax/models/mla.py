"""Multi-head Latent Attention (DeepSeek-V2/V3), with a decoding cache that holds the latent only.

Per token, keys and values come from one low-rank latent c = RMSNorm(x W_kv_a) [kv_lora_rank]
and one RoPE key k_rope [qk_rope_head_dim] shared by every head:

    k_h = [c W_kb_h ; k_rope],   v_h = c W_vb_h,   q_h = [q_nope_h ; q_rope_h]

Two equal ways to compute attention (`expanded_attention`, `absorbed_attention`):
  * expanded: build every head's k_h and v_h, then ordinary attention (cheapest when the
    queries are as many as the keys: training and prefill);
  * absorbed: fold W_kb into the query (q_nope_h W_kb_h^T lives in latent space) and W_vb into
    the output, attending straight over the cached latents. A decoding step then reads
    kv_lora_rank + qk_rope_head_dim numbers per cached token instead of
    heads * (qk_nope_head_dim + qk_rope_head_dim + v_head_dim).

The cache is {"latent": [L, B, S, 1, kv_lora_rank], "k_rope": [L, B, S, 1, qk_rope_head_dim]}: a
single "kv head", so it shares the dense cache's layout and logical axes (transformer.CACHE_AXES).
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.models.attention import masked_softmax, read_layer, write_layer
from r1jax.models.config import ModelConfig, YarnScaling
from r1jax.models.layers import (RMSNorm, annotated_param, apply_rope, rope_attention_factor,
                                 rope_inverse_frequencies)


def softmax_scale(config: ModelConfig) -> float:
    """1/sqrt(qk_head_dim), times YaRN's mscale(factor, mscale_all_dim)^2 (DeepSeek's correction)."""
    scale = config.mla.qk_head_dim ** -0.5
    if isinstance(config.rope_scaling, YarnScaling):
        scale *= config.rope_scaling.softmax_scale_factor()
    return scale


def expanded_attention(q_nope, q_rope, latent, k_rope, k_up, v_up, mask, scale):
    """Attention with per-head keys and values expanded from the latent.

    Args:
      q_nope: [B, T, H, N]; q_rope: [B, T, H, R] (rotated); latent: [B, S, C]; k_rope: [B, S, R]
      (rotated); k_up: [C, H, N]; v_up: [C, H, V]; mask: bool[B, T, S]; scale: softmax scale.
    Returns:
      [B, T, H, V].
    """
    k_nope = jnp.einsum("bsc,chn->bshn", latent, k_up)
    values = jnp.einsum("bsc,chv->bshv", latent, v_up)
    scores = (jnp.einsum("bthn,bshn->bhts", q_nope, k_nope, preferred_element_type=jnp.float32)
              + jnp.einsum("bthr,bsr->bhts", q_rope, k_rope, preferred_element_type=jnp.float32))
    probs = masked_softmax(scores * scale, mask).astype(values.dtype)
    return jnp.einsum("bhts,bshv->bthv", probs, values)


def absorbed_attention(q_nope, q_rope, latent, k_rope, k_up, v_up, mask, scale):
    """The same attention as `expanded_attention` (same arguments), computed in latent space:
    W_kb is absorbed into the queries and W_vb applied after the weighted sum of latents."""
    q_latent = jnp.einsum("bthn,chn->bthc", q_nope, k_up)
    scores = (jnp.einsum("bthc,bsc->bhts", q_latent, latent, preferred_element_type=jnp.float32)
              + jnp.einsum("bthr,bsr->bhts", q_rope, k_rope, preferred_element_type=jnp.float32))
    probs = masked_softmax(scores * scale, mask).astype(latent.dtype)
    out_latent = jnp.einsum("bhts,bsc->bthc", probs, latent)
    return jnp.einsum("bthc,chv->bthv", out_latent, v_up)


class MLA(nn.Module):
    """Multi-head Latent Attention over the current tokens, or over a latent cache.

    Same call signature and cache convention as `attention.Attention`: with a cache, this layer's
    latents are written at [layer, :, cache_index : cache_index + T]. A one-token step (decoding)
    attends in latent space; longer inputs (training, prefill) use the expanded form.
    """

    config: ModelConfig
    cache_window: Optional[int] = None

    def _param(self, name, shape, axes, init=None):
        return annotated_param(self, name, shape, axes, self.config.param_dtype, init).astype(
            self.config.dtype)

    def _queries(self, x: jax.Array) -> jax.Array:
        """[B, T, E] -> [B, T, H, qk_head_dim]."""
        cfg, m = self.config, self.config.mla
        if m.q_lora_rank is None:
            kernel = self._param("q_kernel", (cfg.embed_dim, cfg.num_heads, m.qk_head_dim),
                                 ("embed", "q_heads", "head_dim"))
            return jnp.einsum("btd,dhk->bthk", x, kernel)
        down = self._param("q_a_kernel", (cfg.embed_dim, m.q_lora_rank), ("embed", "q_lora"))
        low = RMSNorm(cfg.norm_eps, cfg.param_dtype, "q_lora", name="q_a_norm")(x @ down)
        up = self._param("q_b_kernel", (m.q_lora_rank, cfg.num_heads, m.qk_head_dim),
                         ("q_lora", "q_heads", "head_dim"))
        return jnp.einsum("btl,lhk->bthk", low, up)

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array, mask: jax.Array,
                 cache: Optional[dict], cache_index: Optional[jax.Array],
                 layer: Optional[jax.Array] = None):
        """x: [B, T, E]; positions: int32[B, T]; mask: bool[B, T, S]. Returns ([B, T, E], cache)."""
        cfg, m = self.config, self.config.mla
        x = x.astype(cfg.dtype)
        q = self._queries(x)
        q = nn.with_logical_constraint(q, ("batch", "length", "q_heads", "head_dim"))
        q_nope, q_rope = q[..., :m.qk_nope_head_dim], q[..., m.qk_nope_head_dim:]

        kv_down = self._param("kv_a_kernel", (cfg.embed_dim, m.kv_lora_rank + m.qk_rope_head_dim),
                              ("embed", "kv_lora"))
        compressed = x @ kv_down
        latent = RMSNorm(cfg.norm_eps, cfg.param_dtype, "kv_lora", name="kv_a_norm")(
            compressed[..., :m.kv_lora_rank])[:, :, None]          # [B, T, 1, C]
        k_rope = compressed[..., m.kv_lora_rank:][:, :, None]      # [B, T, 1, R]
        inv_freq = rope_inverse_frequencies(m.qk_rope_head_dim, cfg.rope_theta, cfg.rope_scaling)
        factor = rope_attention_factor(cfg.rope_scaling)
        q_rope = apply_rope(q_rope, positions, inv_freq, factor)
        k_rope = apply_rope(k_rope, positions, inv_freq, factor)

        if cache is not None:
            cache = {name: write_layer(cache[name], new, layer, cache_index)
                     for name, new in (("latent", latent), ("k_rope", k_rope))}
            latent, k_rope = (read_layer(cache[name], layer, self.cache_window, cfg.dtype)
                              for name in ("latent", "k_rope"))
        kv_up = self._param("kv_b_kernel",
                            (m.kv_lora_rank, cfg.num_heads, m.qk_nope_head_dim + m.v_head_dim),
                            ("kv_lora", "q_heads", "head_dim"))
        attend = absorbed_attention if x.shape[1] == 1 else expanded_attention
        # [B, S, 1, C] from the stacked cache or the current tokens, [B, S, C] per layer.
        flat = lambda a: a.reshape(a.shape[:2] + (-1,))
        out = attend(q_nope, q_rope, flat(latent), flat(k_rope),
                     kv_up[..., :m.qk_nope_head_dim], kv_up[..., m.qk_nope_head_dim:], mask,
                     softmax_scale(cfg))
        o_kernel = self._param("o_kernel", (cfg.num_heads, m.v_head_dim, cfg.embed_dim),
                               ("q_heads", "head_dim", "embed"))
        return jnp.einsum("bthv,hvd->btd", out, o_kernel), cache
