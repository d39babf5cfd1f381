"""The model a stage starts from, as its config section names it: pretrained weights or a preset."""
from __future__ import annotations

import dataclasses
import os

from r1jax import checkpoint
from r1jax.models.config import MOE_DISPATCH, LoraConfig, ModelConfig, preset
from r1jax.models.convert import load_pretrained, load_pretrained_numpy
from r1jax.models.tokenizer import load_tokenizer


def load_policy(model_section) -> tuple[ModelConfig, object, object]:
    """(ModelConfig, numpy params or None, tokenizer) from a config's `model` section.

    model.path (HF directory, .gguf, r1jax workdir or WORKDIR/checkpoints/STEP: `load_model`)
    loads pretrained weights; otherwise model.preset names a randomly initialised shape (params
    None: the caller initialises them sharded). model.tokenizer names the tokenizer's path
    (defaults to `path`, or a workdir's saved tokenizer).
    model.lora.rank > 0 adds low-rank adapters (see models/lora.py) to the config; the loaded
    params stay the base model's (the trainers create the adapters beside them).
    """
    overrides = {"dtype": model_section.dtype, "param_dtype": model_section.param_dtype,
                 "lora": lora_from_section(model_section.lora), "remat": model_section.remat,
                 "attention_impl": model_section.attention_impl}
    tokenizer = None
    if model_section.path:
        if checkpoint_location(model_section.path) is None:
            config, params = load_pretrained_numpy(model_section.path)
        else:
            config, params, tokenizer, _ = load_model(model_section.path,
                                                      model_section.tokenizer or None)
            if config.lora is not None:  # Its params are base and adapters, not a base to adapt.
                raise ValueError(
                    f"model.path={model_section.path} is a LoRA run's workdir: export it merged "
                    "first (python -m launch.convert --input=WORKDIR --output=DIR) and start "
                    "from DIR.")
        config = config.replace(**overrides)
    else:
        if model_section.vocab_size:
            overrides["vocab_size"] = model_section.vocab_size
        config, params = preset(model_section.preset, **overrides), None
    if model_section.max_seq_len:
        config = config.replace(max_seq_len=model_section.max_seq_len)
    config = with_moe_overrides(config, model_section.moe_dispatch,
                                model_section.moe_capacity_factor)
    tokenizer = tokenizer or load_tokenizer(model_section.tokenizer or model_section.path)
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


def checkpoint_location(path: str) -> tuple[str, int | None] | None:
    """(workdir, step) when `path` is an r1jax workdir (step None: newest) or WORKDIR/checkpoints/STEP."""
    if os.path.isdir(os.path.join(path, checkpoint.CHECKPOINT_DIR)):
        return path, None
    parent, step = os.path.split(os.path.normpath(path))
    if os.path.basename(parent) == checkpoint.CHECKPOINT_DIR and step.isdigit():
        return os.path.dirname(parent), int(step)
    return None


def load_model(path: str, tokenizer_path: str | None = None):
    """Loads the model and tokenizer that --model and --tokenizer (a config's model.path and
    model.tokenizer) name: a Hugging Face directory, a .gguf file, an r1jax workdir (its newest
    checkpoint) or WORKDIR/checkpoints/STEP.

    Returns:
      (model config, params, tokenizer, step): step is the checkpoint step for a workdir, else None.

    Raises:
      FileNotFoundError: the path, or a checkpoint in a workdir, does not exist.
      ValueError: a workdir or checkpoint without tokenizer_path.
    """
    location = checkpoint_location(path)
    if location is None:
        if not os.path.exists(path):
            raise FileNotFoundError(f"--model={path} does not exist: expected a Hugging Face model directory, "
                                    "a .gguf file, an r1jax workdir or WORKDIR/checkpoints/STEP")
        config, params = load_pretrained(path)
        return config, params, load_tokenizer(tokenizer_path or path), None
    workdir, step = location
    saved_tokenizer = os.path.join(workdir, checkpoint.TOKENIZER_DIR)
    if tokenizer_path is None and os.path.isdir(saved_tokenizer):
        tokenizer_path = saved_tokenizer
    if tokenizer_path is None:
        raise ValueError(f"--model={path}: the workdir has no {checkpoint.TOKENIZER_DIR}/ (written by "
                         "launch/train.py): pass --tokenizer (a config: model.tokenizer), the model "
                         "directory or .gguf file training started from")
    step = checkpoint.latest_step(workdir) if step is None else step
    if step is None:
        raise FileNotFoundError(f"--model={path}: the workdir has no complete checkpoint in "
                                f"{os.path.join(workdir, checkpoint.CHECKPOINT_DIR)}")
    config, params = checkpoint.restore_params(workdir, step)  # Names the available steps if `step` is absent.
    return config, params, load_tokenizer(tokenizer_path), step
