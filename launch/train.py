r"""Trains one stage of the recipe: GRPO (R1-Zero, reasoning RL), SFT (cold start, distillation on
traces), logit / on-policy distillation from a teacher, or a reward model.

    python -m launch.train --config=configs/r1_zero.py[:VARIANT] --workdir=DIR [--config.k=v ...]

Restarting with the same --workdir resumes from its newest complete checkpoint. Metrics go to
DIR/metrics.jsonl and DIR/tensorboard (`tensorboard --logdir DIR`), sampled completions to
DIR/samples.jsonl.
"""
import logging

from absl import flags
from ml_collections import config_flags

from launch import cli
from r1jax import distributed

FLAGS = flags.FLAGS
STAGES = ("grpo", "sft", "distill", "reward_model")


def define_flags():
    config_flags.DEFINE_config_file("config", None, "A configs/*.py file[:variant].",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and logs go.")
    flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    # r1jax's own progress at INFO; the libraries' (orbax, tfds) chatter only when it matters.
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("r1jax").setLevel(logging.INFO)
    distributed.maybe_initialize()  # Before any other JAX call: pods and multi-host GPU jobs.
    config = FLAGS.config
    if config.stage not in STAGES:
        raise ValueError(f"config.stage={config.stage!r}; expected one of {STAGES}.")
    if config.stage == "grpo":
        from r1jax.train import grpo as trainer
    elif config.stage == "distill":
        from r1jax.train import distill as trainer
    elif config.stage == "reward_model":
        from r1jax.train import reward_model as trainer
    else:
        from r1jax.train import sft as trainer
    trainer.train(config, FLAGS.workdir)


if __name__ == "__main__":
    cli.run(main, define_flags)
