"""LoRA: low-rank adapters beside a dense model's frozen projections.

A targeted projection W (q/k/v/o attention kernels, gate/up/down MLP kernels) computes

    y = x·W + (dropout(x)·A)·B · alpha / rank        A: [in..., rank], B: [rank, out...]

inside the layer, so training, the sampler and evaluation all run the adapted model from one
params tree without ever materialising W + A·B·scale (`merged` does that for exports only).
The adapters live in that same tree beside their kernel (`layers/attn/q_lora_a`, `.../q_lora_b`,
stacked over layers like every layer weight, with logical axes for sharding); a tree that holds
adapters trains only them (`split`), so the optimizer state, the checkpoints and
π_ref hold the adapters alone while the base comes from model.path at start-up.

A starts as PEFT's (kaiming-uniform: U(±1/sqrt(fan_in))), B at zero: an untrained adapter is
the base model exactly.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from r1jax.models.config import ModelConfig

SUFFIXES = ("_lora_a", "_lora_b")
DROPOUT_RNG = "lora_dropout"  # The rng stream that switches adapter dropout on (training only).
RANK_AXIS = "lora_rank"


def targeted(config: ModelConfig, target: str) -> bool:
    """Whether projection `target` (an entry of config.LORA_TARGETS) carries an adapter."""
    return config.lora is not None and target in config.lora.targets


def delta(module: nn.Module, config: ModelConfig, target: str, x: jax.Array,
          in_shape: Sequence[int], out_shape: Sequence[int], in_axes: Sequence[str],
          out_axes: Sequence[str]) -> jax.Array:
    """The adapter's term (dropout(x)·A)·B·scale [..., *out_shape] for x [..., *in_shape].

    Creates `{target}_lora_a` [*in_shape, rank] and `{target}_lora_b` [rank, *out_shape] in
    `module`, with logical axes (*in_axes, lora_rank) and (lora_rank, *out_axes). Dropout runs
    only when the caller passed a `lora_dropout` rng (the SFT update does; sampling never).
    """
    from r1jax.models.layers import annotated_param  # Lazily: layers.py imports this module.
    lora, n = config.lora, len(in_shape)
    a_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform",
                                              in_axis=tuple(range(n)), out_axis=-1)
    a = annotated_param(module, f"{target}_lora_a", (*in_shape, lora.rank),
                        (*in_axes, RANK_AXIS), config.param_dtype, a_init)
    b = annotated_param(module, f"{target}_lora_b", (lora.rank, *out_shape),
                        (RANK_AXIS, *out_axes), config.param_dtype, nn.initializers.zeros)
    if lora.dropout > 0 and module.has_rng(DROPOUT_RNG):
        keep = jax.random.bernoulli(module.make_rng(DROPOUT_RNG), 1 - lora.dropout, x.shape)
        x = jnp.where(keep, x / (1 - lora.dropout), 0).astype(x.dtype)
    low = jnp.tensordot(x, a.astype(config.dtype), axes=n)  # [..., rank]
    return jnp.tensordot(low, b.astype(config.dtype), axes=1) * jnp.asarray(lora.scale,
                                                                           config.dtype)


# ----------------------------------------------------------------------------- the params tree


def is_adapter(name: str) -> bool:
    return name.endswith(SUFFIXES)


def _partition(tree: dict, keep_adapters: bool) -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            sub = _partition(value, keep_adapters)
            if sub:
                out[key] = sub
        elif is_adapter(key) == keep_adapters:
            out[key] = value
    return out


def adapters(params: dict) -> dict:
    """The adapter leaves of a params tree, nested as in it ({} when it has none)."""
    return _partition(params, keep_adapters=True)


def base(params: dict) -> dict:
    """Everything but the adapters: the base model's params."""
    return _partition(params, keep_adapters=False)


def combine(frozen: dict, trainable: dict) -> dict:
    """The union of two disjoint nested trees (e.g. `base` and `adapters`)."""
    out = dict(frozen)
    for key, value in trainable.items():
        out[key] = combine(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def split(params: dict) -> tuple[dict, dict]:
    """(trainable, frozen): what an update trains, the optimizer holds and a checkpoint keeps,
    and what stays as loaded.

    A model's tree (a dict with `layers`) that holds adapters contributes its adapters to the
    trainable part and its base to the frozen one; every other leaf trains, so a tree holding
    an adapted policy beside other weights (a value or reward head) trains those too. A tree
    without adapters is all trainable: (params, {}).
    """
    if not adapters(params):
        return params, {}
    if "layers" in params:
        return adapters(params), base(params)
    trainable, frozen = {}, {}
    for key, value in params.items():
        if isinstance(value, dict):
            value, still = split(value)
            if still:
                frozen[key] = still
        if not isinstance(value, dict) or value:
            trainable[key] = value
    return trainable, frozen


def trainable(params: dict) -> dict:
    """The trainable part of a params tree (see `split`): all of it without adapters."""
    return split(params)[0]


def frozen(params: dict) -> dict:
    """The frozen part of a params tree (see `split`): {} without adapters."""
    return split(params)[1]


def with_base_dtype(params: dict, dtype: str) -> dict:
    """The tree with its base (non-adapter) leaves cast to `dtype` (numpy or jax arrays)."""
    cast = jax.tree.map(lambda x: x.astype(jnp.dtype(dtype)), base(params))
    return combine(cast, adapters(params))


# ----------------------------------------------------------------------------- merging


def adapted_kernels(params: dict) -> list[tuple[tuple[str, ...], str]]:
    """(path of the module, target) of every adapted kernel, e.g. (("layers", "attn"), "q")."""
    found = []

    def walk(tree, path):
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, path + (key,))
            elif key.endswith(SUFFIXES[0]):
                found.append((path, key[:-len(SUFFIXES[0])]))

    walk(params, ())
    return found


def kernel_name(target: str) -> str:
    """The params name of target's base weight: attention kernels are `q_kernel` etc."""
    return f"{target}_kernel" if target in ("q", "k", "v", "o") else target


def merged(config: ModelConfig, params: dict) -> tuple[ModelConfig, dict]:
    """(config without lora, params with every W replaced by W + A·B·scale), as numpy float32:
    the plain model an export writes. Layers stay stacked: W [L, *in, *out], A [L, *in, r],
    B [L, r, *out]."""
    host = jax.tree.map(lambda x: np.asarray(x, np.float32), base(params))
    for path, target in adapted_kernels(params):
        module = params
        for key in path:
            module = module[key]
        a = np.asarray(module[f"{target}_lora_a"], np.float32)
        b = np.asarray(module[f"{target}_lora_b"], np.float32)
        dest = host
        for key in path:
            dest = dest[key]
        w = dest[kernel_name(target)]
        layers, rank = a.shape[0], a.shape[-1]
        product = np.matmul(a.reshape(layers, -1, rank), b.reshape(layers, rank, -1))
        dest[kernel_name(target)] = w + config.lora.scale * product.reshape(w.shape)
    return config.replace(lora=None), host


def count(tree: Any) -> int:
    """Number of parameters in a tree."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
