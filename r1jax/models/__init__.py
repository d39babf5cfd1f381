"""Flax transformer models (Llama, Qwen2, Qwen3, DeepSeek-V3, Qwen3-MoE) and their Hugging Face /
GGUF weights."""
from r1jax.models.config import (ARCHITECTURES, PRESETS, MLAConfig, ModelConfig, MoEConfig,
                                 RopeScaling, YarnScaling, preset)
from r1jax.models.transformer import (abstract_params, forward, forward_with_router_stats,
                                      init_cache, init_params, logical_axes, logits,
                                      output_head, unstack_layers)
from r1jax.models.convert import load_pretrained, load_pretrained_numpy, save_pretrained
from r1jax.models.tokenizer import load_tokenizer, stop_tokens
from r1jax.models.policy import load_policy
