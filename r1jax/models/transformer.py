"""The decoder-only transformer and the pure functions everything else calls.

Layers are stacked with `nn.scan`, so parameters carry a leading `layers` axis and a 30-layer
model compiles as fast as a 1-layer one. Layers of one scan must be identical, so a MoE model
whose first layers are dense (DeepSeek's first_k_dense_replace) has two stacks, `dense_layers`
then `layers` (see `layer_stacks`). The KV cache is an explicit pytree:

    cache = {"k": [L, B, S, K, D], "v": [L, B, S, K, D],   # per-layer keys/values
             "valid": bool[B, S],                           # slots holding a real token
             "index": int32[]}                              # next slot to write

passed in and returned by `forward`, never stored in the module. Multi-head Latent Attention
models cache {"latent": [L, B, S, 1, C], "k_rope": [L, B, S, 1, R]} instead of k and v (see mla.py).
"""
from __future__ import annotations

import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.models import lora
from r1jax.models.attention import Attention
from r1jax.models.config import ModelConfig
from r1jax.models.layers import MLP, RMSNorm, annotated_param
from r1jax.models.mla import MLA
from r1jax.models.moe import MoE

CACHE_AXES = ("layers", "batch", "cache_length", "kv_heads", "head_dim")
# What each `ModelConfig.remat` saves for the backward pass (None: nothing but the layer input).
_REMAT_POLICIES = {"dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
                   "full": None}


def layer_stacks(config: ModelConfig) -> tuple[tuple[str, int, bool], ...]:
    """(params name, number of layers, MoE?) of each scanned stack of identical layers, in order."""
    if config.moe is None:
        return (("layers", config.num_layers, False),)
    dense = config.moe.first_dense_layers
    stacks = (("dense_layers", dense, False), ("layers", config.num_layers - dense, True))
    return tuple(stack for stack in stacks if stack[1])


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)).

    The scan carries (x, cache, layer): the whole [L, ...] cache rides along and each layer
    writes its own slice in place. Scanning the cache as per-layer inputs and outputs instead
    would stack a fresh copy of all of it at every decoding step. A MoE layer's router
    statistics are the scan's per-layer output.
    """

    config: ModelConfig
    cache_window: Optional[int] = None
    moe: bool = False

    @nn.compact
    def __call__(self, carry, positions, mask, cache_index, token_valid):
        x, cache, layer = carry
        cfg = self.config
        attention = Attention if cfg.mla is None else MLA
        attn_out, cache = attention(cfg, self.cache_window, name="attn")(
            RMSNorm(cfg.norm_eps, cfg.param_dtype, name="attn_norm")(x), positions, mask,
            cache, cache_index, layer)
        x = x + attn_out
        normed = RMSNorm(cfg.norm_eps, cfg.param_dtype, name="mlp_norm")(x)
        stats = None
        if self.moe:
            mlp_out, stats = MoE(cfg, name="mlp")(normed, token_valid)
        else:
            mlp_out = MLP(cfg.embed_dim, cfg.mlp_dim, cfg.dtype, cfg.param_dtype, cfg,
                          name="mlp")(normed)
        x = nn.with_logical_constraint(x + mlp_out, ("batch", "length", "embed"))
        return (x, cache, layer + 1), stats


def head_logits(hidden: jax.Array, head: jax.Array) -> jax.Array:
    """float32[..., V] logits from final hidden states [..., E] and the output head [E, V], both
    in the compute dtype: the one vocabulary projection (the model's and chunked losses')."""
    return jnp.dot(hidden, head, preferred_element_type=jnp.float32)


def output_head(config: ModelConfig, params) -> jax.Array:
    """The output projection [E, V] in the compute dtype (the transposed embedding when tied)."""
    head = params["embedding"].T if config.tie_embeddings else params["lm_head"]
    return head.astype(config.dtype)


class Transformer(nn.Module):
    """tokens -> (logits float32[B, T, V], new cache or None).

    cache_window: attend to the cache's first cache_window slots only (None: all of them).
    MoE layers' RouterStats ([L_moe, ...]) are sown into the "intermediates" collection.
    return_hidden: return the final normed hidden states [B, T, E] instead of logits.
    """

    config: ModelConfig
    cache_window: Optional[int] = None
    unstacked: bool = False

    @nn.compact
    def __call__(self, tokens: jax.Array, positions: jax.Array, mask: jax.Array,
                 cache: Optional[dict] = None, cache_index: Optional[jax.Array] = None,
                 logits_start: int = 0, token_valid: Optional[jax.Array] = None,
                 return_hidden: bool = False):
        cfg = self.config
        embedding = annotated_param(self, "embedding", (cfg.vocab_size, cfg.embed_dim),
                                    ("vocab", "embed"), cfg.param_dtype,
                                    nn.initializers.normal(stddev=1.0))
        x = jnp.take(embedding, tokens, axis=0).astype(cfg.dtype)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        if token_valid is None:
            token_valid = jnp.ones(tokens.shape, bool)

        kv = None if cache is None else layer_entries(cache)
        # Per-layer weights index a per-layer cache (`per_layer_cache`) with Python ints. They are
        # the decode layout (`sampler.decode_params`): nothing differentiates through them, so
        # they need no remat, whose tracing would turn the index into an array.
        layer = 0 if self.unstacked else jnp.zeros((), jnp.int32)
        block = DecoderLayer
        if cfg.remat != "none" and not self.unstacked:
            block = nn.remat(block, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=False)
        for name, length, moe in layer_stacks(cfg):
            if self.unstacked:
                per_layer = []
                for i in range(length):
                    (x, kv, layer), stats = block(cfg, self.cache_window, moe, name=f"{name}_{i}")(
                        (x, kv, layer), positions, mask, cache_index, token_valid)
                    per_layer.append(stats)
                if moe:
                    self.sow("intermediates", "router_stats",
                             jax.tree.map(lambda *s: jnp.stack(s), *per_layer))
                continue
            stack = nn.scan(
                block, variable_axes={"params": 0},
                split_rngs={"params": True, lora.DROPOUT_RNG: True},
                in_axes=(nn.broadcast,) * 4, length=length,
                metadata_params={nn.PARTITION_NAME: "layers"})
            (x, kv, layer), stats = stack(cfg, self.cache_window, moe, name=name)(
                (x, kv, layer), positions, mask, cache_index, token_valid)
            if moe:
                self.sow("intermediates", "router_stats", stats)
        # Trainers that only score the completion skip the vocabulary projection of the prompt.
        x = RMSNorm(cfg.norm_eps, cfg.param_dtype, name="final_norm")(x[:, logits_start:])

        if cfg.tie_embeddings:
            head = embedding.T
        else:
            head = annotated_param(self, "lm_head", (cfg.embed_dim, cfg.vocab_size),
                                   ("embed", "vocab"), cfg.param_dtype)
        if return_hidden:
            return x, kv
        logits = head_logits(x, head.astype(cfg.dtype))
        logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
        return logits, kv


def unstack_layers(config: ModelConfig, params, take=lambda x, i: x[i]) -> dict:
    """params with each scanned stack [L, ...] split into L per-layer trees ("layers_0", ...);
    take(leaf, i) gives layer i of a stacked leaf (default: x[i]; a tree of shardings passes
    one that drops the layer axis).

    `forward` takes either form. The sampler's decode loop uses this one: inside a loop over
    stacked layers XLA:CPU copies every layer's weights out of the stack at every step (a
    dynamic slice feeding a library matmul is materialised), doubling the weight traffic that
    bounds decoding; per-layer buffers are read in place.
    """
    out = {name: value for name, value in params.items()
           if name not in {stack for stack, _, _ in layer_stacks(config)}}
    for name, length, _ in layer_stacks(config):
        for i in range(length):
            out[f"{name}_{i}"] = jax.tree.map(lambda x, i=i: take(x, i), params[name])
    return out


def is_unstacked(config: ModelConfig, params) -> bool:
    """Whether params come from `unstack_layers` (per-layer trees) rather than stacks."""
    return f"{layer_stacks(config)[0][0]}_0" in params


def attention_mask(segment_ids: jax.Array) -> jax.Array:
    """bool[B, T, T]: causal, within a segment, never onto padding (segment id 0).

    segment_ids: int32[B, T]; packed rows number their examples 1, 2, ...
    """
    t = segment_ids.shape[1]
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return causal[None] & same & (segment_ids[:, None, :] != 0)


def layer_entries(cache: dict) -> dict:
    """The per-layer entries [L, B, ...] of a cache from `init_cache` (k and v, or MLA's latent
    and k_rope), without the rows' valid and index."""
    return {name: value for name, value in cache.items() if name not in ("valid", "index")}


def is_per_layer(cache: dict) -> bool:
    """Whether a cache is in `per_layer_cache`'s layout rather than stacked."""
    return any(isinstance(value, tuple) for value in layer_entries(cache).values())


def per_layer_cache(cache: dict, width: int) -> dict:
    """The cache in the CPU decode layout: each per-layer entry a tuple of L arrays
    [B, width, K * D] (heads side by side: see `attention.read_layer`), `valid` bool[B, width];
    columns past the old width are empty, and columns past `width` are dropped (the caller knows
    no token there is needed).

    XLA:CPU copies a layer out of a stacked cache, and a window out of a layer, before the
    attention matmuls, at every decoding step; arrays of exactly the window's width are read in
    place. Accepts a stacked cache (`init_cache`) or one already per layer (widening it).
    """
    def fit(x):  # [B, S, ...] -> [B, width, ...]
        if x.shape[1] >= width:
            return x[:, :width]
        return jnp.pad(x, [(0, 0), (0, width - x.shape[1])] + [(0, 0)] * (x.ndim - 2))

    entries = {name: tuple(fit(layer).reshape(layer.shape[0], width, -1) for layer in value)
               for name, value in layer_entries(cache).items()}
    return {**cache, **entries, "valid": fit(cache["valid"])}


def init_cache(config: ModelConfig, batch_size: int, max_len: int,
               dtype: Optional[str] = None) -> dict:
    """An empty cache of `max_len` slots per sequence, in the compute dtype unless `dtype` says.

    Dense attention caches keys and values; Multi-head Latent Attention its latent and shared
    RoPE key, as one "kv head" each (so every per-layer entry follows CACHE_AXES).
    """
    lead = (config.num_layers, batch_size, max_len)
    if config.mla is None:
        shapes = {"k": (config.num_kv_heads, config.head_dim),
                  "v": (config.num_kv_heads, config.head_dim)}
    else:
        shapes = {"latent": (1, config.mla.kv_lora_rank), "k_rope": (1, config.mla.qk_rope_head_dim)}
    dtype = dtype or config.dtype
    return {**{name: jnp.zeros(lead + shape, dtype) for name, shape in shapes.items()},
            "valid": jnp.zeros((batch_size, max_len), bool), "index": jnp.zeros((), jnp.int32)}


def cached_attention_mask(cache: dict, new_valid: jax.Array,
                          window: Optional[int] = None) -> tuple[jax.Array, jax.Array]:
    """The mask for T new tokens written at cache["index"], and the cache's updated `valid`.

    new_valid: bool[B, T], False for padding. cache["index"]: int32[] shared by the batch, or
    int32[B] per row (continuous batching). Returns (bool[B, T, W], bool[B, S]): the mask over
    the first W = window (default S) slots, and the validity of all S.
    """
    b, t = new_valid.shape
    index = cache["index"]
    if index.ndim == 0:
        valid = jax.lax.dynamic_update_slice_in_dim(cache["valid"], new_valid, index, axis=1)
        query_slots = (index + jnp.arange(t))[None]  # [1, T]
    else:
        query_slots = index[:, None] + jnp.arange(t)  # [B, T]
        valid = cache["valid"].at[jnp.arange(b)[:, None], query_slots].set(new_valid, mode="drop")
    slots = jnp.arange(window or valid.shape[1])
    causal = slots[None, None, :] <= query_slots[:, :, None]  # [1 or B, T, W]
    return causal & valid[:, None, :len(slots)], valid


def _apply(config: ModelConfig, params, tokens, positions, segment_ids, cache, logits_start,
           cache_window, collect_router_stats: bool, return_hidden: bool = False,
           dropout_rng: Optional[jax.Array] = None):
    """(logits, new cache or None, router stats or None): see `forward`."""
    if segment_ids is None:
        segment_ids = jnp.ones(tokens.shape, jnp.int32)
    check_attention_backend(config)
    model = Transformer(config, cache_window, unstacked=is_unstacked(config, params))
    mutable = ["intermediates"] if collect_router_stats else False
    rngs = {} if dropout_rng is None else {lora.DROPOUT_RNG: dropout_rng}
    if cache is None:
        # The splash kernel builds its causal, per-segment mask itself from the segment ids.
        mask = segment_ids if config.attention_impl == "splash" else attention_mask(segment_ids)
        out = model.apply({"params": params}, tokens, positions, mask,
                          logits_start=logits_start, token_valid=segment_ids != 0,
                          return_hidden=return_hidden, mutable=mutable, rngs=rngs)
    else:
        mask, valid = cached_attention_mask(cache, segment_ids != 0, cache_window)
        out = model.apply({"params": params}, tokens, positions, mask, cache, cache["index"],
                          logits_start, segment_ids != 0, return_hidden, mutable=mutable,
                          rngs=rngs)
    (logits, kv), variables = out if collect_router_stats else (out, {})
    stats = variables.get("intermediates", {}).get("router_stats", (None,))[0]
    if cache is None:
        return logits, None, stats
    return logits, {**kv, "valid": valid, "index": cache["index"] + tokens.shape[1]}, stats


def forward(config: ModelConfig, params, tokens: jax.Array, positions: jax.Array,
            segment_ids: Optional[jax.Array] = None, cache: Optional[dict] = None,
            logits_start: int = 0, cache_window: Optional[int] = None,
            return_hidden: bool = False):
    """The model as a pure function.

    Args:
      tokens, positions: int32[B, T].
      segment_ids: int32[B, T], 0 for padding; None means one unpadded segment per row.
      cache: from `init_cache`; the T tokens are written at cache["index"] and attend to
        every valid earlier slot. The index is int32[] (the batch shares it) or int32[B]
        (one per row: rows at different points of their sequences, as in continuous batching).
      logits_start: static; logits are computed for positions logits_start.. only.
      cache_window: static; attention reads only the cache's first cache_window slots, which
        must hold every token written so far and the T new ones (index + T <= cache_window).
        Decoding early in a long budget then skips the empty slots' work and memory reads.
      return_hidden: static; return the final normed hidden states [B, T - logits_start, E] in
        place of the logits, for losses that project them onto the vocabulary chunk by chunk
        (`losses.logprobs.chunked_logprobs` with `output_head(config, params)`) and for a reward
        model's scalar head.
    Returns:
      (logits float32[B, T - logits_start, V], new cache or None).
    """
    logits, cache, _ = _apply(config, params, tokens, positions, segment_ids, cache, logits_start,
                              cache_window, collect_router_stats=False,
                              return_hidden=return_hidden)
    return logits, cache


def forward_with_router_stats(config: ModelConfig, params, tokens: jax.Array,
                              positions: jax.Array, segment_ids: Optional[jax.Array] = None,
                              logits_start: int = 0, dropout_rng: Optional[jax.Array] = None,
                              return_hidden: bool = False):
    """`forward` without a cache, also returning the MoE layers' `moe.RouterStats`.

    Returns (logits, stats): stats' fields are stacked over the MoE layers ([L_moe, X] loads,
    [L_moe] max violations and drop fractions), padding excluded; None for a model without MoE.
    dropout_rng: switches the LoRA adapters' dropout on (config.lora.dropout; training only).
    return_hidden: the final normed hidden states in place of the logits (as `forward`'s).
    """
    logits, _, stats = _apply(config, params, tokens, positions, segment_ids, None, logits_start,
                              None, collect_router_stats=True, return_hidden=return_hidden,
                              dropout_rng=dropout_rng)
    return logits, stats


_ATTENTION_BACKENDS = {"cudnn": "gpu", "splash": "tpu"}


def check_attention_backend(config: ModelConfig) -> None:
    """Raises ValueError when config.attention_impl cannot run on JAX's default backend."""
    needed = _ATTENTION_BACKENDS.get(config.attention_impl)
    backend = jax.default_backend()
    if needed is not None and backend != needed:
        raise ValueError(f"model.attention_impl={config.attention_impl!r} needs a {needed.upper()} "
                         f"backend, but JAX runs on {backend!r}; use attention_impl='xla' there.")


def logits(config: ModelConfig, params, tokens: jax.Array) -> jax.Array:
    """float32[B, T, V] logits of unpadded int32[B, T] tokens (positions 0..T-1)."""
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    return forward(config, params, tokens, positions)[0]


def _init_config(config: ModelConfig) -> ModelConfig:
    """The config parameters are created with: the attention kernel does not change them, and
    initialising through XLA's einsums works on any backend."""
    return config.replace(attention_impl="xla")


def abstract_params(config: ModelConfig):
    """Boxed (logically partitioned) parameter shapes, without allocating anything."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    mask = jnp.ones((1, 1, 1), bool)
    return jax.eval_shape(
        lambda: Transformer(_init_config(config)).init(jax.random.key(0), tokens, tokens,
                                                       mask)["params"])


@functools.partial(jax.jit, static_argnums=0)
def init_params(config: ModelConfig, rng: jax.Array):
    """Randomly initialised parameters (unboxed plain arrays), compiled: one XLA program
    instead of hundreds of eagerly dispatched initialisers."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    mask = jnp.ones((1, 1, 1), bool)
    boxed = Transformer(_init_config(config)).init(rng, tokens, tokens, mask)["params"]
    return nn.meta.unbox(boxed)


def logical_axes(config: ModelConfig):
    """A pytree like params whose leaves are tuples of logical axis names."""
    return nn.get_partition_spec(abstract_params(config))
