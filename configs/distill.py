"""Distillation: SFT of a small dense student on a teacher's sampled traces.

    python -m launch.train --config=configs/distill.py[:VARIANT] --workdir=DIR \
        --config.data.input=traces.jsonl

The traces file is what `launch/sample.py` (or rejection sampling) writes: one JSON object per
line with `prompt` (the question) and `completion` (the teacher's answer).

Variants:
  (default) SmolLM2-135M-Instruct as the student, on this CPU.
  tiny      a random 2-layer student; seconds; for tests.
  qwen2_5_1_5b
            R1-Distill-Qwen-1.5B's setting: 800k traces, lr 1e-5, 2 epochs; 8×H100 mesh.
"""
import ml_collections

from configs import common


def _cpu(config: ml_collections.ConfigDict):
    config.model.path = common.smollm2_path()
    config.sft.update(seq_len=512, batch_size=8)
    config.train.update(num_steps=100, eval_every=50, checkpoint_every=50)


def _tiny(config: ml_collections.ConfigDict):
    config.model.update(preset="tiny_llama", tokenizer=common.smollm2_path(),
                        vocab_size=49152, max_seq_len=256)
    config.sft.update(seq_len=128, batch_size=8, eval_rows=8)
    config.optimizer.update(learning_rate=3e-3, warmup_steps=1)
    config.train.update(num_steps=4, eval_every=2, checkpoint_every=2)


def _qwen2_5_1_5b(config: ml_collections.ConfigDict):
    config.model.update(path="/path/to/qwen2_5_1_5b", dtype="bfloat16")
    config.data.test_fraction = 0.001
    config.sft.update(seq_len=16384, batch_size=64, num_micro_batches=8)
    config.optimizer.update(learning_rate=1e-5)
    config.train.update(num_steps=25000, eval_every=1000, checkpoint_every=500)
    config.mesh.shape = {"data": 1, "fsdp": 8, "tensor": 1}


VARIANTS = {"cpu": _cpu, "tiny": _tiny, "qwen2_5_1_5b": _qwen2_5_1_5b}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = common.variant_name(arg, VARIANTS, stage="distill")
    config = common.base_config("sft", variant)
    config.sft = common.sft_config()
    config.data.update(kind="completion", name="distill_traces", template="chat",
                       test_fraction=0.05)
    config.optimizer.update(learning_rate=2e-5, warmup_steps=10, decay="cosine")
    config.eval.max_problems = 0
    VARIANTS[variant](config)
    return config
