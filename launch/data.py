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
from absl import flags

from launch import cli
from r1jax.data import builders

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_enum("kind", None, builders.KINDS, "What to prepare.", required=True)
    flags.DEFINE_string("name", None, "Data set name (lower case, digits, _).", required=True)
    flags.DEFINE_string("data_dir", None, "Directory of prepared data sets.", required=True)
    flags.DEFINE_bool("overwrite", False, "Replace an existing data set of that name.")

    flags.DEFINE_string("input", None, "User kinds: the JSONL file, written to split 'train'.")
    flags.DEFINE_string("test_input", None, "User kinds: a JSONL file for split 'test'.")
    flags.DEFINE_float("test_fraction", 0.0, "User kinds: fraction of --input moved to 'test'.")
    flags.DEFINE_integer("split_seed", 0, "User kinds: seed of the --test_fraction split.")

    flags.DEFINE_integer("num_train", 10_000, "Generated kinds: train examples.")
    flags.DEFINE_integer("num_test", 500, "Generated kinds: test examples.")
    flags.DEFINE_integer("seed", 0, "Generated kinds: the seed.")
    flags.DEFINE_integer("digits", 2, "arithmetic: digits per operand.")
    flags.DEFINE_integer("num_operands", 2, "arithmetic: operands per question.")
    flags.DEFINE_string("operations", "+-*", "arithmetic: operators to draw from.")
    flags.DEFINE_integer("num_numbers", 4, "countdown: numbers per puzzle.")
    flags.DEFINE_integer("max_number", 100, "countdown: numbers lie in 1..max_number.")
    flags.DEFINE_integer("max_target", 1000, "countdown: targets lie in 1..max_target.")


def _source_arguments(kind: str) -> dict:
    """The prepare() arguments that say where the records of `kind` come from."""
    if kind == "arithmetic":
        knobs = {"digits": FLAGS.digits, "num_operands": FLAGS.num_operands, "operations": FLAGS.operations}
    elif kind == "countdown":
        knobs = {"num_numbers": FLAGS.num_numbers, "max_number": FLAGS.max_number, "max_target": FLAGS.max_target}
    else:
        return {"input_path": FLAGS.input, "test_input": FLAGS.test_input,
                "test_fraction": FLAGS.test_fraction, "split_seed": FLAGS.split_seed}
    return {"num_train": FLAGS.num_train, "num_test": FLAGS.num_test, "seed": FLAGS.seed, **knobs}


def main(argv):
    del argv
    counts = builders.prepare(FLAGS.kind, name=FLAGS.name, data_dir=FLAGS.data_dir,
                              overwrite=FLAGS.overwrite, **_source_arguments(FLAGS.kind))
    print(f"prepared {FLAGS.name!r} ({FLAGS.kind}) in {FLAGS.data_dir}")
    for split, count in sorted(counts.items()):
        print(f"  {split}: {count} examples")


if __name__ == "__main__":
    cli.run(main, define_flags)
