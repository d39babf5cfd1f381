"""Evaluation settings for launch/evaluate.py and the trainers' periodic evaluation.

    python -m launch.evaluate --config=configs/eval.py:r1 --model=DIR --data=test.jsonl --output_dir=OUT
    python -m launch.evaluate --config=configs/eval.py:greedy --config.max_problems=50 ...

Variants:
  greedy: one greedy completion per problem; pass@1 is plain accuracy.
  r1: the DeepSeek-R1 paper's protocol: 64 samples at temperature 0.6, top-p 0.95, giving pass@1
      (mean over the 64) and cons@64 (majority vote); 32,768 new tokens at most as in the paper,
      which small models will want lowered with --config.max_new_tokens.
  addition: the R1-Zero default run's held-out check (configs/r1_zero.py's cpu): greedy, the
      prompt asking for a bare number, its last number read as the answer, 16 new tokens; for
      models trained on that task elsewhere (rejection-sampling SFT, distillation).
  tiny: a few short samples, for tests and smoke runs.
"""
import ml_collections
from ml_collections import config_dict

from configs import common, r1_zero


def _greedy(config: ml_collections.ConfigDict):
    del config  # The defaults are greedy.


def _r1(config: ml_collections.ConfigDict):
    config.k = 64
    config.sampling.update(temperature=0.6, top_p=0.95)
    config.max_new_tokens = 32768
    config.pass_ks = (1, 8, 64)


def _addition(config: ml_collections.ConfigDict):
    default = r1_zero.get_config("cpu")
    config.update(template=default.data.template, max_new_tokens=default.eval.max_new_tokens)
    config.reward_params = ml_collections.ConfigDict(default.eval.reward_params.to_dict())


def _tiny(config: ml_collections.ConfigDict):
    config.template = "plain"
    config.k = 4
    config.sampling.temperature = 1.0
    config.max_new_tokens = 8
    config.pass_ks = (1, 2, 4)
    config.batch_size = 8
    config.max_problems = 4


VARIANTS = {"greedy": _greedy, "r1": _r1, "addition": _addition, "tiny": _tiny}


def get_config(arg: str = "greedy") -> ml_collections.ConfigDict:
    """The variant named `arg` (see the module docstring)."""
    variant = common.variant_name(arg, VARIANTS, stage="eval", default="greedy")
    config = ml_collections.ConfigDict()
    config.template = "chat"  # r1jax.data.templates name or a "{question}" format string.
    config.system = config_dict.placeholder(str)  # Chat system prompt; None: the template's default.
    config.reward = "math_accuracy"  # Verifies completions; also picks the answer extraction for cons@k.
    # Params of that reward, e.g. {"sources": ("answer", "boxed", "last_number")} for prompts that
    # ask for a bare number (math_accuracy reads only <answer> and \boxed{} by default).
    config.reward_params = ml_collections.ConfigDict()
    config.stop_strings = config_dict.placeholder(tuple)  # None: the template's ("</answer>" for R1's).
    config.k = 1  # Completions per problem.
    config.sampling = common.sampling_config(temperature=0.0)  # greedy
    config.max_new_tokens = 512
    config.pass_ks = (1,)  # Unbiased pass@k' estimates to report, each k' <= k.
    config.batch_size = 64  # Completions decoded together.
    # static | continuous: batch_size slots refilled as samples end (same completions; faster
    # when lengths vary, e.g. k samples of reasoning traces).
    config.batching = "static"
    config.seed = 0
    config.max_problems = config_dict.placeholder(int)  # None: every problem; 0: none.

    VARIANTS[variant](config)
    return config
