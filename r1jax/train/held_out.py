"""The trainers' periodic held-out evaluation: the evaluation binary's own code (r1jax.eval), so a
number logged during training and one computed from the checkpoint afterwards agree. All-scenario
RL adds its general prompts' reward-model scores (`general_problems`, `evaluate_general`)."""
from __future__ import annotations

import dataclasses
import logging

import ml_collections
import numpy as np

from r1jax import data, sampling
from r1jax.data import pairs
from r1jax.eval import evaluate as eval_lib
from r1jax.rewards.reward_model import final_answer
from r1jax.train import rollouts

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


def general_problems(config: ml_collections.ConfigDict) -> dict[str, list[dict]]:
    """source -> the first eval.general_prompts distinct single-turn questions of its held-out
    split, for each mixture source a reward model scores ({} when general_prompts is 0)."""
    if not config.eval.general_prompts:
        return {}
    out = {}
    for name in rollouts.reward_model_sources(config):
        section = config.mixture[name].data
        questions, _ = pairs.rl_prompts(data.open_split(section, section.eval_split))
        out[name] = questions[:config.eval.general_prompts]
    return out


def evaluate_general(run, params, problems: dict[str, list[dict]]) -> dict:
    """Per source s of `general_problems`: one response to each question (the source's template,
    eval sampling, rl.max_new_tokens, the rollouts' stop strings), scored by the source's rewards
    as in training: `eval_s/reward`, `eval_s/reward/<name>`, `eval_s/response_length` (tokens)
    and `eval_s/final_answer_empty` (share)."""
    config, out = run.config, {}
    strategy = sampling.strategies.from_config(config.eval.sampling)
    for name, records in problems.items():
        source = config.mixture[name]
        prompts, ids = zip(*(data.encode_prompt(run.tokenizer, source.data.template, r["question"],
                                                source.data.system or None) for r in records))
        completions = sampling.generate(
            run.model_config, params, list(ids), max_new_tokens=config.rl.max_new_tokens,
            **dataclasses.asdict(strategy), stop_tokens=run.stop_tokens,
            stop_strings=rollouts.stop_strings(config), tokenizer=run.tokenizer,
            seed=config.eval.seed, batch_size=config.eval.batch_size,
            batching=config.eval.batching, mesh=run.mesh, rules=run.rules)
        texts = [run.tokenizer.decode(t, skip_special_tokens=True) for t in completions.tokens]
        lengths = np.array([len(t) for t in completions.tokens])
        total, _, components = rollouts.score_rows(
            dict(source.rewards), source.rewards_params.to_dict(), records, 1, list(prompts),
            texts, lengths, np.array([r == "stop" for r in completions.finish_reasons]))
        out[f"eval_{name}/reward"] = float(np.mean(total))
        out.update({f"eval_{name}/reward/{r}": float(np.nanmean(s))
                    for r, s in components.items()})
        out[f"eval_{name}/response_length"] = float(lengths.mean())
        out[f"eval_{name}/final_answer_empty"] = float(np.mean([not final_answer(t)
                                                                for t in texts]))
        log.info("Held-out %s reward %.4f on %d prompts", name, out[f"eval_{name}/reward"],
                 len(records))
    return out
