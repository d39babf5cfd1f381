r"""Evaluates a reward model on preference pairs: pair accuracy beside the longer-wins baseline.

  python -m launch.evaluate_rm --model=WORKDIR --data=pairs.jsonl --output_dir=/tmp/rm_eval \
      [--limit=500] [--apply_to=response]

--model is a reward-model workdir written by `launch.train --config=configs/reward_model.py`, or a
HF *ForSequenceClassification directory with num_labels=1.
--data is a preference JSONL: {prompt, chosen, rejected} lines or HH-RLHF dialogues; pairs with an
empty or identical side are skipped (and counted). Writes OUTPUT_DIR/summary.json: num_pairs,
skipped_pairs and r1jax.eval.preference.pair_metrics (pair_accuracy, longer_wins_accuracy,
similar_length_pair_accuracy, ...), and prints them.
"""
import json
import os

import numpy as np
from absl import app, flags

from r1jax import rewards
from r1jax.data import jsonl, pairs
from r1jax.eval import preference

_MODEL = flags.DEFINE_string("model", None, "A reward-model workdir or HF directory.")
_DATA = flags.DEFINE_string("data", None, "A preference .jsonl file.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where summary.json goes.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Score the first LIMIT valid pairs (0: all).")
_APPLY_TO = flags.DEFINE_enum("apply_to", "response", ["response", "final_answer"],
                              "What of each response the model reads.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Rows per forward pass.")
flags.mark_flags_as_required(["model", "data", "output_dir"])


def evaluate(model: str, records: list[dict], *, apply_to: str, batch_size: int) -> dict:
    """pair_metrics of the reward model in `model` on valid preference records."""
    score = rewards.get("reward_model", path=model, apply_to=apply_to, batch_size=batch_size)
    prompts = [r["prompt"] for r in records]
    chosen = score(prompts, [r["chosen"] for r in records])
    rejected = score(prompts, [r["rejected"] for r in records])
    lengths = np.array([[len(r["chosen"]), len(r["rejected"])] for r in records])
    return preference.pair_metrics(np.stack([chosen, rejected], axis=1), lengths)


def main(argv):
    del argv
    records = jsonl.read_records(_DATA.value, "preference")
    valid = pairs.valid_pairs(records, invalid="drop", source=_DATA.value)
    skipped = len(records) - len(valid)
    valid = valid[:_LIMIT.value or None]
    summary = {"model": _MODEL.value, "data": _DATA.value, "num_pairs": len(valid),
               "skipped_pairs": skipped,
               **evaluate(_MODEL.value, valid, apply_to=_APPLY_TO.value,
                          batch_size=_BATCH_SIZE.value)}
    os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
    with open(os.path.join(_OUTPUT_DIR.value, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    for key, value in summary.items():
        print(f"{key:32s} {value}")


if __name__ == "__main__":
    app.run(main)
