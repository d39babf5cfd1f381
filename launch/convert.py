"""Converts a GGUF file or a Hugging Face directory into a Hugging Face directory.

The output (config.json, safetensors, tokenizer) loads with transformers'
AutoModelForCausalLM/AutoTokenizer and with r1jax.models.load_pretrained/load_tokenizer:

    python -m launch.convert --input=SmolLM2-135M-Instruct.Q4_1.gguf --output=/tmp/smollm2 \
        --dtype=bfloat16
"""
import os
import time

from absl import flags

from launch import cli
from r1jax.models import convert
from r1jax.models.tokenizer import load_tokenizer

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("input", None, "A .gguf file or a Hugging Face model directory.",
                        required=True)
    flags.DEFINE_string("output", None, "Directory to write the Hugging Face model to.",
                        required=True)
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Dtype of the written weights.")
    flags.DEFINE_float("max_shard_gb", convert.MAX_SHARD_BYTES / 1024**3,
                       "Weights larger than this are split into indexed shards.")

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def has_tokenizer(path: str) -> bool:
    """GGUF files carry their tokenizer; a HF directory may have none (weights only)."""
    if not os.path.isdir(path):
        return True
    return any(os.path.exists(os.path.join(path, name)) for name in _TOKENIZER_FILES)


def main(argv):
    del argv
    start = time.perf_counter()
    config, params = convert.load_pretrained_numpy(FLAGS.input, param_dtype=FLAGS.dtype)
    tokenizer = load_tokenizer(FLAGS.input) if has_tokenizer(FLAGS.input) else None
    convert.save_pretrained(config, params, FLAGS.output, tokenizer=tokenizer,
                            max_shard_bytes=int(FLAGS.max_shard_gb * 1024**3))
    tokenizer_note = "included" if tokenizer is not None else "absent"
    print(f"{convert.HF_ARCHITECTURES[config.architecture]}: {config.num_params / 1e6:.2f}M "
          f"parameters ({config.num_layers} layers, d={config.embed_dim}) in {FLAGS.dtype}, "
          f"tokenizer {tokenizer_note}; wrote {FLAGS.output} in "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    cli.run(main, define_flags)
