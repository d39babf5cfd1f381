"""R1-Zero: GRPO straight from a pretrained model, rule rewards only.

    python -m launch.train --config=configs/r1_zero.py[:VARIANT] --workdir=DIR [--config.k=v ...]

Variants:
  (default) SmolLM2-135M-Instruct learning 2-digit addition on a 2-core CPU in ~8 minutes.
  gspo      the default with GSPO's sequence-level ratio and clip range (3e-4 / 4e-4).
  ppo, ppo_lambda095
            PPO with a value head on the policy's backbone (GAE λ = 1, the R1 paper's setting
            where PPO matched GRPO, and the usual 0.95), same budget and batch as cpu.
  ppo_separate
            ppo (λ = 1) with a separate value model, a copy of the policy, under the head.
  lora      the default run training rank-16 LoRA adapters instead of every weight.
  tiny      a randomly initialised 2-layer model; seconds; for tests and notebooks.
  tiny_moe  a randomly initialised tiny DeepSeek-V3 (MoE) learning 1-digit addition from scratch
            with a 20-token tokenizer; about 70 seconds on 2 CPU cores.
  smollm2   SmolLM2-135M-Instruct on GSM8K (../shared/data) with the R1-Zero template.
  qwen2_5_1_5b, qwen2_5_7b
            the R1 paper's RL settings (see `_paper_recipe` for what matches and what does not)
            on GSM8K, with meshes for one 8×H100 host (`:qwen2_5_1_5b`) and a TPU v5p-64 slice
            (`:qwen2_5_7b`). Set --config.model.path.
"""

import functools

import ml_collections
from ml_collections import config_dict

from configs import common


def _cpu(config: ml_collections.ConfigDict):
    # 2-digit addition, where SmolLM2-135M-Instruct starts near 22% greedy. β = 0 (as DAPO)
    # skips the reference forward pass; 4 prompts × 8 keep a step ~19 s on 2 AVX2 cores.
    config.model.path = common.smollm2_path()
    config.data.update(kind="arithmetic", name="addition_2d",
                       template="chat:{question} Reply with just the number.",
                       generate=dict(operations="+", digits=2, num_train=5000,
                                     num_test=200, seed=0))
    # The prompt asks for a bare number, so the reply's last number is its answer: the one
    # variant where math_accuracy reads last_number (strict answer/boxed elsewhere).
    config.rewards_params.math_accuracy = dict(sources=("answer", "boxed", "last_number"))
    config.eval.reward_params = config.rewards_params.math_accuracy.to_dict()
    config.rl.update(prompts_per_step=4)
    config.optimizer.update(learning_rate=2e-5, warmup_steps=3)
    # 20 steps: about 8 minutes on a 2-core AVX2 CPU (README); accuracy has plateaued by then.
    config.train.update(num_steps=20, eval_every=10, checkpoint_every=10)
    config.eval.update(max_problems=200, max_new_tokens=16)


def _gspo(config: ml_collections.ConfigDict):
    # GSPO (Zheng et al. 2025): one clipped ratio per sequence; the paper's clip range, about
    # 1000× narrower than GRPO's because a sequence ratio is a length-normalised mean.
    _cpu(config)
    config.rl.update(importance_level="sequence", eps_low=3e-4, eps_high=4e-4)


def _ppo(config: ml_collections.ConfigDict, lam: float = 1.0, head: str = "shared"):
    # PPO with a value head on the policy's backbone, on the default task with the same step
    # budget, prompts and learning rate as GRPO. It samples num_generations (8) completions per
    # prompt as GRPO does, so both see the same batch of 4 × 8 rollouts per step; PPO ignores
    # the grouping (its baseline is the learned value). λ = 1 is the R1 paper's setting where
    # PPO came close to GRPO; `ppo_lambda095` has the usual 0.95, which the paper found worse.
    # `ppo_separate`: λ = 1 with a separate value model (a copy of the policy) for the head.
    _cpu(config)
    config.rl.algorithm = "ppo"
    config.rl.value.update(lam=lam, head=head)


def _lora(config: ml_collections.ConfigDict):
    # The default run with rank-16 adapters on every projection (attention and MLP: "LoRA
    # Without Regret", Schulman et al. 2025, finds MLP adapters matter most) and alpha 32, that
    # study's fixed alpha (PEFT's scale alpha / rank = 2). Its sweeps put LoRA's best learning
    # rate about 10x full fine-tuning's, for SFT and RL alike: 10 × the default's 2e-5.
    _cpu(config)
    config.model.lora.update(rank=16, alpha=32.0)
    config.optimizer.update(learning_rate=2e-4)


def _tiny(config: ml_collections.ConfigDict):
    config.model.update(preset="tiny_llama", tokenizer=common.smollm2_path(),
                        vocab_size=49152, max_seq_len=256)
    config.data.update(kind="arithmetic", name="addition_1d", template="plain",
                       generate=dict(operations="+", digits=1, num_train=256,
                                     num_test=32, seed=0))
    config.rl.update(prompts_per_step=8, num_generations=4, max_new_tokens=8, beta=0.04)
    # A random model never answers right; the share of English words in its babble varies,
    # so tests and notebooks see non-zero rewards, advantages and updates.
    config.rewards = ml_collections.ConfigDict({"math_accuracy": 1.0,
                                                "language_consistency": 0.5})
    config.optimizer.update(learning_rate=1e-3, warmup_steps=1)
    config.train.update(num_steps=4, eval_every=2, checkpoint_every=2, log_samples=2)
    config.eval.update(max_problems=8, max_new_tokens=8, batch_size=8)


def _tiny_moe(config: ml_collections.ConfigDict):
    # A random tiny DeepSeek-V3 (MLA, 8 experts top-2, a dense first layer) learning 1-digit
    # addition from scratch: with the 20-token digits tokenizer a random 2-token reply is right
    # a few percent of the time, enough signal for GRPO. Router loads go to metrics.jsonl and
    # the aux-loss-free bias balances them.
    config.model.update(preset="tiny_deepseek_v3", tokenizer=common.digits_tokenizer(),
                        vocab_size=20, max_seq_len=64)
    config.data.update(kind="arithmetic", name="addition_1d", template="plain",
                       generate=dict(operations="+", digits=1, num_train=256,
                                     num_test=32, seed=0))
    config.rewards_params.math_accuracy = dict(sources=("last_number",))
    config.eval.reward_params = config.rewards_params.math_accuracy.to_dict()
    config.rl.update(prompts_per_step=16, num_generations=16, max_new_tokens=2, beta=0.0)
    config.optimizer.update(learning_rate=3e-4, warmup_steps=1, router_bias_rate=1e-3)
    config.train.update(num_steps=400, eval_every=100, checkpoint_every=100, log_samples=2)
    config.eval.update(max_problems=32, max_new_tokens=2, batch_size=32)


def _smollm2(config: ml_collections.ConfigDict):
    config.model.path = common.smollm2_path()
    config.data.update(kind="math", name="gsm8k", input=common.shared_data("gsm8k/train.jsonl"),
                       test_fraction=0.05, template="r1_zero")
    config.rewards = ml_collections.ConfigDict({"math_accuracy": 1.0, "format": 0.2})
    config.rl.update(max_prompt_len=256, max_new_tokens=256, beta=0.001)
    config.optimizer.update(learning_rate=1e-6)
    config.train.update(num_steps=200, eval_every=50, checkpoint_every=50)
    config.eval.update(max_problems=100, max_new_tokens=256)


def _paper_recipe(config: ml_collections.ConfigDict, model: str, mesh: dict):
    """DeepSeek-R1's RL settings (paper v2, Methods): reward = accuracy + format (weights 1:1),
    lr 3e-6, β 0.001, T 1.0, G 16, 32,768 tokens; each rollout is 512 prompts × 16 completions
    split into 16 mini-batches of 32 prompts, one pass (μ = 1); π_ref refreshed every 400
    updates (= 25 rollout steps here). Not the paper's: GSM8K instead of R1's prompt mix, and
    no switch to 65,536 tokens after 8.2k updates."""
    config.model.update(path=f"/path/to/{model}", dtype="bfloat16", max_seq_len=33280)
    config.data.update(kind="math", name="gsm8k", input=common.shared_data("gsm8k/train.jsonl"),
                       test_fraction=0.05, template="r1_zero")
    config.rewards = ml_collections.ConfigDict({"math_accuracy": 1.0, "format": 1.0})
    config.rl.update(prompts_per_step=512, num_generations=16, max_prompt_len=512,
                     max_new_tokens=32768, beta=0.001, ref_update_every=25, num_mini_batches=16,
                     num_micro_batches=8)
    config.optimizer.update(learning_rate=3e-6, warmup_steps=20)
    config.train.update(num_steps=650, eval_every=25, checkpoint_every=5)
    config.eval.update(max_problems=500, k=16, max_new_tokens=32768, batch_size=64,
                       pass_ks=(1, 16))
    config.eval.sampling.update(temperature=0.6, top_p=0.95)
    config.mesh.shape = mesh


VARIANTS = {
    "cpu": _cpu,
    "gspo": _gspo,
    "lora": _lora,
    "ppo": _ppo,
    "ppo_lambda095": functools.partial(_ppo, lam=0.95),
    "ppo_separate": functools.partial(_ppo, head="separate"),
    "tiny": _tiny,
    "tiny_moe": _tiny_moe,
    "smollm2": _smollm2,
    "qwen2_5_1_5b": functools.partial(_paper_recipe, model="qwen2_5_1_5b",
                                      mesh={"data": 1, "fsdp": 8, "tensor": 1}),
    "qwen2_5_7b": functools.partial(_paper_recipe, model="qwen2_5_7b",
                                    mesh={"data": 4, "fsdp": 8, "tensor": 2}),
}



def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = common.variant_name(arg, VARIANTS, stage="r1_zero")
    config = grpo_config(variant)
    VARIANTS[variant](config)
    return config


def grpo_config(variant: str) -> ml_collections.ConfigDict:
    """The GRPO stage's sections and defaults, before a variant's changes (also the base of
    configs/all_scenario_rl.py)."""
    config = common.base_config("grpo", variant)

    config.rl = ml_collections.ConfigDict(dict(
        # grpo | ppo (a learned value head, per-token GAE advantages: rl.value and
        # r1jax/train/grpo.py's module docstring)
        algorithm="grpo",
        prompts_per_step=8,          # prompts sampled per step (R1: 32)
        num_generations=8,           # G completions per prompt (R1: 16)
        max_prompt_len=64,           # longer prompts are dropped and counted
        max_new_tokens=16,
        sampling=common.sampling_config(temperature=1.0),  # R1: 1.0, no top-k / top-p
        # static: one batch of prompts_per_step × G rows, decoded until its longest ends |
        # continuous: num_slots decode slots (0: one per rollout), each refilled with the next
        # sample as its own ends (r1jax/sampling/continuous.py); the same rollouts either way
        batching="static",
        num_slots=0,
        beta=0.0,                    # KL coefficient; 0 skips the reference forward pass
        eps_low=0.2,
        eps_high=0.2,                # > eps_low is DAPO's clip-higher
        # Ratio per token (GRPO) | per sequence (GSPO: exp of the mean log-ratio, clipped as a
        # whole by eps_low / eps_high, which GSPO sets to ~3e-4 / 4e-4) | sequence_token
        # (GSPO-token). See r1jax/losses/grpo.py.
        importance_level="token",
        # Importance-sampling correction of the sampler's truncated (top-k / top-p) distribution
        # or numerics: none | tis (weights min(π_old / π_sampler, is_bound)) | mask (tokens
        # whose ratio exceeds is_bound get weight 0). See r1jax/losses/importance.py.
        is_correction="none",
        is_bound=2.0,                # C (the TIS paper's 2)
        aggregation="sequence_mean",  # | token_mean (DAPO) | dr_grpo
        scale_by_std=True,           # False: Dr. GRPO's unscaled advantages
        num_iterations=1,            # μ: optimisation passes over each rollout batch
        num_mini_batches=1,          # updates per pass
        num_micro_batches=1,         # gradient accumulation inside one update
        ref_update_every=0,          # refresh π_ref from π_θ every N steps (R1: 400); 0 = never
        filter_groups=False,         # DAPO dynamic sampling: replace groups with equal rewards
        max_filter_rounds=2,         # extra sampling rounds to find informative groups
        mask_truncated=False,        # completions cut by max_new_tokens don't count in the loss
        # π_old from the trainer's forward pass instead of the sampler's log-probs; None: when
        # model.dtype is not float32 (bf16 sampling drifts from the trainer: TRL and verl do too)
        recompute_old_logprobs=config_dict.placeholder(bool),
        # Text that ends a completion (cut after sampling); None: the template's ("</answer>"
        # for the R1 templates), () for none
        stop_strings=config_dict.placeholder(tuple),
        # PPO's value model and advantages (read only when algorithm == "ppo"); defaults are
        # TRL's PPOConfig's (vf_coef 0.1, cliprange_value 0.2, gamma 1, lam 0.95).
        value=dict(
            # "shared": a scalar head on the policy's backbone (one forward pass) | "separate":
            # a value model of its own, a copy of the policy's weights at step 0 (2× the
            # parameters and optimizer state, a second forward pass; no LoRA)
            head="shared",
            gamma=1.0,               # discount per token
            lam=0.95,                # GAE's λ (1: Monte-Carlo returns minus the value)
            clip=0.2,                # value clip range around V_old
            coef=0.1,                # value-loss weight in the loss
            whiten_advantages=True,  # (A - mean) / std over the mini-batch's counted tokens
            kl_mode="reward",        # β·KL per token in the rewards | "loss": GRPO's k3 term
        ),
    ))
    # Reward name -> weight; parameters of a reward go under rewards_params.<name>.
    config.rewards = ml_collections.ConfigDict({"math_accuracy": 1.0})
    config.rewards_params = ml_collections.ConfigDict()
    # Prompt sources of all-scenario RL (configs/all_scenario_rl.py): name -> {proportion, data,
    # rewards, rewards_params}; empty: config.data's prompts with config.rewards.
    config.mixture = ml_collections.ConfigDict()
    # Held-out prompts of each mixture source scored by a reward model whose responses (eval
    # sampling, rl.max_new_tokens) are scored at every evaluation: the RM rewards' curve with
    # fixed prompts, beside the noisier rollout means. 0: none.
    config.eval.general_prompts = 0
    return config
