"""Reward-model training: a backbone and a scalar head on preference pairs (Bradley–Terry).

    python -m launch.train --config=configs/reward_model.py[:VARIANT] --workdir=DIR

Variants:
  (default) SmolLM2-135M-Instruct on HH-RLHF harmless-base pairs (a harmlessness RM); a few
            steps so it runs in minutes here; held-out pair accuracy on 5% of the pairs.
  helpful   the same on AlpacaEval helpfulness pairs (longer responses; see the data README on
            length: compare against a longer-wins baseline).
  tiny      a random 2-layer model on 64 HH-RLHF pairs; seconds; for tests.
  qwen2_5_1_5b
            a pod-sized RM: Qwen2.5-1.5B-Instruct backbone on a user preference JSONL
            (--config.data.input), 8-way fsdp mesh.
"""
import ml_collections

from configs import common


def _cpu(config: ml_collections.ConfigDict):
    config.model.path = common.smollm2_path()
    config.data.update(name="hh_rlhf_harmless",
                       input=common.shared_data("hh_rlhf_harmless/pairs.jsonl"))
    # Three HH-RLHF harmless-base lines have an empty reply.
    # eval_pairs past the split's size: every held-out pair (92 HH-RLHF, 118 AlpacaEval).
    config.reward_model.update(seq_len=256, batch_size=8, eval_pairs=1000, invalid_pairs="drop")
    config.train.update(num_steps=40, eval_every=20, checkpoint_every=20)


def _helpful(config: ml_collections.ConfigDict):
    _cpu(config)
    config.data.update(name="alpaca_eval_helpful",
                       input=common.shared_data("alpaca_eval_helpful/pairs.jsonl"))
    # 256 tokens, as the harmlessness RM (a longer rendering keeps its end): at 256 a step took
    # ~29 s on 2 shared cores; 512 would put 40 steps well past ~15 minutes.
    # Two micro-batches: in one, the update's peak memory (RSS 24 GB) exceeded a 24 GB machine.
    config.reward_model.update(seq_len=256, invalid_pairs="error", num_micro_batches=2)


def _tiny(config: ml_collections.ConfigDict):
    config.model.update(preset="tiny_llama", tokenizer=common.smollm2_path(),
                        vocab_size=49152, max_seq_len=128)
    config.data.update(name="hh_rlhf_harmless",
                       input=common.shared_data("hh_rlhf_harmless/pairs.jsonl"))
    config.reward_model.update(seq_len=128, batch_size=8, eval_pairs=8, invalid_pairs="drop",
                               max_train_pairs=64)
    config.optimizer.update(learning_rate=1e-3, warmup_steps=1)
    config.train.update(num_steps=6, eval_every=3, checkpoint_every=3)


def _qwen2_5_1_5b(config: ml_collections.ConfigDict):
    config.model.update(path="/path/to/qwen2_5_1_5b_instruct", dtype="bfloat16")
    config.data.update(name="preferences", input="/path/to/preferences.jsonl",
                       test_fraction=0.02)
    config.reward_model.update(seq_len=2048, batch_size=64, num_micro_batches=2, eval_pairs=512,
                               center_coef=0.01)
    config.optimizer.update(learning_rate=5e-6)
    config.train.update(num_steps=2000, eval_every=200, checkpoint_every=200)
    config.mesh.shape = {"data": 1, "fsdp": 8, "tensor": 1}


VARIANTS = {"cpu": _cpu, "helpful": _helpful, "tiny": _tiny, "qwen2_5_1_5b": _qwen2_5_1_5b}


def reward_model_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        seq_len=512,             # tokens per side; longer renderings keep their end
        batch_size=8,            # pairs per step (2 × rows through the model)
        num_micro_batches=1,
        margin=0.0,              # Bradley–Terry margin: the chosen side must win by this much
        center_coef=0.0,         # × (r_chosen + r_rejected)²: keeps rewards centred on 0
        eval_pairs=64,           # held-out pairs for eval_pair_accuracy; 0 = none
        max_train_pairs=0,       # > 0: train on the first max_train_pairs pairs only
        invalid_pairs="error",   # | drop: pairs with an empty side or identical sides
    ))


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = common.variant_name(arg, VARIANTS, stage="reward_model")
    config = common.base_config("reward_model", variant)
    config.reward_model = reward_model_config()
    config.data.update(kind="preference", test_fraction=0.05, template="chat")
    config.optimizer.update(learning_rate=1e-5, warmup_steps=5, decay="cosine")
    config.eval.max_problems = 0
    VARIANTS[variant](config)
    return config
