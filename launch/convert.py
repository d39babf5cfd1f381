"""Converts a GGUF file, a Hugging Face directory or an r1jax workdir's checkpoint into a
Hugging Face directory.

The output (config.json, safetensors, tokenizer) loads with transformers'
AutoModelForCausalLM/AutoTokenizer and with r1jax.models.load_pretrained/load_tokenizer:

    python -m launch.convert --input=SmolLM2-135M-Instruct.Q4_1.gguf --output=/tmp/smollm2 \
        --dtype=bfloat16

A LoRA run's workdir (newest checkpoint, or WORKDIR/checkpoints/STEP) is written merged
(W + A·B·scale); --peft_output also writes its adapters in PEFT's layout:

    python -m launch.convert --input=WORKDIR --output=/tmp/merged --peft_output=/tmp/adapter
"""
import os
import time

from absl import flags

from launch import cli
from r1jax.errors import UserError
from r1jax.models import convert, convert_lora
from r1jax.models.policy import checkpoint_location, load_model
from r1jax.models.tokenizer import load_tokenizer

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("input", None, "A .gguf file, a Hugging Face model directory or an "
                        "r1jax workdir (WORKDIR/checkpoints/STEP for a given step).",
                        required=True)
    flags.DEFINE_string("output", None, "Directory to write the Hugging Face model to.",
                        required=True)
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Dtype of the written weights.")
    flags.DEFINE_string("peft_output", None, "A LoRA workdir's adapters in PEFT's layout "
                        "(adapter_config.json + adapter_model.safetensors) go here.")
    flags.DEFINE_string("base_model", "", "The adapter's base_model_name_or_path (with "
                        "--peft_output): the HF directory of the model it was trained on.")
    flags.DEFINE_float("max_shard_gb", convert.MAX_SHARD_BYTES / 1024**3,
                       "Weights larger than this are split into indexed shards.")

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def has_tokenizer(path: str) -> bool:
    """GGUF files carry their tokenizer; a HF directory may have none (weights only)."""
    if not os.path.isdir(path):
        return True
    return any(os.path.exists(os.path.join(path, name)) for name in _TOKENIZER_FILES)


def export(input_path: str, output: str, dtype: str = "float32",
           max_shard_bytes: int = convert.MAX_SHARD_BYTES, peft_output: str | None = None,
           base_model: str = "") -> str:
    """Writes `input_path` (GGUF, HF directory or r1jax workdir) as a HF directory at `output`
    (a LoRA workdir merged; its adapters also in PEFT's layout at `peft_output`); returns a
    one-line description. launch/pipeline.py exports each training stage's model with it."""
    if checkpoint_location(input_path) is not None:
        config, params, tokenizer, _ = load_model(input_path)
    else:
        config, params = convert.load_pretrained_numpy(input_path, param_dtype=dtype)
        tokenizer = load_tokenizer(input_path) if has_tokenizer(input_path) else None
    if peft_output and config.lora is None:
        raise UserError(f"--peft_output={peft_output}: --input={input_path} has no LoRA "
                        "adapters (only a LoRA run's workdir has)")
    lines = []
    if peft_output:
        convert_lora.save_peft_adapter(config, params, peft_output, base_model)
        lines.append(f"LoRA rank {config.lora.rank} adapters: wrote {peft_output}")
    if config.lora is not None:
        convert_lora.save_merged(config, params, output, tokenizer,
                                 param_dtype=dtype, max_shard_bytes=max_shard_bytes)
    else:
        convert.save_pretrained(config.replace(param_dtype=dtype), params, output,
                                tokenizer=tokenizer, max_shard_bytes=max_shard_bytes)
    tokenizer_note = "included" if tokenizer is not None else "absent"
    lines.append(f"{convert.HF_ARCHITECTURES[config.architecture]}: {config.num_params / 1e6:.2f}M "
                 f"parameters ({config.num_layers} layers, d={config.embed_dim}) in {dtype}, "
                 f"tokenizer {tokenizer_note}; wrote {output}")
    return "\n".join(lines)


def main(argv):
    del argv
    start = time.perf_counter()
    print(export(FLAGS.input, FLAGS.output, FLAGS.dtype, int(FLAGS.max_shard_gb * 1024**3),
                 FLAGS.peft_output, FLAGS.base_model)
          + f" in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    cli.run(main, define_flags)
