"""Sampling throughput: r1jax's jitted sampler vs `transformers` generate (PyTorch), one run.

Same model (SmolLM2-135M-Instruct from its GGUF, dequantized to float32 on both sides), same 16
chat prompts of different lengths, left-padded, greedy, exactly NEW_TOKENS new tokens per prompt
(no stop token, so both do the same work), float32 on both sides.

  r1jax:        r1jax.sampling.generate (one jitted prefill + while_loop decode); compiled once
                in a warm-up call whose time is reported apart.
  transformers: model.generate(do_sample=False) with an attention mask, after a short warm-up,
                at each of --torch_threads (on a busy host one thread beats two: OpenMP's
                spinning barriers stall when another process holds a core). The best is the peer.

Rounds alternate the two so both see the same machine load; tokens/s come from each side's
fastest round (median also recorded), plus CPU-seconds per token, which load inflates less.
Outputs are compared token for token. Writes benchmarks/results/sampling_cpu.json.

  python benchmarks/sampling.py [--batch=16] [--new_tokens=128] [--rounds=3]

--compare=batching times r1jax's own static batching against continuous batching instead: GSM8K
questions from ../shared/data/gsm8k (chat template), sampled at --temperature with top-p 0.95
up to --new_tokens (default 512 there) with the end-of-turn token as stop, so completion
lengths vary as in real rollouts. Both modes decode --batch samples together. Useful tokens/s
counts generated tokens (up to each one's stop) per second, compilation excluded (measured by
JAX's compile-time events and subtracted; raw figures kept too). Writes
benchmarks/results/sampling_batching_cpu.json; the last line printed is one JSON object with
static_tokens_per_s, continuous_tokens_per_s, speedup and same_samples.

  python benchmarks/sampling.py --compare=batching [--prompts=16 --n=8 --batch=16 --new_tokens=512]
"""
import json
import os
import statistics
import time

import jax
import numpy as np
from absl import app, flags

from host import cpu_name, write_result  # benchmarks/host.py, beside this script.
from configs.common import shared_data
from r1jax import data, models, sampling
from r1jax.models import load_pretrained, load_tokenizer
from r1jax.models.convert import smollm2_gguf_path

_COMPARE = flags.DEFINE_enum("compare", "transformers", ["transformers", "batching"],
                             "transformers: r1jax vs transformers generate; batching: r1jax's "
                             "static vs continuous batching on GSM8K prompts.")
_MODEL = flags.DEFINE_string("model", None, "GGUF file or HF directory (default: SmolLM2 GGUF).")
_BATCH = flags.DEFINE_integer("batch", 16, "Prompts (samples, for --compare=batching) decoded "
                              "together.")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", None, "New tokens per prompt (default 128; "
                                   "512 for --compare=batching, the most per completion).")
_PROMPTS = flags.DEFINE_integer("prompts", 16, "GSM8K questions (--compare=batching).")
_N = flags.DEFINE_integer("n", 8, "Samples per question (--compare=batching), as in GRPO's groups.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.6, "Sampling temperature "
                                  "(--compare=batching; top-p 0.95 as in R1's evaluation).")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timed rounds (each times both implementations).")
_THREADS = flags.DEFINE_list("torch_threads", ["1", str(os.cpu_count())],
                             "PyTorch thread counts to time transformers with (best is reported).")
RESULTS = os.path.join(os.path.dirname(__file__), "results")
_OUTPUT = flags.DEFINE_string("output", None, "Where the JSON result goes (default: "
                              "results/sampling_cpu.json, or sampling_batching_cpu.json).")

QUESTIONS = [
        "What is 12 + 30?", "Name three primary colors.", "Hi!",
        "Write a short story about a robot who learns to paint.",
        "Explain photosynthesis to a ten-year-old.", "What is the capital of France?",
        "Give me three tips for learning a new language quickly and effectively.",
        "Translate 'good morning' into Spanish.", "Why is the sky blue?",
        "List the planets of the solar system in order from the sun.",
        "What is 7 times 8?", "Describe the water cycle in a few sentences.",
        "Suggest a name for a friendly golden retriever puppy.",
        "How do I boil an egg so that the yolk stays soft?", "What does a CPU do?",
        "Write a haiku about autumn leaves falling in the park at dusk.",
]


def chat_prompts(tokenizer, count: int) -> list[list[int]]:
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(count)]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}],
                                             add_generation_prompt=True, tokenize=True)
               for q in questions]
    return [list(p["input_ids"] if hasattr(p, "keys") else p) for p in prompts]


def timed(fn):
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def r1jax_generate(config, params, prompts, new_tokens):
    return sampling.generate(config, params, prompts, max_new_tokens=new_tokens).tokens


def transformers_model(path):
    import transformers
    if os.path.isdir(path):
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(
                os.path.dirname(path), gguf_file=os.path.basename(path), dtype="float32")
    model.generation_config.eos_token_id = None  # Exactly new_tokens per row, as r1jax does.
    return model.eval()


def transformers_generate(model, prompts, new_tokens, threads):
    import torch
    torch.set_num_threads(threads)
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                             do_sample=False, pad_token_id=0)
    return out[:, width:].tolist()


def compare(ours, reference) -> dict:
    """How many rows agree token for token, and where the others first differ."""
    first = [next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), None)
             for x, y in zip(ours, reference)]
    return {"identical_rows": sum(f is None for f in first), "rows": len(ours),
            "first_difference": [f for f in first if f is not None]}


def summary(walls, cpus, tokens) -> dict:
    return {"tokens_per_s": tokens / min(walls),
            "tokens_per_s_median": tokens / statistics.median(walls),
            "seconds": walls, "cpu_seconds_per_token": min(cpus) / tokens}


class CompileClock:
    """Seconds JAX spends tracing, lowering and compiling, from its monitoring events."""

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
              "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")

    def __init__(self):
        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._record)

    def _record(self, event, duration, **_):
        if event in self.EVENTS:
            self.seconds += duration


def gsm8k_prompts(tokenizer, count: int) -> list[list[int]]:
    """The first `count` GSM8K train questions, chat template applied, as token ids."""
    with open(shared_data("gsm8k/train.jsonl")) as f:
        questions = [json.loads(line)["question"] for _, line in zip(range(count), f)]
    return [data.encode_prompt(tokenizer, "chat", q, None)[1] for q in questions]


def compare_batching(path: str) -> None:
    """Static vs continuous batching on GSM8K prompts, useful tokens/s; see the module doc."""
    new_tokens = _NEW_TOKENS.value or 512
    tokenizer = load_tokenizer(path)
    prompts = gsm8k_prompts(tokenizer, _PROMPTS.value)
    config, params = load_pretrained(path)
    clock = CompileClock()
    load_before = os.getloadavg()
    settings = dict(max_new_tokens=new_tokens, temperature=_TEMPERATURE.value, top_p=0.95,
                    stop_tokens=models.stop_tokens(tokenizer), seed=0, batch_size=_BATCH.value,
                    n=_N.value)
    runs = {}
    for batching in ("static", "continuous"):
        compile_before = clock.seconds
        out, wall, cpu = timed(lambda: sampling.generate(config, params, prompts,
                                                         batching=batching, **settings))
        compile_seconds = clock.seconds - compile_before
        tokens = sum(len(t) for t in out.tokens)
        runs[batching] = {
                "out": out, "useful_tokens": tokens, "seconds": wall, "cpu_seconds": cpu,
                "compile_seconds": compile_seconds,
                "tokens_per_s": tokens / (wall - compile_seconds),
                "tokens_per_s_with_compile": tokens / wall}
        print(f"{batching}: {tokens} tokens in {wall:.1f} s ({compile_seconds:.1f} s compiling): "
              f"{runs[batching]['tokens_per_s']:.1f} useful tok/s", flush=True)
    static, continuous = runs["static"]["out"], runs["continuous"]["out"]
    same = static.tokens == continuous.tokens and static.finish_reasons == continuous.finish_reasons
    lengths = [len(t) for t in static.tokens]
    load_after = os.getloadavg()
    busy = max(load_before[0], load_after[0]) > os.cpu_count()
    result = {
            "benchmark": "sampling_batching", "model": os.path.basename(path), "dtype": "float32",
            "prompts": len(prompts), "samples_per_prompt": _N.value,
            "data": "GSM8K train questions, chat template",
            "batch": _BATCH.value, "max_new_tokens": new_tokens,
            "decoding": f"temperature {_TEMPERATURE.value}, top-p 0.95, stop at end of turn",
            "completion_lengths": {"min": min(lengths), "mean": sum(lengths) / len(lengths),
                                   "max": max(lengths), "at_limit": lengths.count(new_tokens)},
            "prompt_lengths": {"min": min(map(len, prompts)), "max": max(map(len, prompts))},
            "device": f"cpu: {cpu_name()}, {os.cpu_count()} cores ({jax.devices()[0].device_kind})",
            "load_average_before_after": [load_before[0], load_after[0]],
            "note": ("measured under load: the load average exceeded the core count (a shared "
                     "machine), so absolute figures are low; both modes ran back to back"
                     if busy else "machine not overloaded"),
            "versions": {"jax": jax.__version__},
            **{name: {k: v for k, v in run.items() if k != "out"} for name, run in runs.items()},
            "speedup": runs["continuous"]["tokens_per_s"] / runs["static"]["tokens_per_s"],
            "same_samples": same,
    }
    write_result(result, _OUTPUT.value or os.path.join(RESULTS, "sampling_batching_cpu.json"))
    print(json.dumps({"static_tokens_per_s": runs["static"]["tokens_per_s"],
                      "continuous_tokens_per_s": runs["continuous"]["tokens_per_s"],
                      "speedup": result["speedup"], "same_samples": same}))


def main(_):
    path = _MODEL.value or smollm2_gguf_path()
    if _COMPARE.value == "batching":
        return compare_batching(path)
    batch, new_tokens = _BATCH.value, _NEW_TOKENS.value or 128
    threads = [int(t) for t in _THREADS.value]
    tokenizer = load_tokenizer(path)
    prompts = chat_prompts(tokenizer, batch)
    config, params = load_pretrained(path)
    model = transformers_model(path)
    load_before = os.getloadavg()

    _, compile_seconds, _ = timed(lambda: r1jax_generate(config, params, prompts, new_tokens))
    for t in threads:
        transformers_generate(model, prompts, 4, t)  # Warm-up: allocator, OpenMP pool.
    ours_walls, ours_cpus = [], []
    peer = {t: ([], []) for t in threads}
    references = {}
    for round_ in range(_ROUNDS.value):
        ours, wall, cpu = timed(lambda: r1jax_generate(config, params, prompts, new_tokens))
        ours_walls.append(wall)
        ours_cpus.append(cpu)
        print(f"round {round_}: r1jax {batch * new_tokens / wall:.1f} tok/s", flush=True)
        for t in threads:
            references[t], wall, cpu = timed(
                    lambda: transformers_generate(model, prompts, new_tokens, t))
            peer[t][0].append(wall)
            peer[t][1].append(cpu)
            print(f"round {round_}: transformers ({t} threads) "
                  f"{batch * new_tokens / wall:.1f} tok/s", flush=True)

    tokens = batch * new_tokens
    r1 = summary(ours_walls, ours_cpus, tokens)
    peers = {t: summary(*peer[t], tokens) for t in threads}
    best = max(peers, key=lambda t: peers[t]["tokens_per_s"])
    agreement = compare(ours, references[best])
    assert all(len(row) == new_tokens for row in ours + references[best])
    result = {
            "benchmark": "sampling", "model": os.path.basename(path), "dtype": "float32",
            "batch": batch, "new_tokens": new_tokens, "decoding": "greedy, no stop token",
            "prompt_lengths": [len(p) for p in prompts],
            "device": f"cpu: {cpu_name()}, {os.cpu_count()} cores ({jax.devices()[0].device_kind})",
            "load_average_before_after": [load_before[0], os.getloadavg()[0]],
            "versions": {"jax": jax.__version__, "torch": __import__("torch").__version__,
                         "transformers": __import__("transformers").__version__},
            "r1jax": {**r1, "compile_and_first_run_seconds": compile_seconds},
            "transformers": {f"{t}_threads": peers[t] for t in threads},
            "transformers_best_threads": best,
            "speedup": r1["tokens_per_s"] / peers[best]["tokens_per_s"],
            "speedup_cpu_seconds": (peers[best]["cpu_seconds_per_token"]
                                    / r1["cpu_seconds_per_token"]),
            "same_outputs": agreement,
    }
    print(f"r1jax:        {r1['tokens_per_s']:.1f} tok/s "
          f"(compile + first run {compile_seconds:.1f} s)")
    for t in threads:
        print(f"transformers: {peers[t]['tokens_per_s']:.1f} tok/s with {t} threads")
    print(f"speedup: {result['speedup']:.2f}x (CPU-seconds per token: "
          f"{result['speedup_cpu_seconds']:.2f}x); identical rows "
          f"{agreement['identical_rows']}/{agreement['rows']}")
    write_result(result, _OUTPUT.value or os.path.join(RESULTS, "sampling_cpu.json"))


if __name__ == "__main__":
    app.run(main)
