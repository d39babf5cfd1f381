r"""Evaluates a model on a benchmark: pass@1 over k samples, unbiased pass@k, cons@k.

  python -m launch.evaluate --config=configs/eval.py:r1 --model=Qwen2.5-1.5B-Instruct/ \
      --data=aime24.jsonl --output_dir=/tmp/eval [--config.max_new_tokens=4096]

--model is a Hugging Face directory (config.json + safetensors), a .gguf file, an r1jax training
workdir (its newest checkpoint is evaluated) or one checkpoint, WORKDIR/checkpoints/STEP; a workdir
or checkpoint uses the tokenizer the trainer saved in WORKDIR/tokenizer (or --tokenizer).
--data is a JSONL file (GSM8K, MATH or {question, answer} lines for math; {prompt, tests} for
code; see r1jax/data/jsonl.py) or the name of a data set prepared with launch/data.py, read from
--data_dir, split --split.

Writes OUTPUT_DIR/summary.json (metrics and settings) and OUTPUT_DIR/problems.jsonl (per problem:
the prompt text given to the model, completions, extracted answers, scores, correctness), and
prints the metrics as a table.
"""
import json
import os

from absl import flags
from ml_collections import config_flags

from launch import cli
from r1jax import rewards
from r1jax.errors import UserError
from r1jax.data import builders, jsonl
from r1jax.eval import evaluate as evaluation
from r1jax.models.policy import load_model

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags; defined only when it runs, so that tests can import this module
    beside other binaries that define --model and --output_dir too."""
    config_flags.DEFINE_config_file("config", None, "configs/eval.py:<variant>.")
    flags.DEFINE_string("model", None, "HF model directory, .gguf file, r1jax workdir or "
                        "checkpoint.")
    flags.DEFINE_string("tokenizer", None, "Tokenizer (HF directory or .gguf); default: --model. "
                        "Required for an r1jax workdir or checkpoint.")
    flags.DEFINE_string("data", None, "A .jsonl file, or a prepared data set's name.")
    flags.DEFINE_string("data_dir", None, "Directory of prepared data sets (when --data is a "
                        "name).")
    flags.DEFINE_string("split", "test", "Split of a prepared data set.")
    flags.DEFINE_string("output_dir", None, "Where summary.json and problems.jsonl go.")
    flags.mark_flags_as_required(["model", "data", "output_dir"])


# The r1jax.data.jsonl record kind of a JSONL file's lines, per reward; math for the others.
RECORD_KINDS = {"code": "code"}


def load_problems(data: str, reward: str, data_dir: str | None = None, split: str = "test") -> list[dict]:
    """The problems of a JSONL file (validated line by line) or of a prepared data set's split.

    Raises:
      ValueError: an unknown reward, a bad line ("FILE:LINE: missing field 'answer' ...") or a
        data set name without data_dir.
      FileNotFoundError: no such file or prepared data set.
    """
    if reward not in rewards.names():  # Before the data and model load, not after.
        raise ValueError(f"unknown reward {reward!r}; registered rewards: {', '.join(rewards.names())}")
    if data.endswith(".jsonl") or os.path.isfile(data):
        if not os.path.isfile(data):
            raise FileNotFoundError(f"--data={data}: no such file")
        return jsonl.read_records(data, RECORD_KINDS.get(reward, "math"))
    if data_dir is None:
        raise ValueError(f"--data={data} is not a file, so it names a prepared data set: pass --data_dir too")
    return list(builders.load(data, data_dir, split))


def format_table(summary: dict) -> str:
    """The scalar entries of a summary as a two-column text table."""
    rows = [(key, f"{value:.4f}" if isinstance(value, float) else str(value))
            for key, value in summary.items() if isinstance(value, (int, float, str))]
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)


def write_results(output_dir: str, summary: dict, per_problem: list[dict]) -> None:
    """OUTPUT_DIR/summary.json and OUTPUT_DIR/problems.jsonl (one JSON object per problem)."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(output_dir, "problems.jsonl"), "w") as f:
        for problem in per_problem:
            f.write(json.dumps(problem, ensure_ascii=False) + "\n")


def main(argv):
    del argv
    config = FLAGS.config
    if config is None:
        raise UserError("pass --config=configs/eval.py:<variant> (greedy, r1 or tiny)")
    # The data first: a bad file should not cost a model load.
    problems = load_problems(FLAGS.data, config.reward, FLAGS.data_dir, FLAGS.split)
    model_config, params, tokenizer, step = load_model(FLAGS.model, FLAGS.tokenizer)
    summary, per_problem = evaluation.evaluate_with_config(model_config, params, tokenizer, problems, config)
    summary = {**summary, "model": FLAGS.model, "checkpoint_step": step, "data": FLAGS.data,
               "config": config.to_dict()}
    write_results(FLAGS.output_dir, summary, per_problem)
    print(format_table(summary))
    print(f"wrote {os.path.join(FLAGS.output_dir, 'summary.json')} and problems.jsonl")


if __name__ == "__main__":
    cli.run(main, define_flags)
