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

Distillation from a teacher's distributions (stage `distill`, r1jax/train/distill.py), on the
default task (2-digit addition, as configs/r1_zero.py's default) with SmolLM2-135M-Instruct as
the student; the teacher shares its tokenizer, e.g. an R1-Zero run's workdir:

    python -m launch.train --config=configs/distill.py:on_policy --workdir=DIR \
        --config.teacher.path=R1_ZERO_WORKDIR

  logits    forward KL to the teacher's full (distill.top_k = 0) or top-k distribution at
            every completion token of given prompt + completion records (default: the task's
            reference solutions; --config.data.kind=completion --config.data.input=traces.jsonl
            for a teacher's traces).
  on_policy the student samples, the teacher scores its tokens, per-token reverse KL.
  logits_tiny, on_policy_tiny
            random 2-layer students; seconds; for tests (set teacher.path).
"""
import ml_collections
from ml_collections import config_dict

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


def _addition(config: ml_collections.ConfigDict, digits: int, num_train: int, num_test: int,
              template: str):
    """The default task of configs/r1_zero.py: n-digit addition, answer read from the reply's
    last number."""
    config.data.update(kind="arithmetic", name=f"addition_{digits}d", template=template,
                       generate=dict(operations="+", digits=digits, num_train=num_train,
                                     num_test=num_test, seed=0))
    config.eval.reward_params = dict(sources=("answer", "boxed", "last_number"))
    if "rewards_params" in config:
        config.rewards_params.math_accuracy = config.eval.reward_params.to_dict()


def _smollm2_addition(config: ml_collections.ConfigDict):
    # The R1-Zero default run's student, task, step budget and evaluation (configs/r1_zero.py).
    config.model.path = common.smollm2_path()
    _addition(config, 2, 5000, 200, "chat:{question} Reply with just the number.")
    config.train.update(num_steps=20, eval_every=10, checkpoint_every=10)
    config.eval.update(max_problems=200, max_new_tokens=16)


def _logits(config: ml_collections.ConfigDict):
    _smollm2_addition(config)
    config.distill.update(seq_len=64, batch_size=8)


def _on_policy(config: ml_collections.ConfigDict):
    _smollm2_addition(config)
    config.rl.update(prompts_per_step=4, num_generations=8, max_new_tokens=16)


def _tiny_student(config: ml_collections.ConfigDict):
    config.model.update(preset="tiny_llama", tokenizer=common.smollm2_path(),
                        vocab_size=49152, max_seq_len=256)
    _addition(config, 1, 256, 32, "plain")
    config.optimizer.update(learning_rate=3e-3, warmup_steps=1)
    config.train.update(num_steps=4, eval_every=2, checkpoint_every=2, log_samples=2)
    config.eval.update(max_problems=8, max_new_tokens=8, batch_size=8)


def _logits_tiny(config: ml_collections.ConfigDict):
    _tiny_student(config)
    config.distill.update(seq_len=64, batch_size=8, chunk=16)


def _on_policy_tiny(config: ml_collections.ConfigDict):
    _tiny_student(config)
    config.rl.update(prompts_per_step=8, num_generations=2, max_new_tokens=8)


VARIANTS = {"cpu": _cpu, "tiny": _tiny, "qwen2_5_1_5b": _qwen2_5_1_5b, "logits": _logits,
            "on_policy": _on_policy, "logits_tiny": _logits_tiny,
            "on_policy_tiny": _on_policy_tiny}
MODES = {"logits": "logits", "logits_tiny": "logits", "on_policy": "on_policy",
         "on_policy_tiny": "on_policy"}


def teacher_config() -> ml_collections.ConfigDict:
    """config.teacher: the model whose distributions the student learns (inference only)."""
    return ml_collections.ConfigDict(dict(
        path="",             # HF directory, .gguf, or an r1jax workdir (its newest checkpoint)
        tokenizer="",        # default: WORKDIR/tokenizer of a workdir, else path
        dtype="float32",     # compute dtype; bfloat16 on accelerators
        max_seq_len=0,       # >0 overrides the teacher's context length
    ))


def distill_config(mode: str) -> ml_collections.ConfigDict:
    """The `distill` stage's sections: teacher, distill and, on-policy, the sampler's (rl) and
    the rewards it logs (never trained on)."""
    config = ml_collections.ConfigDict()
    config.teacher = teacher_config()
    if mode == "logits":
        config.distill = ml_collections.ConfigDict(dict(
            mode="logits",
            top_k=0,                 # 0: full KL; k: over the teacher's k likeliest tokens
            temperature=1.0,         # both distributions' softmax temperature
            chunk=1024,              # positions whose [B, chunk, V] logits exist at a time
            seq_len=512, packing=True, overlong="truncate", train_on="completion",
            batch_size=8,            # packed rows per step
            num_micro_batches=1,
        ))
        return config
    config.distill = ml_collections.ConfigDict(dict(mode="on_policy"))
    config.rl = ml_collections.ConfigDict(dict(
        prompts_per_step=4,
        num_generations=4,           # student samples per prompt
        max_prompt_len=64,
        max_new_tokens=16,
        sampling=common.sampling_config(temperature=1.0),  # the student's own distribution
        batching="static",           # | continuous, with num_slots (configs/r1_zero.py's rl)
        num_slots=0,
        stop_strings=config_dict.placeholder(tuple),       # None: the template's
        num_micro_batches=1,
        filter_groups=False,         # rollouts.collect's keys: every group is used
        max_filter_rounds=0,
    ))
    config.rewards = ml_collections.ConfigDict({"math_accuracy": 1.0})  # logged only
    config.rewards_params = ml_collections.ConfigDict()
    config.mixture = ml_collections.ConfigDict()
    return config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = common.variant_name(arg, VARIANTS, stage="distill")
    if variant in MODES:
        config = common.base_config("distill", variant)
        config.update(distill_config(MODES[variant]))
        config.optimizer.update(learning_rate=2e-5, warmup_steps=3)
        VARIANTS[variant](config)
        return config
    config = common.base_config("sft", variant)
    config.sft = common.sft_config()
    config.data.update(kind="completion", name="distill_traces", template="chat",
                       test_fraction=0.05)
    config.optimizer.update(learning_rate=2e-5, warmup_steps=10, decay="cosine")
    config.eval.max_problems = 0
    VARIANTS[variant](config)
    return config
