"""The held-out evaluation run after every stage, the same for every model of the pipeline.

Two groups, each cached in its model's stage directory so a resumed pipeline never repeats one:
  math     `r1jax.eval.evaluate` on the reasoning task's held-out problems (config.eval.math:
           k samples each): pass@1 over the k, and over every completion the share in R1's
           format (`format` reward), the chain of thought's language consistency and the mean
           response length in tokens.
  general  one response to each held-out general prompt (config.eval.general), then its mean
           score under each reward model the pipeline has (normalised by the RM's held-out
           spread, as all-scenario RL uses them), added as the reward models become available.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from r1jax import models, rewards, sampling
from r1jax.data import pairs, pipeline
from r1jax.eval import evaluate as evaluation
from r1jax.sampling import strategies


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def math_metrics(model_config, params, tokenizer: Any, problems: list[dict], eval_config,
                 mesh=None, rules=None) -> dict:
    """{"pass@1", "format", "language_consistency", "response_tokens", "num_problems", "k"}
    of a model on `problems` ({"question", "answer"} records), sampled as `eval_config`
    (configs/eval.py's keys) says."""
    summary, per_problem = evaluation.evaluate_with_config(
        model_config, params, tokenizer, problems, eval_config, mesh=mesh, rules=rules,
        progress=False)
    prompts = [p["prompt"] for p in per_problem for _ in p["completions"]]
    completions = [c for p in per_problem for c in p["completions"]]
    return {"pass@1": summary["pass@1"],
            "format": _mean(rewards.get("format")(prompts, completions)),
            "language_consistency": _mean(rewards.get("language_consistency")(prompts, completions)),
            "response_tokens": summary["mean_completion_tokens"],
            "num_problems": summary["num_problems"], "k": summary["k"]}


def general_questions(records: list[dict], limit: int) -> list[str]:
    """The first `limit` distinct single-turn user messages of preference records."""
    questions, _ = pairs.rl_prompts(records)
    return [q["question"] for q in questions[:limit]]


def general_responses(model_config, params, tokenizer: Any, questions: list[str],
                      eval_config, mesh=None, rules=None) -> list[str]:
    """One response per question (its chat template, eval_config's sampling and length)."""
    prompts = [pipeline.encode_prompt(tokenizer, eval_config.template, q, eval_config.system)[1]
               for q in questions]
    strategy = strategies.from_config(eval_config.sampling)
    out = sampling.generate(model_config, params, prompts, max_new_tokens=eval_config.max_new_tokens,
                            **dataclasses.asdict(strategy), n=1,
                            stop_tokens=models.stop_tokens(tokenizer), tokenizer=tokenizer,
                            seed=eval_config.seed, batch_size=eval_config.batch_size, mesh=mesh,
                            rules=rules, progress=False)
    return [tokenizer.decode(t, skip_special_tokens=True) for t in out.tokens]


def reward_model_score(path: str, apply_to: str, questions: list[str],
                       responses: list[str]) -> float:
    """The mean normalised score of the reward model at `path` over (question, response)."""
    score = rewards.get("reward_model", path=path, apply_to=apply_to, normalize=True)
    return _mean(score(questions, responses, question=questions))
