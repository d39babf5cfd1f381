"""Hugging Face DeepseekV3 / Qwen3-MoE safetensors directories <-> r1jax (config, params).

The dense families' converter (convert.py) maps one HF name per layer onto one stacked parameter.
Here a parameter can also stack experts ([L, X, ...] from `mlp.experts.{e}.*`) and the layers
are split over two scanned stacks (`dense_layers`, `layers`; see transformer.layer_stacks), so
the name map lists every HF tensor with the index it fills: `tensor_list(config)`.

DeepSeek specifics:
  * RoPE rows: DeepSeek's checkpoints order each RoPE dimension pair interleaved (x0, x1), (x2,
    x3), ... (HF `rope_interleave: true`); r1jax rotates halves, so those rows of q_b_proj (or
    q_proj) and kv_a_proj_with_mqa are de-interleaved on load and interleaved again on save.
  * FP8 block-quantised checkpoints (the released DeepSeek-V3/R1 weights): a float8_e4m3fn
    `X.weight` with a float32 `X.weight_scale_inv` per 128x128 block is dequantised on load
    (weight * scale, hf_files.SafetensorsSource); saving writes config.param_dtype weights
    without quantization_config.
  * The multi-token-prediction module (num_nextn_predict_layers, stored as layers past
    num_hidden_layers) is not part of the r1jax model: post-training does not use it, so its
    tensors are skipped on load and not written on save.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.models import convert, hf_files
from r1jax.models.config import MLAConfig, ModelConfig, MoEConfig, YarnScaling
from r1jax.models.convert import KEEP, LINEAR, LINEAR_OUT, Layout
from r1jax.models.transformer import layer_stacks

HF_ARCHITECTURES = {"deepseek_v3": "DeepseekV3ForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM"}
# DeepSeek-V3's own config.json names its routing; transformers implements only these.
DEEPSEEK_ROUTING = {"scoring_func": ("sigmoid",), "topk_method": ("noaux_tc",)}


# ------------------------------------------------------------------------ name map

@dataclasses.dataclass(frozen=True)
class InterleavedRope(Layout):
    """A Linear whose output rows end, per group (head), in rope_dim interleaved RoPE rows."""

    groups: int = 1
    rope_dim: int = 0

    def _reorder(self, weight: np.ndarray, to_halves: bool) -> np.ndarray:
        rows = weight.reshape(self.groups, -1, weight.shape[-1])
        rope = rows[:, -self.rope_dim:]
        if to_halves:
            rope = np.concatenate([rope[:, 0::2], rope[:, 1::2]], axis=1)
        else:
            rope = np.stack([rope[:, :self.rope_dim // 2], rope[:, self.rope_dim // 2:]],
                            axis=2).reshape(rope.shape)
        return np.concatenate([rows[:, :-self.rope_dim], rope], axis=1).reshape(weight.shape)

    def to_params(self, tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return super().to_params(self._reorder(tensor, to_halves=True), shape)

    def to_hf(self, param: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self._reorder(super().to_hf(param), to_halves=False))


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One HF tensor: its name, the r1jax parameter it fills and where ((), (layer,) or
    (layer, expert) into the stacked parameter)."""

    hf: str
    path: tuple[str, ...]
    index: tuple[int, ...]
    layout: Layout = KEEP


def _attention_tensors(config: ModelConfig, prefix: str, stack: str, i: int,
                       rope_interleave: bool) -> list[Tensor]:
    attn = f"{prefix}.self_attn"
    entry = lambda hf, name, layout=KEEP: Tensor(f"{attn}.{hf}", (stack, "attn") + name, (i,),
                                                 layout)
    m = config.mla
    if m is None:  # Qwen3-MoE: grouped-query attention with q/k norm.
        return ([entry(f"{p}_proj.weight", (f"{p}_kernel",), LINEAR) for p in "qkv"]
                + [entry("o_proj.weight", ("o_kernel",), LINEAR_OUT)]
                + [entry(f"{p}_norm.weight", (f"{p}_norm", "scale")) for p in "qk"])

    def rope_rows(groups: int) -> Layout:
        return (InterleavedRope(linear_in_axes=1, groups=groups, rope_dim=m.qk_rope_head_dim)
                if rope_interleave else LINEAR)

    if m.q_lora_rank is None:
        q = [entry("q_proj.weight", ("q_kernel",), rope_rows(config.num_heads))]
    else:
        q = [entry("q_a_proj.weight", ("q_a_kernel",), LINEAR),
             entry("q_a_layernorm.weight", ("q_a_norm", "scale")),
             entry("q_b_proj.weight", ("q_b_kernel",), rope_rows(config.num_heads))]
    return q + [entry("kv_a_proj_with_mqa.weight", ("kv_a_kernel",), rope_rows(1)),
                entry("kv_a_layernorm.weight", ("kv_a_norm", "scale")),
                entry("kv_b_proj.weight", ("kv_b_kernel",), LINEAR),
                entry("o_proj.weight", ("o_kernel",), LINEAR_OUT)]


def _mlp_tensors(config: ModelConfig, prefix: str, stack: str, i: int, moe: bool) -> list[Tensor]:
    projections = (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj"))
    if not moe:
        return [Tensor(f"{prefix}.mlp.{hf}.weight", (stack, "mlp", name), (i,), LINEAR)
                for name, hf in projections]
    out = [Tensor(f"{prefix}.mlp.gate.weight", (stack, "mlp", "router_kernel"), (i,), LINEAR)]
    if config.moe.score_bias:
        out.append(Tensor(f"{prefix}.mlp.gate.e_score_correction_bias",
                          (stack, "mlp", "score_bias"), (i,)))
    for e in range(config.moe.num_experts):
        out += [Tensor(f"{prefix}.mlp.experts.{e}.{hf}.weight", (stack, "mlp", name), (i, e),
                       LINEAR) for name, hf in projections]
    if config.moe.num_shared_experts:
        out += [Tensor(f"{prefix}.mlp.shared_experts.{hf}.weight",
                       (stack, "mlp", "shared_experts", name), (i,), LINEAR)
                for name, hf in projections]
    return out


def tensor_list(config: ModelConfig, rope_interleave: bool = True) -> list[Tensor]:
    """Every HF tensor of `config`'s model, in file order (a layer's tensors together)."""
    tensors = [Tensor("model.embed_tokens.weight", ("embedding",), ()),
               Tensor("model.norm.weight", ("final_norm", "scale"), ())]
    layer = 0
    for stack, length, moe in layer_stacks(config):
        for i in range(length):
            prefix = f"model.layers.{layer}"
            tensors += [Tensor(f"{prefix}.input_layernorm.weight", (stack, "attn_norm", "scale"),
                               (i,)),
                        Tensor(f"{prefix}.post_attention_layernorm.weight",
                               (stack, "mlp_norm", "scale"), (i,))]
            tensors += _attention_tensors(config, prefix, stack, i, rope_interleave)
            tensors += _mlp_tensors(config, prefix, stack, i, moe)
            layer += 1
    if not config.tie_embeddings:
        tensors.append(Tensor("lm_head.weight", ("lm_head",), (), LINEAR))
    return tensors


def _dtype(config: ModelConfig, path: tuple[str, ...]):
    # The balancing bias stays float32 (as in DeepSeek's checkpoints): it decides selections.
    return np.float32 if path[-1] == "score_bias" else jnp.dtype(config.param_dtype)


# ------------------------------------------------------------------------ Hugging Face config

def _rope_from_hf(hf: dict):
    """(rope_theta, scaling) of a HF config: YaRN here, default and llama3 in convert.py."""
    rope = {**(hf.get("rope_scaling") or {}), **(hf.get("rope_parameters") or {})}
    if rope.get("rope_type", rope.get("type")) != "yarn":
        return convert._rope_from_hf(hf)
    theta = float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0)))
    original = int(rope["original_max_position_embeddings"])
    factor = rope.get("factor") or hf["max_position_embeddings"] / original
    optional = {key: rope[key] for key in ("mscale", "mscale_all_dim", "attention_factor",
                                           "truncate") if rope.get(key) is not None}
    return theta, YarnScaling(factor=float(factor), original_max_position_embeddings=original,
                              beta_fast=float(rope.get("beta_fast") or 32),
                              beta_slow=float(rope.get("beta_slow") or 1), **optional)


def _refuse(hf: dict, key: str, allowed: tuple) -> None:
    if key in hf and hf[key] not in allowed:
        raise ValueError(f"{hf['model_type']} with {key}={hf[key]!r} is not supported; "
                         f"supported: {', '.join(map(repr, allowed))}.")


def config_from_hf(hf: dict) -> ModelConfig:
    """The ModelConfig of a DeepseekV3 or Qwen3-MoE config.json dict."""
    arch = hf.get("model_type")
    req = lambda key: convert._require(hf, key)
    _refuse(hf, "hidden_act", ("silu",))
    _refuse(hf, "attention_bias", (False,))
    theta, scaling = _rope_from_hf(hf)
    common = dict(architecture=arch, vocab_size=req("vocab_size"),
                  num_layers=req("num_hidden_layers"), embed_dim=req("hidden_size"),
                  mlp_dim=req("intermediate_size"), num_heads=req("num_attention_heads"),
                  rope_theta=theta, rope_scaling=scaling,
                  norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                  tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
                  max_seq_len=req("max_position_embeddings"))
    if arch == "qwen3_moe":
        _refuse(hf, "use_sliding_window", (False,))
        _refuse(hf, "decoder_sparse_step", (1,))
        _refuse(hf, "mlp_only_layers", ([], None))
        # Qwen's config.json says num_experts; transformers 5 writes num_local_experts.
        experts = hf.get("num_experts") or req("num_local_experts")
        moe = MoEConfig(num_experts=experts, experts_per_token=req("num_experts_per_tok"),
                        expert_mlp_dim=req("moe_intermediate_size"), scoring="softmax",
                        norm_topk_prob=bool(hf.get("norm_topk_prob", False)))
        return ModelConfig(**common, moe=moe, qk_norm=True,
                           num_kv_heads=hf.get("num_key_value_heads") or common["num_heads"],
                           head_dim=hf.get("head_dim") or common["embed_dim"] // common["num_heads"])
    if arch != "deepseek_v3":
        raise ValueError(f"Unsupported architecture {arch!r}; supported: "
                         f"{', '.join(HF_ARCHITECTURES)} here, the dense ones in convert.py.")
    for key, allowed in DEEPSEEK_ROUTING.items():
        _refuse(hf, key, allowed)
    mla = MLAConfig(kv_lora_rank=req("kv_lora_rank"), qk_nope_head_dim=req("qk_nope_head_dim"),
                    qk_rope_head_dim=req("qk_rope_head_dim"), v_head_dim=req("v_head_dim"),
                    q_lora_rank=hf.get("q_lora_rank"))
    moe = MoEConfig(num_experts=req("n_routed_experts"), experts_per_token=req("num_experts_per_tok"),
                    expert_mlp_dim=req("moe_intermediate_size"),
                    num_shared_experts=hf.get("n_shared_experts") or 0, scoring="sigmoid",
                    score_bias=True, num_groups=hf.get("n_group") or 1,
                    topk_groups=hf.get("topk_group") or 1,
                    norm_topk_prob=bool(hf.get("norm_topk_prob", True)),
                    routed_scaling_factor=float(hf.get("routed_scaling_factor", 1.0)),
                    first_dense_layers=hf.get("first_k_dense_replace") or 0)
    return ModelConfig(**common, mla=mla, moe=moe, num_kv_heads=common["num_heads"],
                       head_dim=mla.qk_head_dim)


def _rope_to_hf(config: ModelConfig) -> dict:
    scaling = config.rope_scaling
    if scaling is None:
        return {"rope_type": "default", "rope_theta": config.rope_theta}
    if not isinstance(scaling, YarnScaling):
        raise ValueError(f"{config.architecture} with {type(scaling).__name__} rope scaling has no "
                         "Hugging Face equivalent here (default or YaRN).")
    fields = {k: v for k, v in dataclasses.asdict(scaling).items() if v is not None}
    return {"rope_type": "yarn", "rope_theta": config.rope_theta, **fields}


def hf_config(config: ModelConfig, tokenizer=None) -> dict:
    """The config.json dict transformers builds `config`'s model from."""
    moe = config.moe
    rope = _rope_to_hf(config)
    out = {"architectures": [HF_ARCHITECTURES[config.architecture]],
           "model_type": config.architecture, "vocab_size": config.vocab_size,
           "hidden_size": config.embed_dim, "intermediate_size": config.mlp_dim,
           "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
           "hidden_act": "silu", "max_position_embeddings": config.max_seq_len,
           "rms_norm_eps": config.norm_eps, "tie_word_embeddings": config.tie_embeddings,
           "attention_bias": False, "rope_theta": config.rope_theta,
           "rope_scaling": None if rope["rope_type"] == "default" else rope,
           "rope_parameters": rope, "torch_dtype": config.param_dtype,
           "moe_intermediate_size": moe.expert_mlp_dim, "num_experts_per_tok": moe.experts_per_token,
           "norm_topk_prob": moe.norm_topk_prob}
    if config.architecture == "qwen3_moe":
        out.update(num_key_value_heads=config.num_kv_heads, head_dim=config.head_dim,
                   num_experts=moe.num_experts, decoder_sparse_step=1, mlp_only_layers=[])
    else:
        m = config.mla
        out.update(num_key_value_heads=config.num_heads, n_routed_experts=moe.num_experts,
                   n_shared_experts=moe.num_shared_experts, n_group=moe.num_groups,
                   topk_group=moe.topk_groups, routed_scaling_factor=moe.routed_scaling_factor,
                   first_k_dense_replace=moe.first_dense_layers, kv_lora_rank=m.kv_lora_rank,
                   q_lora_rank=m.q_lora_rank, qk_nope_head_dim=m.qk_nope_head_dim,
                   qk_rope_head_dim=m.qk_rope_head_dim, v_head_dim=m.v_head_dim,
                   rope_interleave=True, num_nextn_predict_layers=0, scoring_func="sigmoid",
                   topk_method="noaux_tc")
    if tokenizer is not None:
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(tokenizer, key) is not None:
                out[key] = getattr(tokenizer, key)
    return out


def _check_hf_expressible(config: ModelConfig) -> None:
    """The HF classes fix routing details per family; refuse configs they cannot express."""
    moe = config.moe
    expected = ({"scoring": "softmax", "score_bias": False, "num_shared_experts": 0,
                 "num_groups": 1, "routed_scaling_factor": 1.0, "first_dense_layers": 0}
                if config.architecture == "qwen3_moe" else {"scoring": "sigmoid", "score_bias": True})
    for key, value in expected.items():
        if getattr(moe, key) != value:
            raise ValueError(f"{config.architecture} with moe.{key}={getattr(moe, key)!r} has no "
                             f"Hugging Face equivalent ({HF_ARCHITECTURES[config.architecture]} "
                             f"has {value!r}).")
    if config.architecture == "qwen3_moe" and (config.qkv_bias or not config.qk_norm):
        raise ValueError("qwen3_moe needs qk_norm=True and qkv_bias=False (as Qwen3MoeForCausalLM).")


# ------------------------------------------------------------------------ loading

def load_hf_directory(path: str, hf: dict, **overrides) -> tuple[ModelConfig, dict]:
    """(config, numpy params) of a DeepseekV3 / Qwen3-MoE directory; see convert.load_pretrained."""
    config = config_from_hf(hf).replace(**overrides)
    source = hf_files.SafetensorsSource(path, hf_files.quantization_block(hf))
    shapes = convert.param_shapes(config)
    params, used = {}, set()
    for t in tensor_list(config, rope_interleave=bool(hf.get("rope_interleave", True))):
        full = convert._get(shapes, t.path)
        try:
            param = convert._get(params, t.path)
        except KeyError:
            param = np.empty(full, _dtype(config, t.path))
            convert._set(params, t.path, param)
        shape = full[len(t.index):]
        param[t.index] = t.layout.to_params(source.read(t.hf, t.hf, t.layout.hf_shape(shape)), shape)
        used.update((t.hf, t.hf + "_scale_inv"))
    unused = sorted(source.names - used)
    mtp = [n for n in unused if _layer_of(n) is not None and _layer_of(n) >= config.num_layers]
    if mtp:
        logging.info("Skipped %d tensors of the multi-token-prediction module (layers >= %d).",
                     len(mtp), config.num_layers)
    others = sorted(set(unused) - set(mtp))
    if others:
        logging.warning("Ignored %d tensors not in the r1jax model: %s", len(others),
                        ", ".join(others[:8]))
    return config, params


def _layer_of(name: str) -> Optional[int]:
    match = re.match(r"model\.layers\.(\d+)\.", name)
    return None if match is None else int(match.group(1))


# ------------------------------------------------------------------------ saving

def save_pretrained(config: ModelConfig, params, path: str, tokenizer=None, *,
                    max_shard_bytes: int = hf_files.MAX_SHARD_BYTES) -> None:
    """Writes a DeepseekV3 / Qwen3-MoE HF directory (unquantised, RoPE rows interleaved)."""
    _check_hf_expressible(config)
    config_json = hf_config(config, tokenizer)
    shapes = convert.param_shapes(config)
    host = jax.tree.map(np.asarray, params)
    tensors = {t.hf: t for t in tensor_list(config)}

    def tensor(name: str) -> np.ndarray:
        t = tensors[name]
        param = convert._get(host, t.path)
        hf_files.check_shape("/".join(t.path), param, convert._get(shapes, t.path))
        return t.layout.to_hf(param[t.index].astype(_dtype(config, t.path)))

    sizes = [(t.hf, math.prod(convert._get(shapes, t.path)[len(t.index):])
              * np.dtype(_dtype(config, t.path)).itemsize) for t in tensors.values()]
    hf_files.write_hf_directory(path, config_json, sizes, tensor, tokenizer, max_shard_bytes)
