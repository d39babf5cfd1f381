r"""Time of the rule rewards of one training step: math_accuracy + format + language_consistency.

Completions are built from GSM8K train worked solutions (the first NUM_COMPLETIONS rows), in the
forms a policy writes: `<think>…</think><answer>…</answer>`, `\boxed{}` and a plain last number,
one in four with a wrong answer. Timed after a warm-up call (imports), each call with the
rewards' own caches emptied (a new step's completions are new):

  r1jax:  r1jax.rewards.combine({"math_accuracy": 1, "format": 0.5, "language_consistency": 0.5})
          on that batch, and each reward alone;
  latex:  math_accuracy when every answer is LaTeX (`\frac{2n}{2}`), so none takes the exact
          plain-number path and all go through math-verify's sympy;
  peer:   the accuracy reward of open-r1 / TRL examples: math_verify.verify(parse(gold),
          parse(whole completion)) per completion.

Prints seconds per batch and milliseconds per completion (median of REPEATS); writes
benchmarks/results/rewards_cpu.json.

  python benchmarks/rewards.py [--num_completions=1024] [--repeats=5]
"""
import json
import os
import platform
import statistics
import time

from absl import app, flags

from r1jax import rewards
from r1jax.rewards import language
from r1jax.rewards import math as math_reward

_NUM = flags.DEFINE_integer("num_completions", 1024, "Completions per batch.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per measurement (median reported).")
_DATA = flags.DEFINE_string("data", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                 "gsm8k", "train.jsonl"), "GSM8K JSONL file.")
_OUTPUT = flags.DEFINE_string("output", os.path.join(os.path.dirname(__file__), "results", "rewards_cpu.json"),
                              "Where the JSON result goes.")
SPECS = {"math_accuracy": 1.0, "format": 0.5, "language_consistency": 0.5}


def completion(solution: str, final: str, form: int) -> str:
    """A worked solution rewritten to end in `final`, in answer form `form` (0, 1, 2)."""
    reasoning = solution.rpartition("####")[0].strip()
    return (f"<think>\n{reasoning}\n</think>\n<answer>{final}</answer>",
            f"{reasoning}\nSo the answer is $\\boxed{{{final}}}$.",
            f"{reasoning}\nSo the answer is {final}.")[form]


def batch(rows: list[dict], latex: bool = False) -> tuple[list[str], list[str], list[str]]:
    """(prompts, completions, answers); every 4th answer is off by one."""
    prompts, completions, answers = [], [], []
    for i, row in enumerate(rows):
        gold = int(math_reward.gold_answer(row["answer"]).replace(",", ""))
        value = gold + 1 if i % 4 == 3 else gold
        final = f"\\frac{{{2 * value}}}{{2}}" if latex else str(value)
        prompts.append(row["question"])
        completions.append(completion(row["answer"], final, 0 if latex else i % 3))
        answers.append(row["answer"])
    return prompts, completions, answers


def clear_caches() -> None:
    """Empties the rewards' caches (parsed answers, prompt languages), so that each timed call
    sees new completions as a training step does."""
    math_reward._parsed_gold.cache_clear()
    math_reward._sympy_equal.cache_clear()
    language.detect_language.cache_clear()


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls of fn(), each on cold caches (after one warm-up call
    for imports and sympy's own caches)."""
    fn()
    times = []
    for _ in range(repeats):
        clear_caches()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peer_accuracy(completions: list[str], answers: list[str]) -> list[float]:
    """open-r1's accuracy reward: math-verify on the whole completion."""
    import math_verify

    return [float(math_verify.verify(math_verify.parse(math_reward.gold_answer(a)), math_verify.parse(c)))
            for c, a in zip(completions, answers)]


def main(argv):
    del argv
    with open(_DATA.value) as f:
        rows = [json.loads(line) for _, line in zip(range(_NUM.value), f)]
    n = len(rows)
    prompts, completions, answers = batch(rows)
    fields = {"answer": answers}
    timings = {"combined": median_seconds(lambda: rewards.combine(SPECS, prompts, completions, fields),
                                          _REPEATS.value)}
    for name in SPECS:
        fn = rewards.get(name)
        timings[name] = median_seconds(lambda fn=fn: fn(prompts, completions, **fields), _REPEATS.value)
    latex_prompts, latex_completions, latex_answers = batch(rows, latex=True)
    math_fn = rewards.get("math_accuracy")
    timings["math_accuracy_latex"] = median_seconds(
        lambda: math_fn(latex_prompts, latex_completions, answer=latex_answers), _REPEATS.value)
    timings["peer_math_verify_whole_completion"] = median_seconds(
        lambda: peer_accuracy(completions, answers), max(1, _REPEATS.value // 2))

    _, metrics = rewards.combine(SPECS, prompts, completions, fields)
    for name, seconds in timings.items():
        print(f"{name:36s} {seconds:8.3f} s / {n} completions = {1000 * seconds / n:7.3f} ms each")
    print("metrics:", {k: round(v, 4) for k, v in metrics.items()})
    result = {
        "what": "rule rewards on GSM8K-derived completions (median wall seconds per batch)",
        "device": f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "num_completions": n,
        "seconds": timings,
        "ms_per_completion": {k: 1000 * v / n for k, v in timings.items()},
        "metrics": metrics,
    }
    os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
    with open(_OUTPUT.value, "w") as f:
        json.dump(result, f, indent=2)
    print("wrote", _OUTPUT.value)


if __name__ == "__main__":
    app.run(main)
