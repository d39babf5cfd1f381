"""Model configurations: one frozen dataclass covering the Llama, Qwen2 and Qwen3 families, and
DeepSeek-V3 (Multi-head Latent Attention + DeepSeekMoE) and Qwen3-MoE through its `mla` / `moe` parts.

Presets are functions of nothing, so `preset("qwen2_5_1_5b")` always means the same shape. The
`architecture` field names the Hugging Face family the weights come from and go back to.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Union

import jax.numpy as jnp

ARCHITECTURES = ("llama", "qwen2", "qwen3", "deepseek_v3", "qwen3_moe")


def unsupported_architecture(name) -> ValueError:
    """The error for an architecture r1jax does not implement, listing those it does."""
    return ValueError(f"Unsupported architecture {name!r}; supported: {', '.join(ARCHITECTURES)}.")


MOE_SCORING = ("sigmoid", "softmax")
MOE_DISPATCH = ("dropless", "capacity", "all_to_all")
REMAT_POLICIES = ("none", "dots", "full")
ATTENTION_IMPLS = ("xla", "cudnn", "splash")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency-dependent RoPE scaling (HF `rope_type: llama3`)."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class YarnScaling:
    """YaRN RoPE scaling (HF `rope_type: yarn`), with DeepSeek's mscale attention correction.

    Field names and defaults follow HF's `rope_parameters`; None means "not given", which HF
    treats differently from any value (see `rope_attention_factor`).
    """

    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: Optional[float] = None
    mscale_all_dim: Optional[float] = None
    attention_factor: Optional[float] = None
    truncate: bool = True

    def rope_attention_factor(self) -> float:
        """The factor YaRN multiplies cos and sin by (so the rotated parts of q and k)."""
        if self.attention_factor is not None:
            return self.attention_factor
        if self.mscale and self.mscale_all_dim:
            return yarn_mscale(self.factor, self.mscale) / yarn_mscale(self.factor,
                                                                       self.mscale_all_dim)
        return yarn_mscale(self.factor)

    def softmax_scale_factor(self) -> float:
        """DeepSeek's MLA multiplies its softmax scale by mscale(factor, mscale_all_dim)^2."""
        if not self.mscale_all_dim:
            return 1.0
        return yarn_mscale(self.factor, self.mscale_all_dim) ** 2


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature correction 0.1 * mscale * ln(factor) + 1 (1 when factor <= 1)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


@dataclasses.dataclass(frozen=True)
class MLAConfig:
    """Multi-head Latent Attention (DeepSeek-V2/V3) shapes.

    Queries: x -> [q_lora_rank] -> RMSNorm -> heads x (qk_nope_head_dim + qk_rope_head_dim), or one
    projection when q_lora_rank is None. Keys/values: x -> [kv_lora_rank] latent (RMSNorm) plus one
    qk_rope_head_dim RoPE key shared by all heads; the latent expands to per-head non-RoPE keys
    (qk_nope_head_dim) and values (v_head_dim). A decoding cache keeps only the latent and the
    shared RoPE key: kv_lora_rank + qk_rope_head_dim numbers per token and layer.
    """

    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    q_lora_rank: Optional[int] = None

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


@dataclasses.dataclass(frozen=True)
class MoEConfig:
    """A routed mixture of SwiGLU experts, plus optional always-on shared experts.

    Attributes:
        num_experts, experts_per_token: routed experts and how many each token uses (top-k).
        expert_mlp_dim: hidden width of one expert (HF moe_intermediate_size).
        num_shared_experts: shared experts, fused into one MLP of num_shared * expert_mlp_dim.
        scoring: "sigmoid" (DeepSeek-V3) or "softmax" (Qwen3-MoE, DeepSeek-V2) router scores.
        score_bias: DeepSeek-V3's aux-loss-free balancing bias (HF e_score_correction_bias), added
            to the scores for choosing experts only, never to the weights; updated outside the
            gradient by `moe.update_score_bias`.
        num_groups, topk_groups: group-limited routing: experts come from the topk_groups groups
            (of num_experts / num_groups) whose two best scores sum highest (1, 1: no limit).
        norm_topk_prob: the chosen experts' weights are renormalised to sum to 1.
        routed_scaling_factor: multiplies the routed experts' weights.
        first_dense_layers: the first layers use a dense MLP of ModelConfig.mlp_dim instead
            (DeepSeek's first_k_dense_replace).
        dispatch: "dropless" (tokens sorted by expert, grouped matmul), "capacity" (each expert
            takes at most capacity_factor * its fair share of tokens; the rest are dropped) or
            "all_to_all" (capacity buffers exchanged between the devices of the mesh's `expert`
            axis; capacity per sending device). See `r1jax.models.dispatch`.
    """

    num_experts: int
    experts_per_token: int
    expert_mlp_dim: int
    num_shared_experts: int = 0
    scoring: str = "softmax"
    score_bias: bool = False
    num_groups: int = 1
    topk_groups: int = 1
    norm_topk_prob: bool = False
    routed_scaling_factor: float = 1.0
    first_dense_layers: int = 0
    dispatch: str = "dropless"
    capacity_factor: float = 1.25

    def __post_init__(self):
        if self.scoring not in MOE_SCORING:
            raise ValueError(f"Unsupported MoE scoring function {self.scoring!r}; supported: "
                             f"{', '.join(MOE_SCORING)}.")
        if self.dispatch not in MOE_DISPATCH:
            raise ValueError(f"Unsupported MoE dispatch {self.dispatch!r}; supported: "
                             f"{', '.join(MOE_DISPATCH)}.")
        if self.num_experts % self.num_groups or not 1 <= self.topk_groups <= self.num_groups:
            raise ValueError(f"num_groups={self.num_groups} must divide num_experts="
                             f"{self.num_experts} and topk_groups={self.topk_groups} lie in "
                             f"[1, num_groups].")
        per_group = self.num_experts // self.num_groups
        if self.num_groups > 1 and per_group < 2:
            raise ValueError(f"Group-limited routing ranks groups by their two best experts; "
                             f"num_experts / num_groups = {per_group} < 2.")
        if not 1 <= self.experts_per_token <= self.topk_groups * per_group:
            raise ValueError(f"experts_per_token={self.experts_per_token} must lie in [1, "
                             f"topk_groups * num_experts / num_groups = "
                             f"{self.topk_groups * per_group}].")


LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters (LoRA, Hu et al. 2021) on a dense model's projections.

    A targeted weight W [in, out] computes x·W + dropout(x)·A·B·(alpha / rank), with A [in, rank]
    and B [rank, out] (B starts at zero, so an untrained adapter changes nothing). See lora.py.

    Attributes:
        rank, alpha: the adapters' rank and scale numerator (PEFT's r and lora_alpha).
        targets: which projections get adapters, from LORA_TARGETS (q/k/v/o attention, the
            gate/up/down MLP).
        dropout: dropout on the adapters' input while training (0 where the policy samples).
    """

    rank: int
    alpha: float
    targets: tuple[str, ...] = LORA_TARGETS
    dropout: float = 0.0

    def __post_init__(self):
        unknown = sorted(set(self.targets) - set(LORA_TARGETS))
        if self.rank < 1 or not self.targets or unknown:
            raise ValueError(f"LoraConfig(rank={self.rank}, targets={self.targets}): expected "
                             f"rank >= 1 and targets from {LORA_TARGETS}.")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a decoder-only transformer.

    Attributes:
        architecture: one of ARCHITECTURES; selects Qwen2's qkv bias and Qwen3's q/k norm by default.
        vocab_size, num_layers, embed_dim, mlp_dim, num_heads, num_kv_heads, head_dim: shapes.
        rope_theta, rope_scaling: rotary embedding base and optional llama3 or YaRN scaling.
        norm_eps: RMSNorm epsilon.
        qkv_bias: bias on the q/k/v projections (Qwen2).
        qk_norm: RMSNorm over head_dim on queries and keys before RoPE (Qwen3).
        tie_embeddings: the output projection is the transposed input embedding.
        max_seq_len: longest sequence (prompt + completion) the model serves.
        param_dtype: dtype parameters are created and stored in ("float32" for training masters).
        dtype: compute dtype of activations and matmuls ("bfloat16" on accelerators).
        mla: Multi-head Latent Attention shapes (deepseek_v3); num_kv_heads and head_dim are then
            unused (set them to num_heads and qk_head_dim).
        moe: mixture-of-experts MLP (deepseek_v3, qwen3_moe); mlp_dim is the dense layers' width.
        lora: low-rank adapters on the dense projections, or None (see LoraConfig).
        remat: what the layer scan keeps for the backward pass: "none" (everything), "dots"
            (the weight matmuls' outputs; attention and the rest are recomputed) or "full"
            (only each layer's input; the whole layer is recomputed).
        attention_impl: "xla" (einsums, the reference; any backend), "cudnn"
            (jax.nn.dot_product_attention's cuDNN kernel; GPU only) or "splash" (the Pallas
            TPU kernel, for uncached forward passes; TPU only).
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
    rope_scaling: Optional[Union[RopeScaling, YarnScaling]] = None
    norm_eps: float = 1e-6
    qkv_bias: bool = False
    qk_norm: bool = False
    tie_embeddings: bool = False
    max_seq_len: int = 2048
    param_dtype: str = "float32"
    dtype: str = "float32"
    mla: Optional[MLAConfig] = None
    moe: Optional[MoEConfig] = None
    lora: Optional[LoraConfig] = None
    remat: str = "none"
    attention_impl: str = "xla"

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise unsupported_architecture(self.architecture)
        needs = {"deepseek_v3": ("mla", "moe"), "qwen3_moe": ("moe",)}.get(self.architecture, ())
        for part in ("mla", "moe"):
            if (getattr(self, part) is not None) != (part in needs):
                raise ValueError(f"architecture={self.architecture!r} "
                                 f"{'needs' if part in needs else 'cannot have'} `{part}`.")
        if self.moe is not None and self.moe.first_dense_layers > self.num_layers:
            raise ValueError(f"moe.first_dense_layers={self.moe.first_dense_layers} exceeds "
                             f"num_layers={self.num_layers}.")
        if self.lora is not None and (self.mla is not None or self.moe is not None):
            raise ValueError(f"model.lora: adapters cover dense attention and MLPs only, not "
                             f"architecture={self.architecture!r} (latent attention / experts).")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                    f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}.")
        for name, allowed in (("remat", REMAT_POLICIES), ("attention_impl", ATTENTION_IMPLS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.{name}={getattr(self, name)!r}; allowed: "
                                 f"{', '.join(allowed)}.")
        for name in ("param_dtype", "dtype"):
            jnp.dtype(getattr(self, name))  # Fails early on a typo such as "bf16".

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    @property
    def num_params(self) -> int:
        """Parameter count (embedding counted once when tied; DeepSeek's MTP module excluded)."""
        return self._count_params(routed_experts=None if self.moe is None else self.moe.num_experts)

    @property
    def num_active_params(self) -> int:
        """Parameters one token runs through: of the routed experts only experts_per_token."""
        return self._count_params(
                routed_experts=None if self.moe is None else self.moe.experts_per_token)

    def _attention_params(self) -> int:
        d, h = self.embed_dim, self.num_heads
        if self.mla is not None:
            m = self.mla
            q = (d * h * m.qk_head_dim if m.q_lora_rank is None
                 else d * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * h * m.qk_head_dim)
            kv = (d * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
                  + m.kv_lora_rank * h * (m.qk_nope_head_dim + m.v_head_dim))
            return q + kv + h * m.v_head_dim * d
        k, hd = self.num_kv_heads, self.head_dim
        attn = d * hd * (h + 2 * k) + h * hd * d + (hd * (h + 2 * k) if self.qkv_bias else 0)
        return attn + (2 * hd if self.qk_norm else 0)

    def _count_params(self, routed_experts: Optional[int]) -> int:
        d = self.embed_dim
        dense_layers, moe_layers = self.num_layers, 0
        per_moe_layer = 0
        if self.moe is not None:
            m = self.moe
            dense_layers, moe_layers = m.first_dense_layers, self.num_layers - m.first_dense_layers
            per_moe_layer = (d * m.num_experts + (m.num_experts if m.score_bias else 0)
                             + 3 * d * m.expert_mlp_dim * (routed_experts + m.num_shared_experts))
        per_layer = self._attention_params() + 2 * d
        layers = (self.num_layers * per_layer + dense_layers * 3 * d * self.mlp_dim
                  + moe_layers * per_moe_layer)
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return layers + self.vocab_size * d + head + d


def _tiny(architecture: str, **overrides) -> ModelConfig:
    base = dict(
            architecture=architecture, vocab_size=256, num_layers=2, embed_dim=64, mlp_dim=128,
            num_heads=4, num_kv_heads=2, head_dim=16, max_seq_len=256,
            qkv_bias=architecture == "qwen2", qk_norm=architecture in ("qwen3", "qwen3_moe"))
    base.update(overrides)
    return ModelConfig(**base)


def _tiny_deepseek_v3(**overrides) -> ModelConfig:
    """Every DeepSeek-V3 feature on: q LoRA, YaRN, group-limited sigmoid routing with a bias,
    shared experts, a dense first layer."""
    mla = MLAConfig(kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                    q_lora_rank=48)
    moe = MoEConfig(num_experts=8, experts_per_token=2, expert_mlp_dim=32, num_shared_experts=1,
                    scoring="sigmoid", score_bias=True, num_groups=4, topk_groups=2,
                    norm_topk_prob=True, routed_scaling_factor=2.5, first_dense_layers=1)
    yarn = YarnScaling(factor=4.0, original_max_position_embeddings=64, mscale=1.0,
                       mscale_all_dim=1.0)
    return _tiny("deepseek_v3", num_layers=3, num_kv_heads=4, head_dim=mla.qk_head_dim,
                 rope_scaling=yarn, mla=mla, moe=moe, **overrides)


PRESETS = {
        # Tiny shapes for tests: seconds to compile on a CPU.
        "tiny_llama": lambda: _tiny("llama"),
        "tiny_llama3": lambda: _tiny(
                "llama", rope_theta=500_000.0, tie_embeddings=True,
                rope_scaling=RopeScaling(factor=8.0, original_max_position_embeddings=64)),
        "tiny_qwen2": lambda: _tiny("qwen2", tie_embeddings=True),
        "tiny_qwen3": lambda: _tiny("qwen3"),
        "tiny_deepseek_v3": _tiny_deepseek_v3,
        "tiny_qwen3_moe": lambda: _tiny("qwen3_moe", num_layers=3, moe=MoEConfig(
                num_experts=8, experts_per_token=2, expert_mlp_dim=32, norm_topk_prob=True)),
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
        # DeepSeek-V3 / R1 (671B total, 37B active; the 14B multi-token-prediction module is not
        # part of the model: post-training does not use it).
        "deepseek_v3_671b": lambda: ModelConfig(
                architecture="deepseek_v3", vocab_size=129280, num_layers=61, embed_dim=7168,
                mlp_dim=18432, num_heads=128, num_kv_heads=128, head_dim=192,
                rope_scaling=YarnScaling(factor=40.0, original_max_position_embeddings=4096,
                                         mscale=1.0, mscale_all_dim=1.0),
                max_seq_len=163840, mla=MLAConfig(kv_lora_rank=512, qk_nope_head_dim=128,
                                                  qk_rope_head_dim=64, v_head_dim=128,
                                                  q_lora_rank=1536),
                moe=MoEConfig(num_experts=256, experts_per_token=8, expert_mlp_dim=2048,
                              num_shared_experts=1, scoring="sigmoid", score_bias=True,
                              num_groups=8, topk_groups=4, norm_topk_prob=True,
                              routed_scaling_factor=2.5, first_dense_layers=3)),
        # Moonlight-16B-A3B: DeepSeek-V3's architecture at DeepSeek-V2-Lite's shape (16B, 3B active).
        "moonlight_16b_a3b": lambda: ModelConfig(
                architecture="deepseek_v3", vocab_size=163840, num_layers=27, embed_dim=2048,
                mlp_dim=11264, num_heads=16, num_kv_heads=16, head_dim=192, rope_theta=50_000.0,
                norm_eps=1e-5, max_seq_len=8192,
                mla=MLAConfig(kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
                              v_head_dim=128),
                moe=MoEConfig(num_experts=64, experts_per_token=6, expert_mlp_dim=1408,
                              num_shared_experts=2, scoring="sigmoid", score_bias=True,
                              norm_topk_prob=True, routed_scaling_factor=2.446,
                              first_dense_layers=1)),
        # DeepSeek-V2-Lite's shape and softmax routing (15.7B; its HF deepseek_v2 checkpoints are
        # not read by the converter: a shape for pod configs).
        "deepseek_v2_lite": lambda: PRESETS["moonlight_16b_a3b"]().replace(
                vocab_size=102400, mlp_dim=10944, rope_theta=10_000.0, norm_eps=1e-6,
                max_seq_len=163840,
                rope_scaling=YarnScaling(factor=40.0, original_max_position_embeddings=4096,
                                         mscale=0.707, mscale_all_dim=0.707),
                moe=MoEConfig(num_experts=64, experts_per_token=6,
                                                  expert_mlp_dim=1408, num_shared_experts=2,
                                                  first_dense_layers=1)),
        "qwen3_30b_a3b": lambda: ModelConfig(
                architecture="qwen3_moe", vocab_size=151936, num_layers=48, embed_dim=2048,
                mlp_dim=6144, num_heads=32, num_kv_heads=4, head_dim=128, rope_theta=1_000_000.0,
                qk_norm=True, max_seq_len=40960,
                moe=MoEConfig(num_experts=128, experts_per_token=8, expert_mlp_dim=768,
                              norm_topk_prob=True)),
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
