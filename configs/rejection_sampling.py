"""Rejection sampling (R1 stage 3): from a policy to an SFT mix of verified responses.

    python -m launch.rejection_sample --config=configs/rejection_sampling.py[:VARIANT] --workdir=DIR

Variants:
  (default) SmolLM2-135M-Instruct (or --config.model.path=an R1-Zero workdir) on this 2-core CPU:
            2-digit addition (the R1-Zero default run's generated train split, its 200 test
            questions held out) and GSM8K training prompts, checked by math_accuracy (GSM8K
            also by the generative judge, the policy itself, to measure their agreement), plus
            AlpacaEval instructions with their chosen answers reused as the general source.
  judge_agreement
            the default's GSM8K source alone, 75 prompts × 4 samples: how often the judge agrees
            with math-verify (300 samples).
  tiny      a random 2-layer model; seconds; for tests.
  qwen2_5_7b
            a Qwen2.5-7B-shaped RL checkpoint, 16 samples per prompt, on a TPU v5p-64 slice (8
            processes of 4 chips; see `mesh` below). Set --config.model.path and the sources'
            inputs.

Keys: model (common.model_config; path may also be an r1jax workdir or WORKDIR/checkpoints/STEP),
mesh (each process's own mesh over its local devices: rejection sampling needs no
communication between processes, so none waits for another), sampling, sources
(r1jax/rejection/sources.py), filters (filters.py), judge (judge.py; model "" = the policy),
select (select.py), output (shard_size prompts per shard, rejected_per_reason rows kept per
source and reason in rejected_sample.jsonl).
"""
import ml_collections

from configs import common
from r1jax.rejection import filters, sources

ADDITION_TEMPLATE = "chat:{question} Reply with just the number."


def base() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.stage = "rejection"
    config.model = common.model_config()
    config.mesh = common.mesh_config()
    config.sampling = common.sampling_config(temperature=1.0)
    config.sampling.update(n=4, max_new_tokens=256, batch_size=64, seed=0)
    # static: batches of batch_size samples, each decoded until its longest ends | continuous:
    # batch_size slots, each refilled as its sample ends (the judge's replies too); the same
    # samples either way, the faster when lengths vary (benchmarks/sampling.py --compare=batching)
    config.sampling.batching = "static"
    config.sources = ml_collections.ConfigDict()
    config.filters = filters.default_config()
    config.judge = ml_collections.ConfigDict(dict(
        model="", tokenizer="", template="", mode="verdict", threshold=7.0, max_new_tokens=64))
    config.select = ml_collections.ConfigDict(dict(
        per_prompt=4, strategy="all", ratio=3.0, total=0, seed=0))
    config.output = ml_collections.ConfigDict(dict(shard_size=64, rejected_per_reason=20))
    return config


def addition(**values) -> ml_collections.ConfigDict:
    """2-digit addition as configs/r1_zero.py's default generates it (same seed: same test split)."""
    task = dict(task="arithmetic", num=5000, num_test=200, seed=0, operations="+", digits=2)
    task.update(values.pop("generate", {}))
    # The prompt asks for a bare number, so the last number is the answer (as configs/r1_zero.py).
    return sources.source_config(
        kind="math", generate=task, template=ADDITION_TEMPLATE, rules={"math_accuracy": 1.0},
        rules_params={"math_accuracy": {"sources": ("answer", "boxed", "last_number")}},
        skip_filters=("language", "format"), max_new_tokens=16, **values)


def cpu() -> ml_collections.ConfigDict:
    config = base()
    config.model.path = common.smollm2_path()
    # At temperature 1.0 the base model gets about 4% of these sums right (22% greedy): 0.7 with
    # top-p 0.95 keeps diverse samples and gives the SFT set more right answers.
    config.sampling.update(n=8, temperature=0.7, top_p=0.95)
    config.sources.addition = addition(quota=300)
    config.sources.gsm8k = sources.source_config(
        kind="math", input=common.shared_data("gsm8k/train.jsonl"), quota=24, template="chat",
        rules={"math_accuracy": 1.0}, judge=True, skip_filters=("format",), n=4, max_new_tokens=200)
    config.sources.helpful = sources.source_config(
        kind="chat", input=common.shared_data("alpaca_eval_helpful/pairs.jsonl"), format="preference",
        quota=300, responses="reuse", skip_filters=("format",))
    config.select.update(per_prompt=2, strategy="shortest")
    config.output.update(shard_size=50)
    return config


def judge_agreement() -> ml_collections.ConfigDict:
    """The CPU default's GSM8K source alone, 75 training prompts × 4 samples: the generative
    judge's agreement with math-verify on 300 samples (stats.json: sources.gsm8k.judge)."""
    config = cpu()
    for name in ("addition", "helpful"):
        del config.sources[name]
    config.sources.gsm8k.quota = 75
    config.select.update(ratio=0.0)
    return config


def tiny() -> ml_collections.ConfigDict:
    config = base()
    config.model.update(preset="tiny_llama", tokenizer=common.smollm2_path(), vocab_size=49152,
                        max_seq_len=256)
    config.sampling.update(n=2, max_new_tokens=8, batch_size=16)
    config.sources.addition = addition(quota=12, generate=dict(num=64, num_test=8, digits=1),
                                       judge=True)
    config.sources.helpful = sources.source_config(
        kind="chat", input=common.shared_data("alpaca_eval_helpful/pairs.jsonl"), format="preference",
        quota=4, responses="reuse", skip_filters=("format", "long_paragraph"))
    config.judge.update(max_new_tokens=8)
    # A random model answers nothing right: no mix (ratio 0) keeps the general rows in the output.
    config.select.update(ratio=0.0)
    config.output.update(shard_size=4, rejected_per_reason=4)
    return config


def qwen2_5_7b() -> ml_collections.ConfigDict:
    config = base()
    config.model.update(path="/path/to/qwen2_5_7b_rl_workdir", dtype="bfloat16", max_seq_len=32768)
    # Per host: 4 chips, two replicas of 2-way tensor parallelism; 8 hosts take every 8th shard.
    config.mesh.shape = {"data": 2, "fsdp": 1, "tensor": 2}
    config.sampling.update(n=16, temperature=1.0, max_new_tokens=16384, batch_size=256)
    config.sources.math = sources.source_config(
        kind="math", input="/path/to/math_prompts.jsonl", template="chat_r1",
        rules={"math_accuracy": 1.0}, skip_filters=())
    config.sources.code = sources.source_config(
        kind="code", input="/path/to/code_prompts.jsonl", template="chat_r1", rules={"code": 1.0})
    config.sources.general = sources.source_config(
        kind="chat", input="/path/to/general_sft.jsonl", format="chat", responses="reuse",
        skip_filters=("format", "code_in_reasoning"))
    config.filters.format.enabled = True
    config.filters.overlong.max_tokens = 12000
    config.select.update(per_prompt=4, strategy="random", ratio=3.0, total=800_000)
    config.output.update(shard_size=1024)
    return config


VARIANTS = {"cpu": cpu, "judge_agreement": judge_agreement, "tiny": tiny, "qwen2_5_7b": qwen2_5_7b}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = common.variant_name(arg, VARIANTS, stage="rejection_sampling")
    config = VARIANTS[variant]()
    config.variant = variant
    return config
