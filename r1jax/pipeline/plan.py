"""The recipe's stages in DeepSeek-R1's order, what each reads, and where each writes.

Each stage runs in DIR/<nn>_<stage>/ (nn its 1-based place; the base model is 00_base) with its
own full stage config (config.stages.<stage>). The wiring below decides its inputs:

  r1_zero             GRPO from the base model with rule rewards                (model)
  cold_start_data     R1-Zero's verified samples, rewritten readable            (chat JSONL)
  cold_start_sft      SFT of the base model on them                             (model)
  reasoning_rl        GRPO from the cold-start model: accuracy, format, language (model)
  rejection_sampling  the reasoning-RL model's verified samples + general rows   (chat JSONL)
  rejection_sft       SFT of the base model on that mix                         (model)
  reward_helpful      Bradley–Terry reward models (backbone: the base model)    (RM workdir)
  reward_harmless
  all_scenario_rl     GRPO from the rejection-SFT model, rules + reward models  (model)
  distill_data        the final model's verified samples                        (chat JSONL)
  distill             SFT of each student (config.students) on them            (models)

`--config.skip.<stage>=True` leaves a stage out: a skipped training stage passes the model it
would have started from on to the stages after it (skipping reasoning RL samples the cold-start
model); a skipped data or reward-model stage must be given (`--config.given.<stage>=PATH`: a
model directory / .gguf / r1jax workdir, a chat JSONL, or a reward-model directory), or every
stage reading it skipped too. A given stage is not run; its PATH is its output.
"""
from __future__ import annotations

import dataclasses
import json
import os

MODEL_KINDS = ("grpo", "sft")   # training stages whose output is a policy
DATA_KINDS = ("cold_start", "rejection")
KINDS = (*MODEL_KINDS, *DATA_KINDS, "reward_model", "distill")
BASE = "base"
BASE_DIR = "00_base"
DONE = "DONE.json"


@dataclasses.dataclass(frozen=True)
class Stage:
    """kind: one of KINDS; model_from: the stage whose model this one starts from or samples
    (BASE: the pipeline's base model); data_from: the data stage it trains on; reward_models:
    {reward name in its config: reward-model stage}; apply_to: a reward model's input
    ("final_answer" | "response") when the evaluation scores general prompts with it."""

    kind: str
    model_from: str = ""
    data_from: str = ""
    reward_models: tuple[tuple[str, str], ...] = ()
    apply_to: str = ""


STAGES = {
    "r1_zero": Stage("grpo", model_from=BASE),
    "cold_start_data": Stage("cold_start", model_from="r1_zero"),
    "cold_start_sft": Stage("sft", model_from=BASE, data_from="cold_start_data"),
    "reasoning_rl": Stage("grpo", model_from="cold_start_sft"),
    "rejection_sampling": Stage("rejection", model_from="reasoning_rl"),
    "rejection_sft": Stage("sft", model_from=BASE, data_from="rejection_sampling"),
    "reward_helpful": Stage("reward_model", model_from=BASE, apply_to="final_answer"),
    "reward_harmless": Stage("reward_model", model_from=BASE, apply_to="response"),
    "all_scenario_rl": Stage("grpo", model_from="rejection_sft", reward_models=(
        ("helpfulness", "reward_helpful"), ("harmlessness", "reward_harmless"))),
    "distill_data": Stage("rejection", model_from="all_scenario_rl"),
    "distill": Stage("distill", model_from=BASE, data_from="distill_data"),
}
ORDER = tuple(STAGES)
# The trainer each kind runs (config.stages.<stage>.stage must name it).
TRAINER_STAGE = {"grpo": "grpo", "sft": "sft", "reward_model": "reward_model", "distill": "sft",
                 "cold_start": "rejection", "rejection": "rejection"}


def stage_dir(workdir: str, name: str) -> str:
    """DIR/<nn>_<name>: a stage's own directory."""
    if name == BASE:
        return os.path.join(workdir, BASE_DIR)
    return os.path.join(workdir, f"{ORDER.index(name) + 1:02d}_{name}")


def train_dir(workdir: str, name: str) -> str:
    """The training workdir of a stage (checkpoints, metrics.jsonl)."""
    return os.path.join(stage_dir(workdir, name), "train")


def model_dir(workdir: str, name: str) -> str:
    """The HF directory a training stage's final checkpoint is exported to."""
    return os.path.join(stage_dir(workdir, name), "model")


def rejection_dir(workdir: str, name: str) -> str:
    return os.path.join(stage_dir(workdir, name), "rejection")


def student_dir(workdir: str, student: str) -> str:
    return os.path.join(stage_dir(workdir, "distill"), student)


def student_train_dir(workdir: str, student: str) -> str:
    """The training workdir of a distillation student (as train_dir is a stage's)."""
    return os.path.join(student_dir(workdir, student), "train")


def output_path(workdir: str, name: str) -> str:
    """Where a stage that runs writes its output."""
    kind = STAGES[name].kind
    if kind in MODEL_KINDS:
        return model_dir(workdir, name)
    if kind == "reward_model":
        return train_dir(workdir, name)
    if kind == "cold_start":
        return os.path.join(stage_dir(workdir, name), "cold_start.jsonl")
    if kind == "rejection":
        return os.path.join(rejection_dir(workdir, name), "accepted.jsonl")
    return stage_dir(workdir, name)


def base_model(config, workdir: str) -> str:
    """The base model: config.base.path, or (a preset, for tests) its export in 00_base/model."""
    return config.base.path or os.path.join(stage_dir(workdir, BASE), "model")


def is_active(config, name: str) -> bool:
    """Runs in this pipeline: neither skipped nor given."""
    return not config.skip[name] and not config.given[name]


def model_of(config, workdir: str, name: str) -> str:
    """The model stage `name` leaves for the stages after it (see the module docstring)."""
    if name == BASE:
        return base_model(config, workdir)
    if config.given[name]:
        return config.given[name]
    if config.skip[name]:
        return model_of(config, workdir, STAGES[name].model_from)
    return output_path(workdir, name)


def output_of(config, workdir: str, name: str, reader: str) -> str:
    """The data or reward model stage `name` gives to `reader`; ValueError when it has none."""
    if config.given[name]:
        return config.given[name]
    if config.skip[name]:
        raise ValueError(f"stage {reader} reads the output of stage {name}, which is skipped "
                         f"(skip.{name}=True): give it with --config.given.{name}=PATH, or "
                         f"skip {reader} too")
    return output_path(workdir, name)


def inputs(config, workdir: str, name: str) -> dict:
    """What stage `name` reads: {"model": path, "data": path, "reward_models": {reward: path}}."""
    stage = STAGES[name]
    out = {}
    if stage.model_from:
        out["model"] = model_of(config, workdir, stage.model_from)
    if stage.data_from:
        out["data"] = output_of(config, workdir, stage.data_from, name)
    if stage.reward_models:
        out["reward_models"] = {reward: output_of(config, workdir, rm, name)
                                for reward, rm in stage.reward_models}
    return out


def validate(config, workdir: str) -> None:
    """Start-up checks, before anything runs: every stage has a config of the right kind, given
    paths exist, and every active stage's inputs resolve. Raises ValueError /
    FileNotFoundError naming the stage and key."""
    for section in ("stages", "skip", "given"):
        missing = [name for name in ORDER if name not in config[section]]
        if missing:
            raise ValueError(f"config.{section} has no entry for stage(s) {missing}; the stages "
                             f"are {list(ORDER)}")
    if not (config.base.path or config.base.preset):
        raise ValueError("config.base.path is empty: give the base model (HF directory, .gguf "
                         "or r1jax workdir), or base.preset for a random one")
    if config.base.path and not os.path.exists(config.base.path):
        raise FileNotFoundError(f"config.base.path={config.base.path!r} does not exist")
    for name in ORDER:
        given = config.given[name]
        if given and not os.path.exists(given):
            raise FileNotFoundError(f"config.given.{name}={given!r} does not exist")
        expected = TRAINER_STAGE[STAGES[name].kind]
        if is_active(config, name) and config.stages[name].stage != expected:
            raise ValueError(f"config.stages.{name}.stage={config.stages[name].stage!r}: stage "
                             f"{name} runs a {expected!r} config")
    for name in ORDER:
        if is_active(config, name):
            inputs(config, workdir, name)
    if is_active(config, "distill") and not config.students:
        raise ValueError("config.students is empty: name at least one student "
                         "(name=path; an empty path is the base model), or skip distill")


def mark_done(workdir: str, name: str, record: dict) -> None:
    """Writes DIR/<nn>_<name>/DONE.json (atomically): the stage finished."""
    from r1jax.rejection.engine import write_atomically
    path = os.path.join(stage_dir(workdir, name), DONE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomically(path, json.dumps(record, indent=1, sort_keys=True))


def done_record(workdir: str, name: str) -> dict | None:
    """The DONE.json of a finished stage, or None."""
    path = os.path.join(stage_dir(workdir, name), DONE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
