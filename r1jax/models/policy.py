"""The model a stage starts from, as its config section names it: pretrained weights or a preset."""
from __future__ import annotations

import dataclasses

from r1jax.models.config import MOE_DISPATCH, LoraConfig, ModelConfig, preset
from r1jax.models.convert import load_pretrained_numpy
from r1jax.models.tokenizer import load_tokenizer


def load_policy(model_section) -> tuple[ModelConfig, object, object]:
    """(ModelConfig, numpy params or None, tokenizer) from a config's `model` section.

    model.path (HF directory or .gguf) loads pretrained weights; otherwise model.preset names a
    randomly initialised shape (params None: the caller initialises them sharded).
    model.tokenizer names the tokenizer's path (defaults to `path`).
    model.lora.rank > 0 adds low-rank adapters (see models/lora.py) to the config; the loaded
    params stay the base model's (the trainers create the adapters beside them).
    """
    overrides = {"dtype": model_section.dtype, "param_dtype": model_section.param_dtype,
                 "lora": lora_from_section(model_section.lora), "remat": model_section.remat,
                 "attention_impl": model_section.attention_impl}
    if model_section.path:
        config, params = load_pretrained_numpy(model_section.path)
        config = config.replace(**overrides)
    else:
        if model_section.vocab_size:
            overrides["vocab_size"] = model_section.vocab_size
        config, params = preset(model_section.preset, **overrides), None
    if model_section.max_seq_len:
        config = config.replace(max_seq_len=model_section.max_seq_len)
    config = with_moe_overrides(config, model_section.moe_dispatch,
                                model_section.moe_capacity_factor)
    tokenizer = load_tokenizer(model_section.tokenizer or model_section.path)
    if params is None and len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"model.preset={model_section.preset!r} has vocab_size={config.vocab_size} but the "
            f"tokenizer {model_section.tokenizer!r} has {len(tokenizer)} tokens.")
    return config, params, tokenizer


def lora_from_section(section) -> LoraConfig | None:
    """The LoraConfig a `model.lora` section describes, or None when its rank is 0."""
    if not section.rank:
        return None
    return LoraConfig(rank=section.rank, alpha=section.alpha, targets=tuple(section.targets),
                      dropout=section.dropout)


def with_moe_overrides(config: ModelConfig, dispatch: str, capacity_factor: float) -> ModelConfig:
    """`config` with a config section's model.moe_dispatch / model.moe_capacity_factor applied
    (empty / 0: the model's own); refused, naming the key, for a model without MoE layers."""
    if not dispatch and not capacity_factor:
        return config
    for key, value in (("moe_dispatch", dispatch), ("moe_capacity_factor", capacity_factor)):
        if value and config.moe is None:
            raise ValueError(f"config.model.{key}={value!r} is not allowed: the "
                             f"{config.architecture} model has no MoE layers.")
    if dispatch and dispatch not in MOE_DISPATCH:
        raise ValueError(f"config.model.moe_dispatch={dispatch!r} is not allowed: expected one "
                         f"of {MOE_DISPATCH} (or empty).")
    if capacity_factor < 0:
        raise ValueError(f"config.model.moe_capacity_factor={capacity_factor!r} is not allowed: "
                         f"expected a float > 0 (or 0: the model's).")
    moe = dataclasses.replace(config.moe, dispatch=dispatch or config.moe.dispatch,
                              capacity_factor=capacity_factor or config.moe.capacity_factor)
    return config.replace(moe=moe)
