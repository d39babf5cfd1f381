"""LoRA exports: the merged model as a Hugging Face directory, and the adapters alone in PEFT's
layout (adapter_config.json + adapter_model.safetensors) for `peft.PeftModel.from_pretrained`
on the base model.

PEFT stores each adapter as torch Linear weights: lora_A.weight [rank, in] and
lora_B.weight [out, rank], with the layer computing W·x + B·A·x · lora_alpha / r. r1jax's A
[*in, rank] and B [rank, *out] are the same matrices transposed and flattened, so A is written
with its kernel's HF layout (`convert.Layout`) and B as a plain [rank, out] Linear.
"""
from __future__ import annotations

import json
import os

import numpy as np

from r1jax.models import convert, hf_files, lora
from r1jax.models.config import ModelConfig

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PeftModelForCausalLM wraps the HF model as base_model.model


def save_merged(config: ModelConfig, params: dict, path: str, tokenizer=None, *,
                param_dtype: str | None = None,
                max_shard_bytes: int = convert.MAX_SHARD_BYTES) -> None:
    """A HF directory of the adapted model: every W + A·B·scale (merged in float32, written in
    param_dtype, default config.param_dtype), loadable without peft."""
    plain_config, merged = lora.merged(config, params)
    plain_config = plain_config.replace(param_dtype=param_dtype or config.param_dtype)
    convert.save_pretrained(plain_config, merged, path, tokenizer, max_shard_bytes=max_shard_bytes)


def _entries(config: ModelConfig) -> dict:
    """params path of each base kernel -> its convert.TensorName."""
    return {entry.path: entry for entry in convert.tensor_map(config.replace(lora=None))}


def peft_tensors(config: ModelConfig, params: dict) -> dict[str, np.ndarray]:
    """{PEFT tensor name: float32 array} of every adapter in `params` (layers unstacked)."""
    entries, tensors = _entries(config), {}
    for path, target in lora.adapted_kernels(params):
        entry = entries[path + (lora.kernel_name(target),)]
        module = params
        for key in path:
            module = module[key]
        a = np.asarray(module[f"{target}_lora_a"], np.float32)
        b = np.asarray(module[f"{target}_lora_b"], np.float32)
        for layer in range(a.shape[0]):
            prefix = PEFT_PREFIX + entry.hf.format(layer).removesuffix(".weight")
            tensors[f"{prefix}.lora_A.weight"] = entry.layout.to_hf(a[layer])
            tensors[f"{prefix}.lora_B.weight"] = convert.LINEAR.to_hf(b[layer])
    return tensors


def peft_config(config: ModelConfig, base_model: str = "") -> dict:
    """adapter_config.json for `config.lora` (PEFT's LoraConfig fields)."""
    kernels = {lora.kernel_name(t) for t in config.lora.targets}
    modules = sorted({entry.hf.split(".")[-2] for entry in _entries(config).values()
                      if entry.per_layer and entry.path[-1] in kernels})  # q_proj, gate_proj, ...
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": config.lora.rank,
            "lora_alpha": config.lora.alpha, "lora_dropout": config.lora.dropout,
            "target_modules": modules, "bias": "none", "fan_in_fan_out": False,
            "use_rslora": False, "use_dora": False, "inference_mode": True,
            "init_lora_weights": True, "modules_to_save": None,
            "base_model_name_or_path": base_model}


def save_peft_adapter(config: ModelConfig, params: dict, path: str, base_model: str = "") -> None:
    """PATH/adapter_config.json + PATH/adapter_model.safetensors for peft.

    base_model: recorded as base_model_name_or_path (the HF directory the adapter goes onto).
    """
    if config.lora is None:
        raise ValueError("save_peft_adapter: the model has no LoRA adapters (model.lora.rank 0).")
    os.makedirs(path, exist_ok=True)
    hf_files.save_tensors(peft_tensors(config, params), os.path.join(path, ADAPTER_WEIGHTS))
    with open(os.path.join(path, ADAPTER_CONFIG), "w") as f:
        json.dump(peft_config(config, base_model), f, indent=2)
