"""DeepSeek-V3's latent KV cache against grouped-query attention, and MoE decoding on a CPU.

1. Cache bytes per token: `r1jax.models.init_cache` shapes (what the sampler allocates), taken
   with jax.eval_shape, for the MLA presets and for attention of the same width (same layers,
   embed_dim, query heads and head_dim 128) with all heads kept (MHA) or grouped (GQA).
2. Decode speed: a small random DeepSeek-V3 and a Qwen3-MoE (4 layers, d=256, 8 experts top-2,
   SmolLM2's tokenizer and vocabulary), written by transformers; then benchmarks/sampling.py
   times r1jax's sampler against transformers' generate on each (same prompts, greedy).

Writes benchmarks/results/moe_cache_bytes.json and sampling_<model>_cpu.json.

  python benchmarks/moe.py [--new_tokens=128] [--rounds=2]
"""
import os
import subprocess
import sys
import tempfile

import jax
from absl import app, flags

from host import write_result  # benchmarks/host.py, beside this script.
from r1jax import models
from r1jax.models.convert import smollm2_gguf_path

_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 128, "New tokens per prompt (decode speed).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Timed rounds of the decode benchmark.")
_RESULTS = os.path.join(os.path.dirname(__file__), "results")

CACHE_PRESETS = ("moonlight_16b_a3b", "deepseek_v3_671b")
SMALL = dict(vocab_size=49152, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
             num_attention_heads=4, max_position_embeddings=1024, moe_intermediate_size=256,
             num_experts_per_tok=2, tie_word_embeddings=False, initializer_range=0.1,
             bos_token_id=1, eos_token_id=2)


def cache_bytes_per_token(config: models.ModelConfig, dtype: str = "bfloat16") -> int:
    """Bytes the sampler's cache takes per token (all layers), in `dtype`."""
    shapes = jax.eval_shape(lambda: models.init_cache(config, 1, 1, dtype))
    return sum(x.size * x.dtype.itemsize
               for x in models.transformer.layer_entries(shapes).values())


def same_width_attention(config: models.ModelConfig, kv_heads: int) -> models.ModelConfig:
    """config's layers and width with Llama attention of head_dim 128 and `kv_heads` kv heads."""
    return models.ModelConfig(
            architecture="llama", vocab_size=config.vocab_size, num_layers=config.num_layers,
            embed_dim=config.embed_dim, mlp_dim=config.mlp_dim, num_heads=config.num_heads,
            num_kv_heads=kv_heads, head_dim=128)


def cache_table() -> list[dict]:
    rows = []
    for name in CACHE_PRESETS:
        config = models.preset(name)
        mla = cache_bytes_per_token(config)
        row = {"model": name, "layers": config.num_layers, "embed_dim": config.embed_dim,
               "heads": config.num_heads,
               "mla_numbers_per_token_per_layer": config.mla.kv_lora_rank
               + config.mla.qk_rope_head_dim, "mla_bytes_per_token_bf16": mla}
        for kv_heads in (config.num_heads, 8, 4):
            gqa = cache_bytes_per_token(same_width_attention(config, kv_heads))
            row[f"kv_heads_{kv_heads}_bytes_per_token_bf16"] = gqa
            row[f"kv_heads_{kv_heads}_over_mla"] = gqa / mla
        rows.append(row)
        print(row)
    return rows


def write_small_models(directory: str) -> list[str]:
    """HF directories of a small random DeepSeek-V3 and Qwen3-MoE with SmolLM2's tokenizer."""
    import torch
    import transformers
    tokenizer = models.load_tokenizer(smollm2_gguf_path())
    configs = {
            "deepseek_v3_small": transformers.DeepseekV3Config(
                    **SMALL, num_key_value_heads=4, n_routed_experts=8, n_shared_experts=1,
                    n_group=4, topk_group=2, first_k_dense_replace=1, kv_lora_rank=64,
                    q_lora_rank=96, qk_rope_head_dim=32, qk_nope_head_dim=64, v_head_dim=64),
            "qwen3_moe_small": transformers.Qwen3MoeConfig(
                    **SMALL, num_key_value_heads=2, head_dim=64, num_experts=8,
                    norm_topk_prob=True),
    }
    paths = []
    for name, config in configs.items():
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config)
        with torch.no_grad():  # Random routing biases, so DeepSeek's selection is not all ties.
            for buffer_name, buffer in model.named_buffers():
                if buffer_name.endswith("e_score_correction_bias"):
                    buffer.normal_(0, 0.1)
        path = os.path.join(directory, name)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(path)
    return paths


def main(_):
    write_result({"benchmark": "moe_cache_bytes", "dtype": "bfloat16", "rows": cache_table()},
                 os.path.join(_RESULTS, "moe_cache_bytes.json"))
    with tempfile.TemporaryDirectory() as tmp:
        for path in write_small_models(tmp):
            output = os.path.join(_RESULTS, f"sampling_{os.path.basename(path)}_cpu.json")
            subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "sampling.py"),
                            f"--model={path}", f"--new_tokens={_NEW_TOKENS.value}",
                            f"--rounds={_ROUNDS.value}", f"--output={output}"], check=True)


if __name__ == "__main__":
    app.run(main)
