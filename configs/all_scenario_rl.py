"""All-scenario RL (DeepSeek-R1's last stage): GRPO on reasoning and general prompts at once.

    python -m launch.train --config=configs/all_scenario_rl.py[:VARIANT] --workdir=DIR \
        [--config.model.path=RS_SFT_WORKDIR_OR_HF_DIR_OR_GGUF]

Every step mixes prompt sources at fixed proportions (`config.mixture`, r1jax.data.mixture),
each scored by its own rewards: reasoning prompts by rules (math_accuracy, format,
language_consistency); general prompts by reward models, helpfulness on the final answer only
(the reasoning left free) and harmlessness on the whole response. metrics.jsonl has each
source's reward, accuracy, response length and share of empty final answers (`SOURCE/...`);
the held-out accuracy (`accuracy`) is the reasoning source's (config.data). Sampling at T 0.7
as in R1's last stage. model.path: the policy to start from (in the full recipe, the
rejection-sampling SFT workdir).

Variants:
  (default) SmolLM2-135M-Instruct on this 2-core CPU: 2-digit addition (reasoning) with
            AlpacaEval (helpfulness) and HH-RLHF harmless-base (harmlessness) prompts, scored
            by the reward models the CPU defaults of configs/reward_model.py train, read from
            workdirs/reward_model_helpful and workdirs/reward_model_harmless:
              python -m launch.train --config=configs/reward_model.py:helpful \
                  --workdir=workdirs/reward_model_helpful
              python -m launch.train --config=configs/reward_model.py \
                  --workdir=workdirs/reward_model_harmless
  tiny      a random 2-layer policy, seconds; for tests: set both reward-model paths
            (--config.mixture.helpful.rewards_params.helpfulness.path=...,
             --config.mixture.harmless.rewards_params.harmlessness.path=...).
  qwen2_5_1_5b
            pod-sized: a Qwen2.5-1.5B policy (the rejection-sampling SFT checkpoint) on GSM8K
            with the R1 template and general prompts 3 : 1, RMs from --config flags, one 8×H100
            host.
"""
import ml_collections

from configs import common, r1_zero

HARMLESS = "hh_rlhf_harmless/pairs.jsonl"
HELPFUL = "alpaca_eval_helpful/pairs.jsonl"


def _source(proportion: float, rewards: dict, rewards_params: dict,
            **data) -> ml_collections.ConfigDict:
    """One prompt source: its share of each step, its prompts (a data section) and rewards."""
    section = common.data_config()
    section.update(**data)
    return ml_collections.ConfigDict(dict(proportion=proportion, data=section,
                                          rewards=rewards, rewards_params=rewards_params))


def _general(config, proportion: float, helpful_rm: str, harmless_rm: str, template: str):
    """The two general sources: the prompts of the preference files the RMs were trained on
    (the same prepared data sets, name and split, as configs/reward_model.py's)."""
    for source, reward, rm_path, apply_to, name, path in (
            ("helpful", "helpfulness", helpful_rm, "final_answer", "alpaca_eval_helpful", HELPFUL),
            ("harmless", "harmlessness", harmless_rm, "response", "hh_rlhf_harmless", HARMLESS)):
        # normalize: each RM's rewards in units of its held-out spread, so the two and the
        # rules add up on one scale.
        config.mixture[source] = _source(
            proportion / 2, {reward: 1.0},
            {reward: {"reward": "reward_model", "path": rm_path, "apply_to": apply_to,
                      "normalize": True}},
            kind="preference", name=name, input=common.shared_data(path), test_fraction=0.05,
            template=template)


def _reasoning(config, proportion: float, rewards_params: dict, **data):
    """The reasoning source; config.data is the same section (its held-out split is what
    `accuracy` measures)."""
    config.mixture.reasoning = _source(
        proportion, {"math_accuracy": 1.0, "format": 0.1, "language_consistency": 0.1},
        rewards_params, **data)
    config.data = ml_collections.ConfigDict(config.mixture.reasoning.data.to_dict())


def _cpu(config: ml_collections.ConfigDict):
    config.model.path = common.smollm2_path()
    # The prompt asks for a bare number (see configs/r1_zero.py's default): its last number is
    # the answer.
    math_params = dict(sources=("answer", "boxed", "last_number"))
    _reasoning(config, 0.5, {"math_accuracy": math_params},
               kind="arithmetic", name="addition_2d",
               template="chat:{question} Reply with just the number.",
               generate=dict(operations="+", digits=2, num_train=5000, num_test=200, seed=0))
    _general(config, 0.5, "workdirs/reward_model_helpful", "workdirs/reward_model_harmless",
             template="chat")
    config.eval.reward_params = math_params
    config.rl.update(prompts_per_step=4, max_prompt_len=128, max_new_tokens=64)
    config.optimizer.update(learning_rate=2e-5, warmup_steps=3)
    config.train.update(num_steps=20, eval_every=5, checkpoint_every=5)
    config.eval.update(max_problems=100, max_new_tokens=16, general_prompts=24)


def _tiny(config: ml_collections.ConfigDict):
    config.model.update(preset="tiny_llama", tokenizer=common.smollm2_path(),
                        vocab_size=49152, max_seq_len=256)
    _reasoning(config, 0.5, {}, kind="arithmetic", name="addition_1d", template="plain",
               generate=dict(operations="+", digits=1, num_train=256, num_test=32, seed=0))
    _general(config, 0.5, "", "", template="plain")
    config.rl.update(prompts_per_step=8, num_generations=4, max_prompt_len=64, max_new_tokens=8)
    config.optimizer.update(learning_rate=1e-3, warmup_steps=1)
    config.train.update(num_steps=4, eval_every=2, checkpoint_every=2, log_samples=2)
    config.eval.update(max_problems=8, max_new_tokens=8, batch_size=8, general_prompts=2)


def _qwen2_5_1_5b(config: ml_collections.ConfigDict):
    config.model.update(path="/path/to/rejection_sft_workdir", dtype="bfloat16",
                        max_seq_len=8192)
    _reasoning(config, 0.75, {}, kind="math", name="gsm8k",
               input=common.shared_data("gsm8k/train.jsonl"), test_fraction=0.05,
               template="chat_r1")
    _general(config, 0.25, "/path/to/helpfulness_rm", "/path/to/harmlessness_rm",
             template="chat_r1")
    config.rl.update(prompts_per_step=256, num_generations=16, max_prompt_len=512,
                     max_new_tokens=4096, beta=0.001, num_mini_batches=8, num_micro_batches=4)
    config.optimizer.update(learning_rate=3e-6, warmup_steps=10)
    config.train.update(num_steps=400, eval_every=25, checkpoint_every=25)
    config.eval.update(max_problems=500, max_new_tokens=4096, batch_size=64, general_prompts=256)
    config.mesh.shape = {"data": 1, "fsdp": 8, "tensor": 1}


VARIANTS = {"cpu": _cpu, "tiny": _tiny, "qwen2_5_1_5b": _qwen2_5_1_5b}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = common.variant_name(arg, VARIANTS, stage="all_scenario_rl")
    config = r1_zero.grpo_config(variant)
    config.rl.sampling.temperature = 0.7  # R1's last stage
    config.rewards = ml_collections.ConfigDict()  # per source: config.mixture.<name>.rewards
    VARIANTS[variant](config)
    return config
