"""Building blocks: RMSNorm, rotary embeddings, the SwiGLU MLP and a logically-annotated param helper."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.models import lora
from r1jax.models.config import ModelConfig, RopeScaling, YarnScaling


def annotated_param(module: nn.Module, name: str, shape: Sequence[int], axes: Sequence[str],
                                        dtype, init=None) -> jax.Array:
    """Creates a parameter whose logical axis names drive its sharding (see r1jax.sharding)."""
    init = init or nn.initializers.normal(stddev=1.0 / math.sqrt(shape[0]))
    return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape), dtype)


class RMSNorm(nn.Module):
    """x / rms(x) * scale, normalised in float32 as the reference implementations do."""

    eps: float
    param_dtype: str
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = annotated_param(self, "scale", (x.shape[-1],), (self.axis_name,), self.param_dtype,
                                                        nn.initializers.ones)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (normed.astype(x.dtype) * scale.astype(x.dtype))


def rope_inverse_frequencies(head_dim: int, theta: float,
                             scaling: Optional[Union[RopeScaling, YarnScaling]]) -> jax.Array:
    """float32[head_dim // 2] rotation frequencies, with llama3's or YaRN's scaling."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    if scaling is None:
        return inv_freq
    if isinstance(scaling, YarnScaling):
        return _yarn_inverse_frequencies(inv_freq, head_dim, theta, scaling)
    low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
    scaled = jnp.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
            scaling.high_freq_factor - scaling.low_freq_factor)
    interpolated = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    in_band = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return jnp.where(in_band, interpolated, scaled)


def _yarn_inverse_frequencies(inv_freq: jax.Array, dim: int, theta: float,
                              scaling: YarnScaling) -> jax.Array:
    """YaRN: dimensions that turn fewer than beta_slow times over the original context are
    interpolated (divided by factor), more than beta_fast times kept, a linear ramp between."""
    def correction_dim(rotations: float) -> float:
        return (dim * math.log(scaling.original_max_position_embeddings
                               / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = correction_dim(scaling.beta_fast), correction_dim(scaling.beta_slow)
    if scaling.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # As HF: avoids dividing by zero.
    ramp = jnp.clip((jnp.arange(dim // 2, dtype=jnp.float32) - low) / (high - low), 0, 1)
    return inv_freq / scaling.factor * ramp + inv_freq * (1 - ramp)


def rope_attention_factor(scaling: Optional[Union[RopeScaling, YarnScaling]]) -> float:
    """What the rotated parts of q and k are multiplied by (YaRN's cos/sin scaling; else 1)."""
    return scaling.rope_attention_factor() if isinstance(scaling, YarnScaling) else 1.0


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array,
               scale: float = 1.0) -> jax.Array:
    """Rotates x: [B, T, N, head_dim] by positions: int32[B, T] (HF's rotate-half layout).

    scale multiplies cos and sin (YaRN's attention factor; see `rope_attention_factor`).
    """
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, head_dim/2]
    sin = jnp.sin(angles)[:, :, None, :] * scale
    cos = jnp.cos(angles)[:, :, None, :] * scale
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x)); `lora_config` (a dense model's config,
    or None) adds the adapters it targets (see lora.py)."""

    embed_dim: int
    mlp_dim: int
    dtype: str
    param_dtype: str
    lora_config: Optional[ModelConfig] = None

    def _adapted(self, name: str, x: jax.Array, kernel: jax.Array, axes) -> jax.Array:
        """x @ kernel, plus the adapter's term when `name` is targeted."""
        out = x @ kernel.astype(self.dtype)
        cfg = self.lora_config
        if cfg is not None and lora.targeted(cfg, name):
            out = out + lora.delta(self, cfg, name, x, kernel.shape[:1], kernel.shape[1:],
                                   axes[:1], axes[1:])
        return out

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gate = annotated_param(self, "gate", (self.embed_dim, self.mlp_dim), ("embed", "mlp"),
                                                      self.param_dtype)
        up = annotated_param(self, "up", (self.embed_dim, self.mlp_dim), ("embed", "mlp"),
                                                  self.param_dtype)
        down = annotated_param(self, "down", (self.mlp_dim, self.embed_dim), ("mlp", "embed"),
                                                      self.param_dtype)
        x = x.astype(self.dtype)
        hidden = (jax.nn.silu(self._adapted("gate", x, gate, ("embed", "mlp")))
                  * self._adapted("up", x, up, ("embed", "mlp")))
        hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))
        return self._adapted("down", hidden, down, ("mlp", "embed"))
