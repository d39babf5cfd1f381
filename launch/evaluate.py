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
from r1jax import checkpoint, models, rewards
from r1jax.errors import UserError
from r1jax.data import builders, jsonl
from r1jax.eval import evaluate as evaluation

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


def checkpoint_location(path: str) -> tuple[str, int | None] | None:
    """(workdir, step) when `path` is an r1jax workdir (step None: newest) or WORKDIR/checkpoints/STEP."""
    if os.path.isdir(os.path.join(path, checkpoint.CHECKPOINT_DIR)):
        return path, None
    parent, step = os.path.split(os.path.normpath(path))
    if os.path.basename(parent) == checkpoint.CHECKPOINT_DIR and step.isdigit():
        return os.path.dirname(parent), int(step)
    return None


def load_model(path: str, tokenizer_path: str | None = None):
    """Loads the model and tokenizer that --model and --tokenizer name.

    Returns:
      (model config, params, tokenizer, step): step is the checkpoint step for a workdir, else None.

    Raises:
      FileNotFoundError: the path, or a checkpoint in a workdir, does not exist.
      ValueError: a workdir or checkpoint without tokenizer_path.
    """
    location = checkpoint_location(path)
    if location is None:
        if not os.path.exists(path):
            raise FileNotFoundError(f"--model={path} does not exist: expected a Hugging Face model directory, "
                                    "a .gguf file, an r1jax workdir or WORKDIR/checkpoints/STEP")
        config, params = models.load_pretrained(path)
        return config, params, models.load_tokenizer(tokenizer_path or path), None
    workdir, step = location
    saved_tokenizer = os.path.join(workdir, checkpoint.TOKENIZER_DIR)
    if tokenizer_path is None and os.path.isdir(saved_tokenizer):
        tokenizer_path = saved_tokenizer
    if tokenizer_path is None:
        raise ValueError(f"--model={path}: the workdir has no {checkpoint.TOKENIZER_DIR}/ (written by "
                         "launch/train.py): pass --tokenizer (the model directory or .gguf file training "
                         "started from)")
    step = checkpoint.latest_step(workdir) if step is None else step
    if step is None:
        raise FileNotFoundError(f"--model={path}: the workdir has no complete checkpoint in "
                                f"{os.path.join(workdir, checkpoint.CHECKPOINT_DIR)}")
    config, params = checkpoint.restore_params(workdir, step)  # Names the available steps if `step` is absent.
    return config, params, models.load_tokenizer(tokenizer_path), step


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
