"""The trainers' periodic held-out evaluation: the evaluation binary's own code (r1jax.eval), so a
number logged during training and one computed from the checkpoint afterwards agree."""
from __future__ import annotations

import logging

import ml_collections

from r1jax import data
from r1jax.eval import evaluate as eval_lib

log = logging.getLogger("r1jax")


def problems(config: ml_collections.ConfigDict) -> list[dict]:
    """The first eval.max_problems records of data.eval_split (None: all of them; 0: none)."""
    if config.eval.max_problems == 0:
        return []
    return data.open_split(config.data, config.data.eval_split, limit=config.eval.max_problems)


def evaluate(run, params, records: list[dict]) -> dict:
    """{"accuracy": pass@1, "eval_completion_length"} of `params` on `records` ({} if none)."""
    if not records:
        return {}
    settings = ml_collections.ConfigDict(run.config.eval.to_dict())
    settings.template = settings.template or run.config.data.template
    settings.system = settings.system or run.config.data.system or None
    summary, _ = eval_lib.evaluate_with_config(
        run.model_config, params, run.tokenizer, records, settings, mesh=run.mesh,
        rules=run.rules, progress=False)
    log.info("Held-out accuracy %.4f on %d problems", summary["pass@1"], len(records))
    return {"accuracy": summary["pass@1"],
            "eval_completion_length": summary["mean_completion_tokens"]}
