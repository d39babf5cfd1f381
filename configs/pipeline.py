"""The whole R1 recipe as one job: every stage's config, chained (r1jax/pipeline/plan.py).

    python -m launch.pipeline --config=configs/pipeline.py[:VARIANT] --workdir=DIR \
        [--config.stages.<stage>.<key>=value] [--config.skip.<stage>=True] \
        [--config.given.<stage>=PATH] [--config.students.<name>=MODEL_PATH]

Sections: base (the model the SFT stages start from; path, or a preset for tests), stages (one
full stage config each, as its own configs/*.py builds it; the pipeline sets the model, data and
reward-model paths it wires), skip / given (per stage), students (distillation: name -> model
path, "" = the base model), cold_start (the rewrite's system prompt), eval (the held-out
evaluation after every stage: `math` as configs/eval.py on `data`'s test split, `general`
responses to `general_data`'s held-out prompts scored by the pipeline's reward models).

Variants:
  (default) cpu  SmolLM2-135M-Instruct on this 2-core CPU, every stage short (about 40 minutes
            in all): 2-digit addition as the reasoning task, AlpacaEval and HH-RLHF harmless
            prompts and pairs as the general data.
  tiny      a random 2-layer base, every stage seconds; for tests.
  qwen2_5_7b
            pod-sized (TPU v5p-64): a Qwen2.5-7B base through every stage, sizes from the R1
            paper where it gives them (marked "paper"), scaled down elsewhere ("scaled").
  deepseek_v3_16b
            the same on a DeepSeek-V3-shaped MoE base (~16B, expert parallelism, GSPO).
"""
import ml_collections

from configs import (all_scenario_rl, cold_start_sft, common, eval as eval_configs, r1_zero,
                     rejection_sampling, rejection_sft, reward_model)
from r1jax.data import templates
from r1jax.pipeline import plan
from r1jax.rejection import sources

# Every stage after cold start prompts with R1's instruction (think, then answer) as the system
# prompt; the pipeline's evaluation does too, so every model is asked the same way.
R1_TEMPLATE = "chat_r1"
# Reasoning RL rewards (R1 §2.3.2): accuracy, format, and language consistency.
REASONING_REWARDS = {"math_accuracy": 1.0, "format": 0.1, "language_consistency": 0.1}
# From cold start on, an answer counts only inside <answer> or \boxed{}.
STRICT_MATH = dict(sources=("answer", "boxed"))


def _sections(variant: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.base = common.model_config()
    config.stages = ml_collections.ConfigDict()
    config.skip = ml_collections.ConfigDict({name: False for name in plan.ORDER})
    config.given = ml_collections.ConfigDict({name: "" for name in plan.ORDER})
    config.students = ml_collections.ConfigDict({"base": ""})
    # False: once a stage is done, the training checkpoints no later stage reads are deleted
    # (launch/pipeline.py prune_finished); True keeps every stage resumable past its end.
    config.keep_stage_checkpoints = False
    config.cold_start = ml_collections.ConfigDict(dict(system=templates.R1_SYSTEM_PROMPT))
    config.eval = ml_collections.ConfigDict()
    config.eval.math = eval_configs.get_config("greedy")
    config.eval.general = eval_configs.get_config("greedy")
    config.eval.general.update(template="chat", k=1)
    config.eval.general_prompts = 16
    return config


def _to_r1_template(config: ml_collections.ConfigDict, max_new_tokens: int):
    """A GRPO stage config (configs/r1_zero.py's cpu) prompting with R1's template, paid by
    REASONING_REWARDS, answers read strictly."""
    config.data.template = R1_TEMPLATE
    config.rewards = ml_collections.ConfigDict(REASONING_REWARDS)
    config.rewards_params = ml_collections.ConfigDict({"math_accuracy": STRICT_MATH})
    config.eval.update(template=R1_TEMPLATE, reward_params=STRICT_MATH,
                       max_new_tokens=max_new_tokens)
    # R1's system prompt alone is ~90 tokens.
    config.rl.update(max_new_tokens=max_new_tokens, max_prompt_len=160)


def _r1_addition_source(quota: int, max_new_tokens: int) -> ml_collections.ConfigDict:
    """2-digit addition (configs/r1_zero.py's train split) under R1's template, accepted when
    its <answer> verifies and it is in R1's format."""
    source = rejection_sampling.addition(quota=quota)
    source.update(template=R1_TEMPLATE, rules_params={"math_accuracy": STRICT_MATH},
                  skip_filters=("language",), max_new_tokens=max_new_tokens)
    return source


def _cpu(config: ml_collections.ConfigDict):
    config.base.path = common.smollm2_path()
    s = config.stages
    # R1-Zero: the default run (22.5% -> ~70% in 20 steps), evaluated on 100 problems.
    s.r1_zero = r1_zero.get_config("cpu")
    s.r1_zero.eval.max_problems = 100
    # Cold-start data: R1-Zero's verified replies ("40 + 36 = 76") to the prompt it learned on.
    s.cold_start_data = rejection_sampling.base()
    s.cold_start_data.sampling.update(n=4, temperature=0.7, top_p=0.95)
    s.cold_start_data.sources.addition = rejection_sampling.addition(quota=128)
    s.cold_start_data.select.update(per_prompt=1, strategy="shortest", ratio=0.0)
    s.cold_start_sft = rejection_sft.get_config("cpu")
    s.cold_start_sft.train.update(num_steps=20, eval_every=0, checkpoint_every=10)
    s.reasoning_rl = r1_zero.get_config("cpu")
    _to_r1_template(s.reasoning_rl, max_new_tokens=48)
    s.reasoning_rl.train.update(num_steps=10, eval_every=5, checkpoint_every=5)
    s.reasoning_rl.eval.max_problems = 100
    # Stage 3: reasoning rows from the RL model and reused helpfulness answers, 3 : 1.
    s.rejection_sampling = rejection_sampling.base()
    s.rejection_sampling.sampling.update(n=4, temperature=0.7, top_p=0.95)
    s.rejection_sampling.sources.addition = _r1_addition_source(quota=150, max_new_tokens=48)
    s.rejection_sampling.sources.helpful = sources.source_config(
        kind="chat", input=common.shared_data(all_scenario_rl.HELPFUL), format="preference",
        quota=100, responses="reuse", skip_filters=("format",))
    s.rejection_sampling.select.update(per_prompt=2, strategy="shortest", ratio=3.0)
    s.rejection_sft = rejection_sft.get_config("cpu")
    s.rejection_sft.train.update(num_steps=30, eval_every=0, checkpoint_every=10)
    # Reward models: a few steps each (the CPU defaults take 40 steps, 20-25 minutes).
    s.reward_helpful = reward_model.get_config("helpful")
    s.reward_harmless = reward_model.get_config("cpu")
    for rm in (s.reward_helpful, s.reward_harmless):
        rm.reward_model.update(batch_size=4, eval_pairs=48, seq_len=192)
        rm.train.update(num_steps=12, eval_every=12, checkpoint_every=6)
    s.all_scenario_rl = all_scenario_rl.get_config("cpu")
    reasoning = s.all_scenario_rl.mixture.reasoning
    reasoning.data.template = R1_TEMPLATE
    reasoning.rewards = ml_collections.ConfigDict(REASONING_REWARDS)
    reasoning.rewards_params = ml_collections.ConfigDict({"math_accuracy": STRICT_MATH})
    s.all_scenario_rl.data.template = R1_TEMPLATE
    # general_prompts 0: the pipeline's own evaluation scores general responses after the stage
    # (and the measured 39 minutes stay what this variant takes).
    s.all_scenario_rl.eval.update(template=R1_TEMPLATE, reward_params=STRICT_MATH,
                                  max_new_tokens=48, max_problems=50, general_prompts=0)
    s.all_scenario_rl.rl.update(num_generations=4, max_new_tokens=48, max_prompt_len=160)
    s.all_scenario_rl.train.update(num_steps=6, eval_every=3, checkpoint_every=3)
    # Distillation data: the final model's verified addition replies.
    s.distill_data = rejection_sampling.base()
    s.distill_data.sampling.update(n=4, temperature=0.7, top_p=0.95)
    s.distill_data.sources.addition = _r1_addition_source(quota=100, max_new_tokens=48)
    s.distill_data.select.update(per_prompt=2, strategy="shortest", ratio=0.0)
    s.distill = rejection_sft.get_config("cpu")
    s.distill.train.update(num_steps=20, eval_every=0, checkpoint_every=10)
    _eval(config, s.r1_zero.data, max_problems=50, k=4, max_new_tokens=48)
    config.eval.general.update(max_new_tokens=64, batch_size=16)


def _eval(config, data, *, max_problems: int, k: int, max_new_tokens: int):
    """The held-out evaluation every model gets: `data`'s test split under R1's template, k
    samples at R1's evaluation settings (T 0.6, top-p 0.95). The last number counts as the
    answer here (not in training after R1-Zero), so a model that answers right outside R1's
    format still scores; `format` measures the format apart."""
    config.eval.data = ml_collections.ConfigDict(data.to_dict())
    config.eval.math.update(template=R1_TEMPLATE, k=k, pass_ks=(1,), max_problems=max_problems,
                            max_new_tokens=max_new_tokens, batch_size=64,
                            reward_params=dict(sources=("answer", "boxed", "last_number")))
    config.eval.math.sampling.update(temperature=0.6, top_p=0.95)
    config.eval.general_data = common.data_config()
    config.eval.general_data.update(kind="preference", name="alpaca_eval_helpful",
                                    input=common.shared_data(all_scenario_rl.HELPFUL),
                                    test_fraction=0.05, template="chat")


def _tiny_sampling(general: bool) -> ml_collections.ConfigDict:
    """configs/rejection_sampling.py:tiny with every addition reply passing (a random model
    answers nothing right: tests of the wiring only) and no judge; with the general source
    only when `general`."""
    config = rejection_sampling.get_config("tiny")
    if not general:
        del config.sources["helpful"]
    config.sources.addition.update(
        rules={"math_accuracy": 0.0}, judge=False,
        skip_filters=("language", "format", "repetition", "long_paragraph", "code_in_reasoning",
                      "overlong"))
    return config


def _tiny(config: ml_collections.ConfigDict):
    config.base.update(preset="tiny_llama", tokenizer=common.smollm2_path(), vocab_size=49152,
                       max_seq_len=256)
    s = config.stages
    s.r1_zero = r1_zero.get_config("tiny")
    s.r1_zero.train.update(num_steps=2, eval_every=2, checkpoint_every=1)
    s.cold_start_data = _tiny_sampling(general=False)
    s.cold_start_sft = rejection_sft.get_config("tiny")
    s.reasoning_rl = r1_zero.get_config("tiny")
    s.reasoning_rl.train.update(num_steps=2, eval_every=2, checkpoint_every=1)
    s.rejection_sampling = _tiny_sampling(general=True)
    s.rejection_sft = rejection_sft.get_config("tiny")
    s.reward_helpful = reward_model.get_config("tiny")
    s.reward_harmless = reward_model.get_config("tiny")
    for rm in (s.reward_helpful, s.reward_harmless):
        rm.train.update(num_steps=2, eval_every=2, checkpoint_every=1)
    s.all_scenario_rl = all_scenario_rl.get_config("tiny")
    s.all_scenario_rl.train.update(num_steps=2, eval_every=2, checkpoint_every=1)
    s.distill_data = _tiny_sampling(general=False)
    s.distill = rejection_sft.get_config("tiny")
    for name in ("cold_start_sft", "rejection_sft", "distill"):
        s[name].train.update(num_steps=2, eval_every=0, checkpoint_every=1)
    _eval(config, s.r1_zero.data, max_problems=4, k=2, max_new_tokens=8)
    config.eval.math.update(template="plain", batch_size=8)
    config.eval.general.update(max_new_tokens=8, batch_size=4)
    config.eval.general_prompts = 2


def _qwen2_5_7b(config: ml_collections.ConfigDict):
    """Sizes: R1-Zero / reasoning RL / all-scenario RL steps, 16 samples per prompt, 8k-32k
    lengths, the 600k + 200k SFT mix, two epochs of SFT (paper); step counts of the RL stages,
    cold-start size (a few thousand in the paper; ~4k here), RM data (scaled)."""
    config.base.update(path="/path/to/qwen2_5_7b_base", dtype="bfloat16")
    s = config.stages
    s.r1_zero = r1_zero.get_config("qwen2_5_7b")
    s.cold_start_data = rejection_sampling.get_config("qwen2_5_7b")
    for name in ("code", "general"):
        del s.cold_start_data.sources[name]
    s.cold_start_data.sources.math.quota = 4000  # "thousands of cold-start data" (paper)
    s.cold_start_data.select.update(per_prompt=1, ratio=0.0, total=0)
    s.cold_start_sft = cold_start_sft.get_config("qwen2_5_1_5b")
    s.reasoning_rl = r1_zero.get_config("qwen2_5_7b")
    s.reasoning_rl.rewards = ml_collections.ConfigDict(REASONING_REWARDS)
    s.rejection_sampling = rejection_sampling.get_config("qwen2_5_7b")
    s.rejection_sft = rejection_sft.get_config("qwen2_5_7b")
    s.reward_helpful = reward_model.get_config("qwen2_5_1_5b")
    s.reward_harmless = reward_model.get_config("qwen2_5_1_5b")
    s.all_scenario_rl = all_scenario_rl.get_config("qwen2_5_1_5b")
    s.distill_data = rejection_sampling.get_config("qwen2_5_7b")
    s.distill = rejection_sft.get_config("qwen2_5_7b")
    config.students = ml_collections.ConfigDict({"qwen2_5_1_5b": "/path/to/qwen2_5_1_5b"})
    _eval(config, s.reasoning_rl.data, max_problems=500, k=16, max_new_tokens=32768)
    config.eval.general.update(max_new_tokens=4096, batch_size=64)
    config.eval.general_prompts = 256


def _deepseek_v3_16b(config: ml_collections.ConfigDict):
    """The qwen2_5_7b pipeline on a DeepSeek-V3-shaped MoE base (MLA + DeepSeekMoE, ~16B total,
    ~3B active, e.g. Moonlight-16B-A3B; the 671B model needs far more than a v5p-64): routed
    experts split over the `expert` axis with all_to_all dispatch, aux-loss-free balancing kept
    on during training (V3's rate), and GSPO's sequence-level ratio in every RL stage, the
    stable choice for RL on MoE models (GSPO paper). Sizes as qwen2_5_7b (scaled)."""
    _qwen2_5_7b(config)
    config.base.path = "/path/to/deepseek_v3_shaped_16b"
    for name, stage in config.stages.items():
        stage.model.moe_dispatch = "all_to_all"
        kind = plan.STAGES[name].kind
        # Rejection sampling meshes each host's own 4 chips; training meshes all 32.
        stage.mesh.shape = ({"data": 1, "fsdp": 1, "expert": 4, "tensor": 1}
                            if kind in plan.DATA_KINDS else
                            {"data": 1, "fsdp": 4, "expert": 8, "tensor": 1})
        if kind in (*plan.MODEL_KINDS, "reward_model", "distill"):
            stage.optimizer.router_bias_rate = 0.001
        if stage.stage == "grpo":
            stage.rl.update(importance_level="sequence", eps_low=3e-4, eps_high=4e-4)


VARIANTS = {"cpu": _cpu, "tiny": _tiny, "qwen2_5_7b": _qwen2_5_7b,
            "deepseek_v3_16b": _deepseek_v3_16b}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = common.variant_name(arg, VARIANTS, stage="pipeline")
    config = _sections(variant)
    VARIANTS[variant](config)
    return config
