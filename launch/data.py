r"""Prepares a data set once, for trainers to read by name and data_dir.

From a user's JSONL file (kinds math, code, chat, preference; see r1jax/data/jsonl.py for the forms):
  python -m launch.data --kind=math --input=gsm8k/train.jsonl --name=gsm8k --data_dir=~/r1jax_data \
      [--test_fraction=0.05 | --test_input=test.jsonl]

Generated, verifiable tasks (no download; reproducible from --seed):
  python -m launch.data --kind=arithmetic --name=add3 --data_dir=DIR --digits=3 --operations=+ \
      --num_train=20000 --num_test=500
  python -m launch.data --kind=countdown --name=countdown4 --data_dir=DIR --num_numbers=4 --max_number=100

Prints the number of examples per split.
"""
import sys

from absl import app, flags

from r1jax.data import builders

_KIND = flags.DEFINE_enum("kind", None, builders.KINDS, "What to prepare.", required=True)
_NAME = flags.DEFINE_string("name", None, "Data set name (lower case, digits, _).", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Directory of prepared data sets.", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing data set of that name.")

_INPUT = flags.DEFINE_string("input", None, "User kinds: the JSONL file, written to split 'train'.")
_TEST_INPUT = flags.DEFINE_string("test_input", None, "User kinds: a JSONL file for split 'test'.")
_TEST_FRACTION = flags.DEFINE_float("test_fraction", 0.0, "User kinds: fraction of --input moved to 'test'.")
_SPLIT_SEED = flags.DEFINE_integer("split_seed", 0, "User kinds: seed of the --test_fraction split.")

_NUM_TRAIN = flags.DEFINE_integer("num_train", 10_000, "Generated kinds: train examples.")
_NUM_TEST = flags.DEFINE_integer("num_test", 500, "Generated kinds: test examples.")
_SEED = flags.DEFINE_integer("seed", 0, "Generated kinds: the seed.")
_DIGITS = flags.DEFINE_integer("digits", 2, "arithmetic: digits per operand.")
_NUM_OPERANDS = flags.DEFINE_integer("num_operands", 2, "arithmetic: operands per question.")
_OPERATIONS = flags.DEFINE_string("operations", "+-*", "arithmetic: operators to draw from.")
_NUM_NUMBERS = flags.DEFINE_integer("num_numbers", 4, "countdown: numbers per puzzle.")
_MAX_NUMBER = flags.DEFINE_integer("max_number", 100, "countdown: numbers lie in 1..max_number.")
_MAX_TARGET = flags.DEFINE_integer("max_target", 1000, "countdown: targets lie in 1..max_target.")


def _source_arguments(kind: str) -> dict:
    """The prepare() arguments that say where the records of `kind` come from."""
    if kind == "arithmetic":
        knobs = {"digits": _DIGITS.value, "num_operands": _NUM_OPERANDS.value, "operations": _OPERATIONS.value}
    elif kind == "countdown":
        knobs = {"num_numbers": _NUM_NUMBERS.value, "max_number": _MAX_NUMBER.value, "max_target": _MAX_TARGET.value}
    else:
        return {"input_path": _INPUT.value, "test_input": _TEST_INPUT.value,
                "test_fraction": _TEST_FRACTION.value, "split_seed": _SPLIT_SEED.value}
    return {"num_train": _NUM_TRAIN.value, "num_test": _NUM_TEST.value, "seed": _SEED.value, **knobs}


def main(argv):
    del argv
    try:
        counts = builders.prepare(_KIND.value, name=_NAME.value, data_dir=_DATA_DIR.value,
                                  overwrite=_OVERWRITE.value, **_source_arguments(_KIND.value))
    except (ValueError, OSError) as e:  # The user's file or flags: the message says what and where.
        sys.exit(f"error: {e}")
    print(f"prepared {_NAME.value!r} ({_KIND.value}) in {_DATA_DIR.value}")
    for split, count in sorted(counts.items()):
        print(f"  {split}: {count} examples")


if __name__ == "__main__":
    app.run(main)
