r"""Samples completions from a model for prompts from a file or the command line; writes JSONL.

  python -m launch.sample --model=SmolLM2-135M-Instruct.Q4_1.gguf --prompt="What is 12 + 30?" \
      --output=samples.jsonl [--n=4 --temperature=0.6 --top_p=0.95 --max_new_tokens=512]
  python -m launch.sample --model=Qwen2.5-1.5B-Instruct/ --prompts=questions.jsonl \
      --output=traces.jsonl --template=chat_r1 --n=16 --temperature=1.0 --batching=continuous

--model is a Hugging Face directory (config.json + safetensors) or a .gguf file. --prompts is a
.jsonl file whose lines carry "question" or "prompt" (any "id" is kept), or a text file with one
prompt per line. Each prompt is rendered with --template (default "chat": the tokenizer's chat
template; see r1jax/data/templates.py) and completions stop at the tokenizer's end tokens and at
--stop_strings (default: the template's, "</answer>" for the R1 templates; --stop_strings= for none).

Writes one JSON object per completion, n per prompt, in prompt order:
  {"id", "prompt" (the question as given), "completion" (text), "sample" (0..n-1),
   "finish_reason" ("stop" | "length"), "num_tokens"}
which is the completion format distillation and rejection-sampling SFT read (r1jax/data/jsonl.py).
Lines are written as each chunk of prompts finishes, under a progress bar.
"""
import json
import os
import sys

import tqdm
from absl import app, flags

from launch import cli
from r1jax import data, models, sampling
from r1jax.data import templates

FLAGS = flags.FLAGS
CONTINUOUS_CHUNK_BATCHES = 8  # A chunk of output lines holds this many batches' samples.


def define_flags():
    """The binary's flags; defined only when it runs, so that tests can import this module
    beside other binaries that define --model and --output too."""
    flags.DEFINE_string("model", None, "HF model directory or .gguf file.")
    flags.DEFINE_multi_string("prompt", [], "A prompt (repeatable).")
    flags.DEFINE_string("prompts", None, "A .jsonl file ('question' or 'prompt' per line) or a "
                        "text file (one prompt per line).")
    flags.DEFINE_string("output", None, "The JSONL file to write; '-' for stdout.")
    flags.DEFINE_string("template", "chat", f"One of {templates.TEMPLATE_NAMES} or a format string "
                        "with '{question}' (see r1jax/data/templates.py).")
    flags.DEFINE_string("system", None, "System prompt (chat templates only).")
    flags.DEFINE_list("stop_strings", None, "Texts that end a completion (cut after the first); "
                      "default: the template's (templates.default_stop_strings); empty: none.")
    flags.DEFINE_integer("n", 1, "Completions per prompt.")
    flags.DEFINE_integer("max_new_tokens", 256, "Most tokens per completion.")
    flags.DEFINE_float("temperature", 0.0, "0 is greedy.")
    flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens (0: all).")
    flags.DEFINE_float("top_p", 1.0, "Nucleus mass to keep (1: all).")
    flags.DEFINE_integer("seed", 0, "Sampling seed; chunk i uses seed + i.")
    flags.DEFINE_integer("batch_size", 64, "Completions decoded together (prompts × n).")
    flags.DEFINE_enum("batching", "static", list(sampling.BATCHING),
                      "static: batches decoded until their longest completion ends; continuous: "
                      "slots refilled as completions end (same samples, faster when lengths vary).")
    flags.DEFINE_string("dtype", None, "Compute dtype override, e.g. bfloat16 on accelerators.")
    flags.mark_flags_as_required(["model", "output"])


def read_prompts(path: str | None, inline: list[str]) -> list[dict]:
    """[{"id", "question"}] from a .jsonl or text file, then the --prompt flags.

    Raises:
      ValueError: a JSONL line that is not an object with a string 'question' or 'prompt',
        or no prompts at all.
    """
    records = []
    if path is not None:
        with open(path) as f:
            lines = [line.rstrip("\n") for line in f]
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if not path.endswith(".jsonl"):
                records.append({"id": f"{os.path.basename(path)}-{number}", "question": line})
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not JSON ({e})") from None
            question = row.get("question", row.get("prompt")) if isinstance(row, dict) else None
            if not isinstance(question, str):
                raise ValueError(f"{path}:{number}: expected an object with a string 'question' or "
                                 "'prompt' field")
            records.append({"id": row.get("id", f"{os.path.basename(path)}-{number}"),
                            "question": question})
    records += [{"id": f"prompt-{i}", "question": q} for i, q in enumerate(inline)]
    if not records:
        raise ValueError("no prompts: pass --prompt=... (repeatable) or --prompts=FILE")
    return records


def completion_lines(records: list[dict], out: sampling.Completions, tokenizer, n: int):
    """The output objects of one chunk, n per record, prompt-major."""
    for i, record in enumerate(records):
        for j in range(n):
            tokens = out.tokens[i * n + j]
            yield {"id": record["id"], "prompt": record["question"],
                   "completion": tokenizer.decode(tokens, skip_special_tokens=True), "sample": j,
                   "finish_reason": out.finish_reasons[i * n + j], "num_tokens": len(tokens)}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    records = read_prompts(FLAGS.prompts, FLAGS.prompt)
    overrides = {"dtype": FLAGS.dtype} if FLAGS.dtype else {}
    config, params = models.load_pretrained(FLAGS.model, **overrides)
    tokenizer = models.load_tokenizer(FLAGS.model)
    inputs = [data.encode_prompt(tokenizer, FLAGS.template, r["question"], FLAGS.system)[1]
              for r in records]
    n, stops = FLAGS.n, models.stop_tokens(tokenizer)
    stop_strings = (templates.default_stop_strings(FLAGS.template) if FLAGS.stop_strings is None
                    else tuple(FLAGS.stop_strings))
    per_chunk = max(1, FLAGS.batch_size // max(n, 1))
    if FLAGS.batching == "continuous":
        # Slots drain at the end of each chunk: longer chunks keep them busy for longer.
        per_chunk *= CONTINUOUS_CHUNK_BATCHES
    output = sys.stdout if FLAGS.output == "-" else open(FLAGS.output, "w")
    try:
        with tqdm.tqdm(total=len(records), unit="prompt", desc="sample",
                       disable=FLAGS.output == "-") as bar:
            for chunk, start in enumerate(range(0, len(records), per_chunk)):
                out = sampling.generate(
                        config, params, inputs[start:start + per_chunk],
                        max_new_tokens=FLAGS.max_new_tokens, temperature=FLAGS.temperature,
                        top_k=FLAGS.top_k or None, top_p=FLAGS.top_p if FLAGS.top_p < 1 else None,
                        n=n, stop_tokens=stops, stop_strings=stop_strings, tokenizer=tokenizer,
                        seed=FLAGS.seed + chunk, batch_size=FLAGS.batch_size,
                        batching=FLAGS.batching)
                for line in completion_lines(records[start:start + per_chunk], out, tokenizer, n):
                    output.write(json.dumps(line) + "\n")
                output.flush()
                bar.update(len(out.tokens) // n)
    finally:
        if output is not sys.stdout:
            output.close()


if __name__ == "__main__":
    cli.run(main, define_flags)
