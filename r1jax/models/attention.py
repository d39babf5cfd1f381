"""Grouped-query attention with RoPE, optional qkv bias (Qwen2) and q/k norm (Qwen3).

The attention mask is built once per forward pass (see `transformer.attention_mask`) and passed to
every layer, so the same module serves training (segment ids, packing) and cached decoding.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.models import lora
from r1jax.models.config import ModelConfig
from r1jax.models.layers import (RMSNorm, annotated_param, apply_rope, rope_attention_factor,
                                 rope_inverse_frequencies)

# Finite rather than -inf so a fully masked row (a padding query) softmaxes to something harmless.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax over the last axis of float32 scores [B, ..., T, S] where bool mask [B, T, S]."""
    b, t, s = mask.shape
    mask = mask.reshape(b, *(1,) * (scores.ndim - 3), t, s)
    return jax.nn.softmax(jnp.where(mask, scores, _MASK_VALUE), axis=-1)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax attention, fp32 scores.

    Args:
      q: [B, T, H, D] queries; k, v: [B, S, K, D] keys/values with H a multiple of K.
      mask: bool[B, T, S], True where query t may attend to key s.
    Returns:
      [B, T, H, D] in q's dtype.
    """
    b, t, h, d = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(b, t, kv_heads, h // kv_heads, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
    probs = masked_softmax(scores / jnp.sqrt(jnp.float32(d)), mask).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """`dot_product_attention` by cuDNN's fused kernel (GPU; bf16/fp16 inputs)."""
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation="cudnn")


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array,
                     interpret: bool = False) -> jax.Array:
    """Causal self-attention within segments by the Pallas TPU splash kernel.

    q: [B, T, H, D]; k, v: [B, T, K, D]; segment_ids: int32[B, T] (0: padding, which only
    padding attends to; its outputs are never used). T must be a multiple of the kernel's
    block size (128). interpret: run the kernel in Pallas' interpreter (any backend; tests).
    """
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_kernel as splash, splash_attention_mask as masks)
    b, t, h, d = q.shape
    mask = masks.MultiHeadMask([masks.CausalMask((t, t)) for _ in range(h)])
    kernel = splash.make_splash_mha(mask, head_shards=1, q_seq_shards=1, interpret=interpret)
    heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # [B, T, N, D] <-> [B, N, T, D]
    q = heads_first(q / jnp.sqrt(jnp.asarray(d, q.dtype)))  # The kernel does not scale.
    out = jax.vmap(kernel)(q, heads_first(k), heads_first(v),
                           segment_ids=splash.SegmentIds(q=segment_ids, kv=segment_ids))
    return heads_first(out)


def single_query_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                           mask: jax.Array) -> jax.Array:
    """`dot_product_attention` for decoding (T = 1), reading keys and values in the cache's own
    [B, S, K, D] layout.

    The einsum form batches over (row, kv head), which XLA:CPU feeds with a transposed copy of
    the whole cache window per layer and step: most of a long decode step. Here each query head
    sits in its kv head's block of an otherwise zero K * D vector, so one [H, K*D] x [K*D, S]
    matmul per row scores every head against the keys as stored, and one [H, S] x [S, K*D]
    matmul gathers the values. That multiplies K times the products, which decoding, bound by
    reading the cache, does not notice; the prefill's long queries keep the einsum.

    Args: q [B, T, H, D]; k, v [B, S, K * D], the kv heads side by side (`read_layer`'s
    per-layer layout); mask bool[B, T, S]. Returns [B, T, H, D] in q's dtype.
    """
    b, t, h, d = q.shape
    s, kv_heads = k.shape[1], k.shape[2] // d
    groups = q.reshape(b, t, kv_heads, h // kv_heads, d)
    # Padding (not a product with an identity) leaves the zeros out of the fused RoPE's work.
    q = jnp.stack([jnp.pad(groups[:, :, j], [(0, 0)] * 3 + [(j * d, (kv_heads - 1 - j) * d)])
                   for j in range(kv_heads)], axis=2)
    scores = jnp.einsum("bqe,bse->bqs", q.reshape(b, t * h, kv_heads * d), k,
                        preferred_element_type=jnp.float32)
    scores = jnp.where(mask[:, :, None, :], scores.reshape(b, t, h, s) / jnp.sqrt(jnp.float32(d)),
                       _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype).reshape(b, t * h, s)
    out = jnp.einsum("bqs,bse->bqe", probs, v)
    out = out.reshape(b, t, kv_heads, h // kv_heads, kv_heads, d)
    return jnp.stack([out[:, :, j, :, j] for j in range(kv_heads)], axis=2).reshape(b, t, h, d)


def write_layer(cache, new: jax.Array, layer, index: jax.Array):
    """Writes new [B, T, K, D] into one layer of the cache at [b, index : index + T].

    cache: [L, B, S, K, D] (layer: int32[]), or a tuple of L arrays [B, S, K * D], the decode
    layout of `transformer.per_layer_cache` (layer: a Python int), returned as a new tuple.
    index: int32[] (the batch shares one write position) or int32[B] (each row its own, as in
    continuous batching; writes past the cache's end are dropped).
    """
    if isinstance(cache, tuple):
        rows = _write_rows(cache[layer], new.reshape(new.shape[:2] + (-1,)), index)
        return cache[:layer] + (rows,) + cache[layer + 1:]
    return _write_rows(cache, new, index, layer)


def _write_rows(cache: jax.Array, new: jax.Array, index: jax.Array, layer=None) -> jax.Array:
    """`write_layer` into [B, S, ...], or into layer `layer` of [L, B, S, ...]."""
    new = new.astype(cache.dtype)
    lead = () if layer is None else (layer,)
    if index.ndim == 0:
        zero = jnp.zeros((), jnp.int32)
        new = new if layer is None else new[None]
        trailing = (zero,) * (cache.ndim - 2 - len(lead))
        return jax.lax.dynamic_update_slice(cache, new, lead + (zero, index) + trailing)
    rows = jnp.arange(new.shape[0])[:, None]
    slots = index[:, None] + jnp.arange(new.shape[1])
    return cache.at[lead + (rows, slots)].set(new, mode="drop")


def read_layer(cache, layer, window: Optional[int], dtype) -> jax.Array:
    """The first `window` slots (all when None) of one layer of the cache (see `write_layer`):
    [B, W, K, D] from a stacked cache, [B, W, K * D] from a per-layer one. The per-layer layout
    keeps the heads flat because a reshape between a step's cache write and the attention
    matmul made XLA:CPU duplicate the write, and copy the layer's cache, at every step."""
    layer_cache = (cache[layer] if isinstance(cache, tuple)
                   else jax.lax.dynamic_index_in_dim(cache, layer, keepdims=False))
    return layer_cache[:, :window].astype(dtype)


class Attention(nn.Module):
    """Self-attention over the current tokens, or over a KV cache they are written into."""

    config: ModelConfig
    cache_window: Optional[int] = None  # Attend to the cache's first slots only (see forward).

    def _projection(self, name: str, heads: int, heads_axis: str):
        cfg = self.config
        kernel = annotated_param(self, f"{name}_kernel", (cfg.embed_dim, heads, cfg.head_dim),
                                 ("embed", heads_axis, "head_dim"), cfg.param_dtype)
        bias = None
        if cfg.qkv_bias:
            bias = annotated_param(self, f"{name}_bias", (heads, cfg.head_dim),
                                   (heads_axis, "head_dim"), cfg.param_dtype, nn.initializers.zeros)
        return kernel, bias

    def _project(self, x: jax.Array, name: str, heads: int, heads_axis: str) -> jax.Array:
        kernel, bias = self._projection(name, heads, heads_axis)
        dtype = self.config.dtype
        out = jnp.einsum("btd,dhk->bthk", x, kernel.astype(dtype))
        if lora.targeted(self.config, name):
            out = out + lora.delta(self, self.config, name, x, (self.config.embed_dim,),
                                   (heads, self.config.head_dim), ("embed",),
                                   (heads_axis, "head_dim"))
        if bias is not None:
            out = out + bias.astype(dtype)
        return out

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array, mask: jax.Array,
                 cache: Optional[dict], cache_index: Optional[jax.Array],
                 layer: Optional[jax.Array] = None):
        """x: [B, T, E]; positions: int32[B, T]; mask: bool[B, T, S].

        With a cache ({"k", "v"}: [L, B, S, K, D], all layers, or per-layer tuples: see
        `write_layer`) this layer's new keys/values are written in place at
        [layer, :, cache_index : cache_index + T] (cache_index int32[] or int32[B]) and attention
        runs over the layer's first cache_window slots (all S by default); returns the updated
        cache.
        """
        cfg = self.config
        x = x.astype(cfg.dtype)
        q = self._project(x, "q", cfg.num_heads, "q_heads")
        k = self._project(x, "k", cfg.num_kv_heads, "kv_heads")
        v = self._project(x, "v", cfg.num_kv_heads, "kv_heads")
        if cfg.qk_norm:
            q = RMSNorm(cfg.norm_eps, cfg.param_dtype, "head_dim", name="q_norm")(q)
            k = RMSNorm(cfg.norm_eps, cfg.param_dtype, "head_dim", name="k_norm")(k)
        inv_freq = rope_inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        factor = rope_attention_factor(cfg.rope_scaling)
        q = apply_rope(q, positions, inv_freq, factor)
        k = apply_rope(k, positions, inv_freq, factor)
        q = nn.with_logical_constraint(q, ("batch", "length", "q_heads", "head_dim"))

        per_layer_cache = cache is not None and isinstance(cache["k"], tuple)
        if cache is not None:
            cache = {name: write_layer(cache[name], new, layer, cache_index)
                     for name, new in (("k", k), ("v", v))}
            k, v = (read_layer(cache[name], layer, self.cache_window, cfg.dtype)
                    for name in ("k", "v"))
        # Cached passes (sampling) always take the XLA path: the kernels serve whole sequences.
        if cache is None and cfg.attention_impl == "cudnn":
            out = cudnn_attention(q, k, v, mask)
        elif cache is None and cfg.attention_impl == "splash":
            out = splash_attention(q, k, v, mask)  # `forward` passes segment ids as the mask.
        elif per_layer_cache and x.shape[1] == 1:
            # The per-layer layout is the CPU decode loop's, where the einsum's copies dominate.
            out = single_query_attention(q, k, v, mask)
        else:
            if per_layer_cache:
                k, v = (a.reshape(a.shape[:2] + (cfg.num_kv_heads, cfg.head_dim)) for a in (k, v))
            out = dot_product_attention(q, k, v, mask)
        o_kernel = annotated_param(self, "o_kernel", (cfg.num_heads, cfg.head_dim, cfg.embed_dim),
                                   ("q_heads", "head_dim", "embed"), cfg.param_dtype)
        projected = jnp.einsum("bthk,hkd->btd", out, o_kernel.astype(cfg.dtype))
        if lora.targeted(cfg, "o"):
            projected = projected + lora.delta(self, cfg, "o", out, (cfg.num_heads, cfg.head_dim),
                                               (cfg.embed_dim,), ("q_heads", "head_dim"),
                                               ("embed",))
        return projected, cache
