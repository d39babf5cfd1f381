"""Model configurations: one frozen dataclass covering the Llama, Qwen2 and Qwen3 families.

Presets are functions of nothing, so `preset("qwen2_5_1_5b")` always means the same shape. The
`architecture` field names the Hugging Face family the weights come from and go back to.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax.numpy as jnp

ARCHITECTURES = ("llama", "qwen2", "qwen3")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency-dependent RoPE scaling (HF `rope_type: llama3`)."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a decoder-only transformer.

    Attributes:
        architecture: one of ARCHITECTURES; selects Qwen2's qkv bias and Qwen3's q/k norm by default.
        vocab_size, num_layers, embed_dim, mlp_dim, num_heads, num_kv_heads, head_dim: shapes.
        rope_theta, rope_scaling: rotary embedding base and optional llama3 scaling.
        norm_eps: RMSNorm epsilon.
        qkv_bias: bias on the q/k/v projections (Qwen2).
        qk_norm: RMSNorm over head_dim on queries and keys before RoPE (Qwen3).
        tie_embeddings: the output projection is the transposed input embedding.
        max_seq_len: longest sequence (prompt + completion) the model serves.
        param_dtype: dtype parameters are created and stored in ("float32" for training masters).
        dtype: compute dtype of activations and matmuls ("bfloat16" on accelerators).
    """

    architecture: str
    vocab_size: int
    num_layers: int
    embed_dim: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10_000.0
    rope_scaling: Optional[RopeScaling] = None
    norm_eps: float = 1e-6
    qkv_bias: bool = False
    qk_norm: bool = False
    tie_embeddings: bool = False
    max_seq_len: int = 2048
    param_dtype: str = "float32"
    dtype: str = "float32"

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                    f"Unsupported architecture {self.architecture!r}; supported: {', '.join(ARCHITECTURES)}.")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                    f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}.")
        for name in ("param_dtype", "dtype"):
            jnp.dtype(getattr(self, name))  # Fails early on a typo such as "bf16".

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    @property
    def num_params(self) -> int:
        """Parameter count (embedding counted once when tied)."""
        d, h, k, hd, f = self.embed_dim, self.num_heads, self.num_kv_heads, self.head_dim, self.mlp_dim
        attn = d * hd * (h + 2 * k) + h * hd * d + (hd * (h + 2 * k) if self.qkv_bias else 0)
        attn += 2 * hd if self.qk_norm else 0
        layer = attn + 3 * d * f + 2 * d
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return self.num_layers * layer + self.vocab_size * d + head + d


def _tiny(architecture: str, **overrides) -> ModelConfig:
    base = dict(
            architecture=architecture, vocab_size=256, num_layers=2, embed_dim=64, mlp_dim=128,
            num_heads=4, num_kv_heads=2, head_dim=16, max_seq_len=256,
            qkv_bias=architecture == "qwen2", qk_norm=architecture == "qwen3")
    base.update(overrides)
    return ModelConfig(**base)


PRESETS = {
        # Tiny shapes for tests: seconds to compile on a CPU.
        "tiny_llama": lambda: _tiny("llama"),
        "tiny_llama3": lambda: _tiny(
                "llama", rope_theta=500_000.0, tie_embeddings=True,
                rope_scaling=RopeScaling(factor=8.0, original_max_position_embeddings=64)),
        "tiny_qwen2": lambda: _tiny("qwen2", tie_embeddings=True),
        "tiny_qwen3": lambda: _tiny("qwen3"),
        "smollm2_135m": lambda: ModelConfig(
                architecture="llama", vocab_size=49152, num_layers=30, embed_dim=576, mlp_dim=1536,
                num_heads=9, num_kv_heads=3, head_dim=64, rope_theta=100_000.0, norm_eps=1e-5,
                tie_embeddings=True, max_seq_len=8192),
        "qwen2_5_0_5b": lambda: ModelConfig(
                architecture="qwen2", vocab_size=151936, num_layers=24, embed_dim=896, mlp_dim=4864,
                num_heads=14, num_kv_heads=2, head_dim=64, rope_theta=1_000_000.0, qkv_bias=True,
                tie_embeddings=True, max_seq_len=32768),
        "qwen2_5_1_5b": lambda: ModelConfig(
                architecture="qwen2", vocab_size=151936, num_layers=28, embed_dim=1536, mlp_dim=8960,
                num_heads=12, num_kv_heads=2, head_dim=128, rope_theta=1_000_000.0, qkv_bias=True,
                tie_embeddings=True, max_seq_len=32768),
        "qwen2_5_7b": lambda: ModelConfig(
                architecture="qwen2", vocab_size=152064, num_layers=28, embed_dim=3584, mlp_dim=18944,
                num_heads=28, num_kv_heads=4, head_dim=128, rope_theta=1_000_000.0, qkv_bias=True,
                max_seq_len=32768),
        "qwen3_0_6b": lambda: ModelConfig(
                architecture="qwen3", vocab_size=151936, num_layers=28, embed_dim=1024, mlp_dim=3072,
                num_heads=16, num_kv_heads=8, head_dim=128, rope_theta=1_000_000.0, qk_norm=True,
                tie_embeddings=True, max_seq_len=40960),
        "llama3_8b": lambda: ModelConfig(
                architecture="llama", vocab_size=128256, num_layers=32, embed_dim=4096, mlp_dim=14336,
                num_heads=32, num_kv_heads=8, head_dim=128, rope_theta=500_000.0, norm_eps=1e-5,
                rope_scaling=RopeScaling(), max_seq_len=131072),
}


def preset(name: str, **overrides) -> ModelConfig:
    """The preset called `name`, with dataclass fields overridden (e.g. dtype="bfloat16")."""
    if name not in PRESETS:
        raise ValueError(f"Unknown model preset {name!r}; available: {', '.join(sorted(PRESETS))}.")
    return PRESETS[name]().replace(**overrides)
