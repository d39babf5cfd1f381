"""A reward model: a transformer backbone and a scalar head on the last token's hidden state.

    params = {"backbone": the policy's params tree, "head": {"kernel": [E, 1], "bias": [1]}}

The head reads the final (normed) hidden state of each sequence's last real token, the one that
has attended to the whole prompt and response, as Hugging Face's *ForSequenceClassification
models do. Sequences are right-padded; `lengths` says where each ends.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from r1jax import sharding
from r1jax.models import transformer
from r1jax.models.config import ModelConfig

HEAD_AXES = {"kernel": PartitionSpec("embed", None), "bias": PartitionSpec(None)}


def head_shapes(config: ModelConfig) -> dict:
    return {"kernel": jax.ShapeDtypeStruct((config.embed_dim, 1), jnp.dtype(config.param_dtype)),
            "bias": jax.ShapeDtypeStruct((1,), jnp.dtype(config.param_dtype))}


def abstract_params(config: ModelConfig) -> dict:
    """jax.ShapeDtypeStruct tree of the reward model's params (checkpoint restore's target)."""
    import flax.linen as nn
    return {"backbone": nn.meta.unbox(transformer.abstract_params(config)),
            "head": head_shapes(config)}


def init_head(config: ModelConfig, seed: int) -> dict:
    """A head whose initial rewards are small (std ≈ 1/sqrt(E) of a unit-RMS hidden state)."""
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0.0, 1.0 / config.embed_dim, (config.embed_dim, 1))
    return {"kernel": kernel.astype(config.param_dtype), "bias": np.zeros((1,), config.param_dtype)}


def param_shardings(config: ModelConfig, mesh, rules) -> dict:
    """NamedShardings of the params tree: the backbone's own, the head's from HEAD_AXES."""
    return {"backbone": sharding.param_shardings(config, mesh, rules),
            "head": sharding.logical_to_shardings(HEAD_AXES, mesh, rules, head_shapes(config))}


def shard_params(config: ModelConfig, backbone, head: dict, mesh, rules) -> dict:
    """Places a loaded backbone (numpy or jax) and head onto their shards."""
    heads = param_shardings(config, mesh, rules)["head"]
    return {"backbone": sharding.shard_params(config, backbone, mesh, rules),
            "head": jax.tree.map(lambda x, s: jax.device_put(jnp.asarray(x), s), head, heads)}


def rewards(config: ModelConfig, params: dict, tokens: jax.Array,
            lengths: jax.Array) -> jax.Array:
    """float32[B] rewards of right-padded int32[B, T] tokens whose first lengths[b] are real."""
    t = tokens.shape[1]
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), tokens.shape)
    segment_ids = (positions < lengths[:, None]).astype(jnp.int32)
    hidden, _ = transformer.forward(config, params["backbone"], tokens, positions, segment_ids,
                                    return_hidden=True)
    last = jnp.take_along_axis(hidden, (lengths - 1)[:, None, None], axis=1)[:, 0]
    head = params["head"]
    return (jnp.dot(last.astype(jnp.float32), head["kernel"].astype(jnp.float32))[:, 0]
            + head["bias"].astype(jnp.float32)[0])
