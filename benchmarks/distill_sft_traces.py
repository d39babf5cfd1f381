"""SFT distillation's side of the on-policy vs SFT comparison at equal teacher forward tokens
(README, "GRPO's relatives"): the teacher's greedy traces on training prompts, cut at a teacher
token budget, and the held-out accuracy of any model with the R1-Zero default's evaluation.

  # 1. the teacher's traces until --budget teacher forward tokens (prompt + completion):
  python benchmarks/distill_sft_traces.py --mode=traces --model=TEACHER_WORKDIR \
      --budget=TOKENS --output=DIR
  # 2. SFT on DIR/traces.jsonl: configs/distill.py (default variant) with --config.data.input
  # 3. held-out accuracy, the trainers' evaluation (200 problems, greedy):
  python benchmarks/distill_sft_traces.py --mode=eval --model=WORKDIR_OR_HF_DIR --output=DIR

Traces and evaluation use configs/r1_zero.py's default task, template and evaluation settings,
so the accuracy equals what the trainers log (the base student's 22.5% is the check). Writes
DIR/traces.jsonl + DIR/traces.json (mode traces) or DIR/eval.json (mode eval).
"""
import json
import os
import sys

import ml_collections
from absl import app, flags

# configs/ is a directory of the repository, not an installed package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import distill as distill_configs
from configs import r1_zero
from r1jax import data
from r1jax.data import pipeline
from r1jax.eval import evaluate as eval_lib
from r1jax.train import distill

_MODE = flags.DEFINE_enum("mode", None, ["traces", "eval"], "What to do.")
_MODEL = flags.DEFINE_string("model", None, "r1jax workdir (newest checkpoint), HF dir or .gguf.")
_TOKENIZER = flags.DEFINE_string("tokenizer", "", "Default: WORKDIR/tokenizer or --model.")
_BUDGET = flags.DEFINE_integer("budget", 0, "Teacher forward tokens the traces may cost.")
_PROBLEMS = flags.DEFINE_integer("problems", 600, "Training problems the teacher answers "
                                 "(the traces are their prefix within --budget).")
_OUTPUT = flags.DEFINE_string("output", None, "Output directory.")


def settings(config: ml_collections.ConfigDict, limit) -> ml_collections.ConfigDict:
    """The trainers' evaluation settings (train/held_out.evaluate), on `limit` problems."""
    out = ml_collections.ConfigDict(config.eval.to_dict())
    out.template = out.template or config.data.template
    out.system = out.system or config.data.system or None
    out.max_problems = limit
    return out


def main(_):
    config = r1_zero.get_config("")
    section = distill_configs.teacher_config()
    section.update(path=_MODEL.value, tokenizer=_TOKENIZER.value)
    model_config, params, tokenizer = distill.load_teacher(section)
    os.makedirs(_OUTPUT.value, exist_ok=True)
    if _MODE.value == "eval":
        records = data.open_split(config.data, config.data.eval_split,
                                  limit=config.eval.max_problems)
        summary, _ = eval_lib.evaluate_with_config(model_config, params, tokenizer, records,
                                                   settings(config, None), progress=False)
        result = {"model": _MODEL.value, "accuracy": summary["pass@1"],
                  "problems": summary["num_problems"], "seconds": summary["seconds"]}
        with open(os.path.join(_OUTPUT.value, "eval.json"), "w") as f:
            json.dump(result, f, indent=1)
        print(json.dumps(result))
        return
    records = data.open_split(config.data, "train", limit=_PROBLEMS.value)
    eval_settings = settings(config, None)
    _, rows = eval_lib.evaluate_with_config(model_config, params, tokenizer, records,
                                            eval_settings, progress=False)
    used, traces, correct = 0, [], 0
    for record, row in zip(records, rows):
        # Counted as on-policy distillation counts: the prompt's and the completion's tokens.
        prompt_ids = pipeline.encode_prompt(tokenizer, eval_settings.template,
                                            record["question"], eval_settings.system)[1]
        cost = len(prompt_ids) + row["num_tokens"][0]
        if used + cost > _BUDGET.value or not row["completions"][0].strip():
            if used + cost > _BUDGET.value:
                break
            continue
        used += cost
        correct += bool(row["correct"][0])
        traces.append({"prompt": record["question"], "completion": row["completions"][0]})
    if len(traces) == len(records):
        raise SystemExit(f"error: --problems={_PROBLEMS.value} spent only {used} of "
                         f"--budget={_BUDGET.value} teacher tokens; raise --problems")
    with open(os.path.join(_OUTPUT.value, "traces.jsonl"), "w") as f:
        f.writelines(json.dumps(trace) + "\n" for trace in traces)
    stats = {"teacher": _MODEL.value, "traces": len(traces), "teacher_tokens": used,
             "budget": _BUDGET.value, "traces_correct": correct, "greedy": True}
    with open(os.path.join(_OUTPUT.value, "traces.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats))


if __name__ == "__main__":
    flags.mark_flags_as_required(["mode", "model", "output"])
    app.run(main)
