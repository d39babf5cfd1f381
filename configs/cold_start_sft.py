"""Cold-start SFT: a few thousand long chain-of-thought examples in R1's readable format.

    python -m launch.train --config=configs/cold_start_sft.py[:VARIANT] --workdir=DIR

Variants:
  (default) SmolLM2-135M-Instruct on GSM8K worked solutions rewritten as
            <think>solution</think><answer>answer</answer>; held-out evaluation reports the share
            of completions in that format (`accuracy` of the `format` reward).
  tiny      a random 2-layer model on generated arithmetic; seconds; for tests.
  qwen2_5_1_5b
            the real cold start: a chat JSONL of long CoT (--config.data.input), 8×H100 mesh.
"""
import ml_collections

from configs import common


def _cpu(config: ml_collections.ConfigDict):
    config.model.path = common.smollm2_path()
    config.data.update(kind="math", name="gsm8k", input=common.shared_data("gsm8k/train.jsonl"),
                       test_fraction=0.05, template="chat")
    # Small steps so it runs here: ~4 packed rows of 256 tokens ≈ 5 worked solutions each.
    config.sft.update(seq_len=256, batch_size=4, eval_rows=16)
    config.train.update(num_steps=30, eval_every=0, checkpoint_every=10)
    config.eval.update(max_problems=40, max_new_tokens=160, batch_size=40, reward="format")


def _tiny(config: ml_collections.ConfigDict):
    config.model.update(preset="tiny_llama", tokenizer=common.smollm2_path(),
                        vocab_size=49152, max_seq_len=256)
    config.data.update(kind="arithmetic", name="addition_1d", template="plain",
                       generate=dict(operations="+", digits=1, num_train=256, num_test=32,
                                     seed=0))
    config.sft.update(seq_len=128, batch_size=8, eval_rows=8)
    config.optimizer.update(learning_rate=3e-3, warmup_steps=1)
    config.train.update(num_steps=6, eval_every=3, checkpoint_every=3)
    config.eval.update(max_problems=4, max_new_tokens=8, batch_size=4, reward="format")


def _qwen2_5_1_5b(config: ml_collections.ConfigDict):
    config.model.update(path="/path/to/qwen2_5_1_5b", dtype="bfloat16")
    config.data.update(kind="chat", name="cold_start", input="/path/to/cold_start.jsonl",
                       test_fraction=0.01, template="chat")
    config.sft.update(seq_len=8192, batch_size=64, num_micro_batches=4, train_on="assistant")
    config.optimizer.update(learning_rate=1e-5)
    config.train.update(num_steps=2000, eval_every=200, checkpoint_every=200)
    config.eval.update(max_problems=0)
    config.mesh.shape = {"data": 1, "fsdp": 8, "tensor": 1}


VARIANTS = {"cpu": _cpu, "tiny": _tiny, "qwen2_5_1_5b": _qwen2_5_1_5b}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = common.variant_name(arg, VARIANTS, stage="cold_start_sft")
    config = common.base_config("sft", variant)
    config.sft = common.sft_config()
    config.optimizer.update(learning_rate=2e-5, warmup_steps=10, decay="cosine")
    VARIANTS[variant](config)
    return config
