"""One GRPO training step (rollouts + reward + update): r1jax vs TRL's GRPOTrainer, on CPU.

Both sides train SmolLM2-135M-Instruct from its GGUF (dequantized to float32), in float32, on the
same prompts in the same order, with the same settings: the default R1-Zero config
(configs/r1_zero.py, variant "cpu"). Each step takes 4 prompts of the generated 2-digit addition
set ("What is 47 + 38? Reply with just the number." in the model's chat template), samples 8
completions each (32 per step) of at most 16 new tokens at temperature 1.0 (top-p 1, no top-k),
stopping at the same stop tokens, scores them with r1jax's own `math_accuracy` reward, computes
group advantages (mean-centred, divided by the group's std), and makes one AdamW update (lr 2e-5,
β1 0.9, β2 0.99, no weight decay, gradient clipping at 1.0, 3 warm-up steps) of the clipped
(ε 0.2) GRPO loss averaged per sequence then over sequences, with β = 0 (no reference model) and
one optimisation pass (μ = 1) over the batch as one micro-batch.

  r1jax: `python -m launch.train --config=configs/r1_zero.py --workdir=TMP
         --config.train.num_steps=N --config.eval.max_problems=0`, in a subprocess; per-step
         seconds come from its TMP/metrics.jsonl (`seconds_per_step`: sampling, reward and update,
         up to the update's results on the host; `sample_seconds` + `reward_seconds`: sampling
         and reward).
  TRL:   trl.GRPOTrainer with a matching GRPOConfig (per_device_train_batch_size=32 completions,
         gradient_accumulation_steps=1, so one generation batch of 4 prompts × 8 per optimizer
         step; loss_type "grpo" = sequence mean; scale_rewards "group"; no vLLM; use_cpu; no
         gradient checkpointing), transformers' `generate` for rollouts, --torch_threads threads.
         A TrainerCallback times on_step_begin → on_step_end (generation, reward, forward,
         backward, clipping, optimizer step); rollout + reward time is that of
         `_generate_and_score_completions`.

The prompt token ids TRL renders are checked to equal r1jax's. r1jax runs first, then TRL, never
both at once. The first step of each side (compilation, allocator and thread-pool warm-up) is
reported apart; the summary is the median of the others. The ratio is TRL's median seconds per
step over r1jax's: above 1, r1jax is faster. Both sides sample, so their completions (and their
lengths: the work of a step) differ; each side's mean completion length is recorded. Writes
benchmarks/results/grpo_step_cpu.json.

With --model=tiny both sides train instead a random Llama of 4 layers, width 256 and SmolLM2's
vocabulary and tokenizer (the same weights, saved once as a Hugging Face directory), on 8 prompts
× 4 completions of at most 32 new tokens per step: a small model, whose 49k-vocabulary output
head is most of the step's compute. Writes grpo_step_tiny_cpu.json.

  python benchmarks/grpo_step.py [--model=smollm2|tiny] [--steps=6] [--torch_threads=2]
"""
import copy
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # Everything is local; never ask the hub.
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # configs/ is a directory of the repository, not an installed package.
from host import cpu_name, write_result  # noqa: E402 - benchmarks/host.py, beside this script.

_MODEL = flags.DEFINE_enum("model", "smollm2", ["smollm2", "tiny"],
                           "smollm2: the default R1-Zero config's model and shapes; tiny: a random "
                           "4-layer, width-256 Llama with SmolLM2's vocabulary, 8 prompts x 4, 32 "
                           "new tokens.")
_STEPS = flags.DEFINE_integer("steps", 6, "Training steps per side; the first is warm-up.")
_THREADS = flags.DEFINE_integer("torch_threads", os.cpu_count(), "PyTorch threads for TRL.")
_OUTPUT = flags.DEFINE_string(
        "output", None,
        "Where the JSON result goes (default: benchmarks/results/grpo_step_cpu.json, "
        "grpo_step_tiny_cpu.json with --model=tiny).")

CONFIG = "configs/r1_zero.py"
# --model=tiny: the shapes and step settings both sides use (config key -> value).
TINY = {"rl.prompts_per_step": 8, "rl.num_generations": 4, "rl.max_new_tokens": 32}


def tiny_model_dir(tokenizer_path: str, seed: int) -> str:
    """A random Llama (4 layers, width 256, SmolLM2's vocabulary) and SmolLM2's tokenizer, saved
    as a Hugging Face directory both sides load."""
    import torch
    import transformers
    from r1jax.models import load_tokenizer
    tokenizer = load_tokenizer(tokenizer_path)
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    path = tempfile.mkdtemp(prefix="grpo_step_tiny_")
    transformers.LlamaForCausalLM(config).to(torch.float32).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def overrides(model_dir: str | None) -> dict:
    """The config keys --model changes: none for smollm2; the tiny shapes and model dir."""
    return {} if model_dir is None else {**TINY, "model.path": model_dir}


def summary(seconds: list[float], rollout_seconds: list[float], lengths: list[float],
            rewards: list[float]) -> dict:
    """Per-step lists, and medians over the steps after the first."""
    timed = slice(1, None)
    med = lambda xs: statistics.median(xs[timed]) if len(xs) > 1 else float("nan")
    updates = [s - r for s, r in zip(seconds, rollout_seconds)]
    return {"seconds_per_step": seconds, "rollout_and_reward_seconds": rollout_seconds,
            "update_seconds": updates, "completion_length": lengths, "reward_mean": rewards,
            "first_step_seconds": seconds[0],
            "median_seconds_per_step": med(seconds),
            "mean_seconds_per_step": (statistics.mean(seconds[timed]) if len(seconds) > 1
                                      else float("nan")),
            "median_rollout_and_reward_seconds": med(rollout_seconds),
            "median_update_seconds": med(updates),
            "mean_completion_length": (statistics.mean(lengths[timed]) if len(lengths) > 1
                                       else float("nan"))}


# ---------------------------------------------------------------------------------------------
# r1jax: the trainer itself, in a subprocess.
# ---------------------------------------------------------------------------------------------

def run_r1jax(steps: int, changes: dict) -> dict:
    workdir = tempfile.mkdtemp(prefix="grpo_step_r1jax_")
    command = [sys.executable, "-m", "launch.train", f"--config={CONFIG}",
               f"--workdir={workdir}", f"--config.train.num_steps={steps}",
               "--config.eval.max_problems=0",
               *(f"--config.{key}={value}" for key, value in changes.items())]
    try:
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-8000:])
            raise RuntimeError(f"r1jax training failed (exit {done.returncode}): {command}")
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = sorted((r for r in rows if "seconds_per_step" in r), key=lambda r: r["step"])
    if len(rows) != steps:
        raise RuntimeError(f"r1jax logged {len(rows)} training steps, expected {steps}")
    for r in rows:
        print(f"r1jax step {r['step']}: {r['seconds_per_step']:.2f} s "
              f"(rollouts + reward {r['sample_seconds'] + r['reward_seconds']:.2f} s), "
              f"mean length {r['completion_length']:.2f}, reward {r['reward_mean']:.3f}",
              flush=True)
    result = summary([r["seconds_per_step"] for r in rows],
                     [r["sample_seconds"] + r["reward_seconds"] for r in rows],
                     [r["completion_length"] for r in rows], [r["reward_mean"] for r in rows])
    shown = ["python"] + [("--workdir=TMP" if c == f"--workdir={workdir}" else c)
                          for c in command[1:]]
    return {"command": " ".join(shown), "total_wall_seconds": wall, **result}


# ---------------------------------------------------------------------------------------------
# TRL: GRPOTrainer in this process.
# ---------------------------------------------------------------------------------------------

def r1jax_prompts(config, tokenizer, steps: int):
    """The records and prompt token ids r1jax's trainer takes in its first `steps` steps."""
    from r1jax import data
    iterator = data.PromptIterator(
            config.data, tokenizer, global_batch_size=config.rl.prompts_per_step,
            max_prompt_len=config.rl.max_prompt_len, seed=config.data.seed)
    records, token_ids = [], []
    for _ in range(steps):
        r, ids = next(iterator)
        records += r
        token_ids += ids
    return records, token_ids


def user_message(template: str, question: str) -> str:
    """The user's message a "chat:..." template puts in the chat template (templates.py)."""
    from r1jax.data import templates
    if not template.startswith(templates.CHAT_FORMAT_PREFIX):
        raise ValueError(f"expected a 'chat:' template, got {template!r}")
    return template[len(templates.CHAT_FORMAT_PREFIX):].replace("{question}", question)


def trainable_model(path: str):
    """transformers' SmolLM2 from the GGUF, as a plain float32 model.

    transformers dequantizes a GGUF to float32 but keeps the model marked as quantized, and
    Trainer refuses to fine-tune a quantized model; the same weights go into an unmarked model.
    """
    import torch
    import transformers
    if os.path.isdir(path):  # --model=tiny's directory: a plain float32 model already.
        return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    gguf = transformers.AutoModelForCausalLM.from_pretrained(
            os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)
    config = copy.deepcopy(gguf.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf.state_dict())  # Strict: every weight, nothing left random.
    model.generation_config = copy.deepcopy(gguf.generation_config)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return model


def run_trl(config, steps: int, threads: int) -> dict:
    import datasets
    import torch
    import transformers
    import trl
    from r1jax import rewards
    from r1jax.models import stop_tokens
    from r1jax.models import load_tokenizer

    rl, opt = config.rl, config.optimizer
    path = config.model.path
    torch.set_num_threads(threads)
    torch.manual_seed(config.train.seed)
    tokenizer = load_tokenizer(path)  # transformers' tokenizer of the GGUF, as r1jax's trainer.
    records, token_ids = r1jax_prompts(config, tokenizer, steps)
    messages = [[{"role": "user", "content": user_message(config.data.template, r["question"])}]
                for r in records]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                             return_dict=True)["input_ids"]
    if [list(ids) for ids in rendered] != token_ids:
        raise AssertionError("TRL's chat-template prompts differ from r1jax's prompt tokens")
    dataset = datasets.Dataset.from_list(
            [{"prompt": m, "answer": r["answer"]} for m, r in zip(messages, records)])

    model = trainable_model(path)
    model.generation_config.eos_token_id = list(stop_tokens(tokenizer))  # r1jax's stop tokens.

    score = rewards.get("math_accuracy")

    def math_accuracy(prompts, completions, answer, **_):
        """r1jax's reward on the completions' text; NaN (failed to score) counts 0, as in
        r1jax.rewards.combine."""
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [0.0 if math.isnan(s) else s for s in score(prompts, texts, answer=answer)]

    timings = {"step": [], "rollout": [], "logs": [], "threads": []}

    class StepTimer(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            timings["threads"].append(torch.get_num_threads())
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            timings["step"].append(time.perf_counter() - self.start)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                timings["logs"].append(dict(logs))
                print(f"TRL step {state.global_step}: {timings['step'][-1]:.2f} s (rollouts + "
                      f"reward {timings['rollout'][-1]:.2f} s), mean length "
                      f"{logs['completions/mean_length']:.2f}, reward {logs['reward']:.3f}",
                      flush=True)

    class TimedGRPOTrainer(trl.GRPOTrainer):
        def _generate_and_score_completions(self, *args, **kwargs):
            start = time.perf_counter()
            out = super()._generate_and_score_completions(*args, **kwargs)
            timings["rollout"].append(time.perf_counter() - start)
            return out

    outdir = tempfile.mkdtemp(prefix="grpo_step_trl_")
    args = trl.GRPOConfig(
            output_dir=outdir, max_steps=steps, seed=config.train.seed, data_seed=config.data.seed,
            per_device_train_batch_size=rl.prompts_per_step * rl.num_generations,
            gradient_accumulation_steps=1, num_generations=rl.num_generations,
            max_completion_length=rl.max_new_tokens, temperature=rl.sampling.temperature,
            top_p=rl.sampling.top_p or 1.0, top_k=rl.sampling.top_k, beta=rl.beta,
            num_iterations=rl.num_iterations,
            epsilon=rl.eps_low, epsilon_high=rl.eps_high, loss_type="grpo",
            scale_rewards="group" if rl.scale_by_std else "none",
            mask_truncated_completions=rl.mask_truncated,
            learning_rate=opt.learning_rate, adam_beta1=opt.b1, adam_beta2=opt.b2,
            weight_decay=opt.weight_decay, max_grad_norm=opt.clip_norm,
            lr_scheduler_type="constant_with_warmup", warmup_steps=opt.warmup_steps,
            shuffle_dataset=False,  # The dataset is already in r1jax's order.
            use_vllm=False, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
            logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
            dataloader_num_workers=0)
    try:
        trainer = TimedGRPOTrainer(model=model, reward_funcs=[math_accuracy], args=args,
                                   train_dataset=dataset, processing_class=tokenizer,
                                   callbacks=[StepTimer()])
        trainer.remove_callback(transformers.PrinterCallback)  # Our own line per step instead.
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    finally:
        shutil.rmtree(outdir, ignore_errors=True)
    if not len(timings["step"]) == len(timings["rollout"]) == len(timings["logs"]) == steps:
        raise RuntimeError(f"TRL ran {len(timings['step'])} steps, "
                           f"{len(timings['rollout'])} generations, expected {steps}")
    result = summary(timings["step"], timings["rollout"],
                     [l["completions/mean_length"] for l in timings["logs"]],
                     [l["reward"] for l in timings["logs"]])
    return {"torch_threads": sorted(set(timings["threads"])), "total_wall_seconds": wall,
            "eos_token_ids": trainer.eos_token_ids, **result}, records, token_ids


def main(_):
    import jax
    import torch
    import transformers
    import trl
    from configs import r1_zero

    steps, threads = _STEPS.value, _THREADS.value
    if steps < 2:
        raise app.UsageError("--steps must be at least 2 (the first is warm-up)")
    config = r1_zero.get_config()
    model_dir = (tiny_model_dir(config.model.path, config.train.seed) if _MODEL.value == "tiny"
                 else None)
    changes = overrides(model_dir)
    for key, value in changes.items():
        section, name = key.split(".")
        config[section][name] = value
    rl = config.rl
    load = [os.getloadavg()[0]]

    try:
        print(f"r1jax: {steps} steps of {CONFIG} {changes} ...", flush=True)
        ours = run_r1jax(steps, changes)
        load.append(os.getloadavg()[0])
        print(f"TRL {trl.__version__}: {steps} steps with {threads} torch threads ...", flush=True)
        peer, records, token_ids = run_trl(config, steps, threads)
        load.append(os.getloadavg()[0])
    finally:
        if model_dir is not None:
            shutil.rmtree(model_dir, ignore_errors=True)

    ratio = peer["median_seconds_per_step"] / ours["median_seconds_per_step"]
    result = {
            "benchmark": "grpo_step",
            "model": ("random Llama: 4 layers, width 256, 4 heads (2 KV), SmolLM2 vocabulary"
                      if model_dir else os.path.basename(config.model.path)),
            "dtype": "float32",
            "device": f"cpu: {cpu_name()}, {os.cpu_count()} cores",
            "load_average_before_between_after": load,
            "versions": {"jax": jax.__version__, "torch": torch.__version__,
                         "transformers": transformers.__version__, "trl": trl.__version__,
                         "python": platform.python_version()},
            "settings": {
                    "config": CONFIG, "overrides": {k: v for k, v in changes.items()
                                                    if k != "model.path"},
                    "data": config.data.name,
                    "template": config.data.template,
                    "prompts_per_step": rl.prompts_per_step,
                    "num_generations": rl.num_generations,
                    "completions_per_step": rl.prompts_per_step * rl.num_generations,
                    "max_new_tokens": rl.max_new_tokens, **rl.sampling.to_dict(), "beta": rl.beta,
                    "epsilon": [rl.eps_low, rl.eps_high], "num_iterations": rl.num_iterations,
                    "aggregation": f"{rl.aggregation} (TRL loss_type 'grpo')",
                    "scale_rewards_by_std": rl.scale_by_std,
                    "reward": dict(config.rewards),
                    "optimizer": dict(config.optimizer),
                    "steps": steps, "warm_up_steps_excluded": 1, "torch_threads": threads,
                    "prompt_tokens": [len(ids) for ids in token_ids],
            },
            "questions_per_step": [[r["question"] for r in records[i:i + rl.prompts_per_step]]
                                   for i in range(0, len(records), rl.prompts_per_step)],
            "r1jax": ours,
            "trl": peer,
            "ratio_trl_over_r1jax_seconds_per_step": ratio,
            "ratio_rollout_and_reward": (peer["median_rollout_and_reward_seconds"]
                                         / ours["median_rollout_and_reward_seconds"]),
            "ratio_update": peer["median_update_seconds"] / ours["median_update_seconds"],
            "notes": [
                    "Both sides sample; completions, their lengths and rewards differ, so the "
                    "work per step differs (see mean_completion_length).",
                    "r1jax prefills each prompt once and samples its 8 completions from it; TRL "
                    "repeats each prompt 8 times and prefills all 32 rows.",
                    "r1jax's step time stops when the update's metrics reach the host; TRL's "
                    "is on_step_begin to on_step_end. Neither includes logging or checkpoints.",
                    "r1jax (XLA) uses every core; TRL runs with torch_threads threads.",
                    "Learning-rate warm-up: r1jax's step 1 uses lr/3, HF's constant_with_warmup "
                    "uses 0; it changes no timing.",
            ],
    }
    print()
    print(f"{'':8}{'s/step':>9}{'rollouts+reward':>17}{'update':>9}{'mean len':>10}"
          f"{'first step':>12}")
    for name, side in (("r1jax", ours), ("TRL", peer)):
        print(f"{name:8}{side['median_seconds_per_step']:9.2f}"
              f"{side['median_rollout_and_reward_seconds']:17.2f}"
              f"{side['median_update_seconds']:9.2f}{side['mean_completion_length']:10.2f}"
              f"{side['first_step_seconds']:12.2f}")
    print(f"(medians of steps 2..{steps}; seconds)")
    print(f"TRL / r1jax seconds per step: {ratio:.2f}x (>1: r1jax is faster); rollouts + reward "
          f"{result['ratio_rollout_and_reward']:.2f}x, update {result['ratio_update']:.2f}x")
    print(f"load average before / between / after: "
          f"{' / '.join(f'{x:.2f}' for x in load)}")
    write_result(result, _OUTPUT.value or os.path.join(
        ROOT, "benchmarks", "results",
        "grpo_step_tiny_cpu.json" if model_dir else "grpo_step_cpu.json"))


if __name__ == "__main__":
    app.run(main)
