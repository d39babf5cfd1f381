"""Flax transformer models (Llama, Qwen2, Qwen3) and their Hugging Face / GGUF weights."""
from r1jax.models.config import ARCHITECTURES, PRESETS, ModelConfig, RopeScaling, preset
from r1jax.models.transformer import (abstract_params, forward, init_cache, init_params,
                                      logical_axes, logits)
from r1jax.models.convert import load_pretrained, load_pretrained_numpy, save_pretrained
from r1jax.models.tokenizer import load_tokenizer, stop_tokens
from r1jax.models.policy import load_policy
