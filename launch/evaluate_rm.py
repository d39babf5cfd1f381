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
from absl import flags

from launch import cli
from r1jax import rewards
from r1jax.data import jsonl, pairs
from r1jax.eval import preference

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags; defined only when it runs, so that tests can import this module
    beside other binaries that define --model and --data too."""
    flags.DEFINE_string("model", None, "A reward-model workdir or HF directory.")
    flags.DEFINE_string("data", None, "A preference .jsonl file.")
    flags.DEFINE_string("output_dir", None, "Where summary.json goes.")
    flags.DEFINE_integer("limit", 0, "Score the first LIMIT valid pairs (0: all).")
    flags.DEFINE_enum("apply_to", "response", ["response", "final_answer"],
                      "What of each response the model reads.")
    flags.DEFINE_integer("batch_size", 16, "Rows per forward pass.")
    flags.mark_flags_as_required(["model", "data", "output_dir"])


def evaluate(score, records: list[dict]) -> dict:
    """pair_metrics of a reward (`rewards.get("reward_model", ...)`) on valid preference
    records."""
    prompts = [r["prompt"] for r in records]
    chosen = score(prompts, [r["chosen"] for r in records])
    rejected = score(prompts, [r["rejected"] for r in records])
    lengths = np.array([[len(r["chosen"]), len(r["rejected"])] for r in records])
    return preference.pair_metrics(np.stack([chosen, rejected], axis=1), lengths)


def main(argv):
    del argv
    # The model first: a wrong --model fails before minutes of reading and checking pairs.
    score = rewards.get("reward_model", path=FLAGS.model, apply_to=FLAGS.apply_to,
                        batch_size=FLAGS.batch_size)
    records = jsonl.read_records(FLAGS.data, "preference")
    valid = pairs.valid_pairs(records, invalid="drop", source=FLAGS.data)
    skipped = len(records) - len(valid)
    valid = valid[:FLAGS.limit or None]
    summary = {"model": FLAGS.model, "data": FLAGS.data, "num_pairs": len(valid),
               "skipped_pairs": skipped, **evaluate(score, valid)}
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    with open(os.path.join(FLAGS.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    for key, value in summary.items():
        print(f"{key:32s} {value}")


if __name__ == "__main__":
    cli.run(main, define_flags)
