"""Sample k completions per problem, verify them with the task's reward, report pass@1, pass@k, cons@k.

One function, `evaluate`, serves `launch/evaluate.py` and the trainers' periodic evaluation, so a
number logged during training and one computed afterwards from the checkpoint are the same
computation. `evaluate_with_config` takes the settings from a configs/eval.py ConfigDict.

    summary, problems = evaluate(model_config, params, tokenizer, records, template="chat", k=16,
                                 strategy=Strategy(temperature=0.6, top_p=0.95), max_new_tokens=1024,
                                 batch_size=64, seed=0)
    summary["pass@1"], summary["cons@16"], problems[0]["completions"]
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tqdm

from r1jax import models, rewards, sampling
from r1jax.sampling import strategies
from r1jax.sampling.strategies import Strategy
from r1jax.data import pipeline, templates
from r1jax.eval import metrics
from r1jax.rewards import math as math_rewards

# Per reward: a completion's ballot in the cons@k vote, fn(completion, **reward_params) -> its
# final answer (None: no answer); ballots vote together when math.same_answer says they are equal
# (r1jax.eval.metrics). Rewards not listed (code, format, ...) have no comparable final answer: no cons@k.
BALLOTS: dict[str, Callable[..., str | None]] = {"math_accuracy": math_rewards.ballot}


def _score(reward_fn: Callable, prompt: str, completions: list[str], record: dict,
           question_key: str) -> list[float | None]:
    """The reward of each of one problem's completions, None where the reward failed (NaN);
    the record's fields go to the reward, its question (math "question", code "prompt") as
    `question`: the text before templating (language_consistency's target language)."""
    fields = {key: [value] * len(completions) for key, value in record.items()
              if key not in ("id", question_key)}
    fields["question"] = [record[question_key]] * len(completions)
    scores = reward_fn([prompt] * len(completions), completions, **fields)
    # None rather than NaN: problems.jsonl stays strict JSON.
    return [None if math.isnan(score) else float(score) for score in scores]


def _problem_result(record: dict, question_key: str, prompt: str, tokens: Sequence[Sequence[int]],
                    finish_reasons: Sequence[str], tokenizer: Any, reward_fn: Callable,
                    extract: Callable[[str], str | None] | None) -> dict[str, Any]:
    """One problem's entry of `evaluate`'s per-problem results, from its k sampled token lists."""
    completions = [tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
    scores = _score(reward_fn, prompt, completions, record, question_key)
    return {
            "id": record.get("id"),
            "prompt": prompt,
            "answer": record.get("answer"),
            "completions": completions,
            "extracted_answers": [extract(c) if extract else None for c in completions],
            "scores": scores,
            "correct": [score is not None and score >= 1.0 for score in scores],
            "finish_reasons": list(finish_reasons),
            "num_tokens": [len(t) for t in tokens],
    }


def _question_key(record: dict) -> str:
    """"question" (math records) or "prompt" (code records): the field the template is filled with."""
    pipeline.prompt_text(record)  # Raises KeyError naming the record when it has neither.
    return "question" if "question" in record else "prompt"


def evaluate(config, params, tokenizer: Any, problems: Sequence[dict], *, template: str, k: int,
             strategy: Strategy, max_new_tokens: int, batch_size: int, seed: int,
             reward: str = "math_accuracy", reward_params: Mapping[str, Any] | None = None,
             pass_ks: Sequence[int] = (1,), system: str | None = None,
             stop_strings: Sequence[str] | None = None, batching: str = "static", mesh=None, rules=None,
             progress: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluates a model on problems by sampling k completions each.

    A completion is correct when its reward is at least 1.0: every reward used for evaluation
    scores a verified-correct completion 1.0 (math_accuracy: the answer verifies; code: every
    test passes). A reward that fails on a completion gives it a NaN score: wrong.

    Args:
      config: r1jax.models.ModelConfig of the model.
      params: its parameters.
      tokenizer: a Hugging Face tokenizer (encode, decode, get_vocab, eos/bos tokens, chat template).
      problems: records with "question" (math) or "prompt" (code), and the reward's fields
        ("answer" for math_accuracy, "tests" for code).
      template: prompt template (see r1jax.data.templates.render_prompt).
      k: completions per problem.
      strategy: how tokens are drawn (r1jax.sampling.Strategy: temperature 0 is greedy, top_k /
        top_p None are off).
      max_new_tokens: completion length limit.
      batch_size: the most completions per sampler call (r1jax.sampling.generate's batch_size).
      seed: sampling seed: the same seed, problems and settings give the same completions.
      reward: the r1jax.rewards name to verify with (math_accuracy, code, ...).
      reward_params: params bound to the reward (r1jax.rewards.get), e.g. math_accuracy's
        `sources`; the cons@k ballots are extracted with them too.
      pass_ks: the k' of the unbiased pass@k' estimates to report (1 <= k' <= k).
      system: system prompt for the chat templates.
      stop_strings: texts that end a completion (r1jax.sampling.stop_strings); None: the
        template's (templates.default_stop_strings: "</answer>" for the R1 templates).
      batching: "static" or "continuous" (r1jax.sampling.generate's batching; the same completions).
      mesh, rules: sample sharded, as the trainers do (see r1jax.sampling.generate); None: one device.
      progress: show progress bars over problems (sampling, then verifying).

    Returns:
      (summary, per_problem). summary: {"pass@1", "pass@k'"..., "cons@k" (for rewards with a
      ballot in BALLOTS), "num_problems", "k", "temperature", "top_k", "top_p", "max_new_tokens",
      "mean_completion_tokens", "finish_reasons" (count per reason), "reward_errors" (completions
      the reward failed to score, counted wrong), "seconds"}. per_problem: one dict per problem,
      {"id", "prompt" (the exact text given to the model), "answer" (the record's reference
      answer, None if it has none), "completions", "extracted_answers", "scores" (None where the
      reward failed), "correct", "finish_reasons", "num_tokens"}.

    Raises:
      KeyError: unknown reward.
      ValueError: no problems, k < 1, a pass@k' with k' > k, or a prompt too long
        for the model's context with max_new_tokens.
    """
    if not problems:
        raise ValueError("no problems to evaluate")
    if k < 1 or any(not 1 <= k_ <= k for k_ in pass_ks):
        raise ValueError(f"need k >= 1 and every pass@k' with 1 <= k' <= k; got k={k}, pass_ks={list(pass_ks)}")
    reward_params = dict(reward_params or {})
    reward_fn = rewards.get(reward, **reward_params)  # KeyError listing the rewards; TypeError for a bad param.
    extract = functools.partial(BALLOTS[reward], **reward_params) if reward in BALLOTS else None
    if stop_strings is None:
        stop_strings = templates.default_stop_strings(template)
    start_time = time.perf_counter()
    problems = list(problems)
    keys = [_question_key(record) for record in problems]
    inputs = [pipeline.encode_prompt(tokenizer, template, record[key], system) for record, key in zip(problems, keys)]
    # One call over every prompt: the sampler groups them into length buckets, so an evaluation
    # compiles a handful of programs whatever the number of problems.
    out = sampling.generate(config, params, [ids for _, ids in inputs], max_new_tokens=max_new_tokens,
                            **dataclasses.asdict(strategy), n=k, stop_tokens=models.stop_tokens(tokenizer),
                            stop_strings=stop_strings, tokenizer=tokenizer, seed=seed,
                            batch_size=batch_size, batching=batching, mesh=mesh, rules=rules,
                            progress=progress)
    results = []
    for i, (record, key, (text, _)) in enumerate(tqdm.tqdm(
            list(zip(problems, keys, inputs)), desc="verify", unit="problem", disable=not progress)):
        rows = slice(i * k, (i + 1) * k)  # Prompt-major: prompt i's k completions.
        results.append(_problem_result(record, key, text, out.tokens[rows], out.finish_reasons[rows],
                                       tokenizer, reward_fn, extract))
    return summarize(results, k=k, pass_ks=pass_ks, with_consensus=extract is not None,
                     settings={**dataclasses.asdict(strategy), "max_new_tokens": max_new_tokens},
                     seconds=time.perf_counter() - start_time), results


def summarize(per_problem: list[dict], *, k: int, pass_ks: Sequence[int], with_consensus: bool,
              settings: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The summary dict of `evaluate` from its per-problem results (see there)."""
    correct = [p["correct"] for p in per_problem]
    consensus = ([metrics.cons_at_k(p["extracted_answers"], p["correct"]) for p in per_problem]
                 if with_consensus else None)
    lengths = [n for p in per_problem for n in p["num_tokens"]]
    reasons = Counter(reason for p in per_problem for reason in p["finish_reasons"])
    reward_errors = sum(score is None for p in per_problem for score in p["scores"])
    return {**metrics.aggregate(correct, pass_ks, consensus), "num_problems": len(per_problem), "k": k,
            **settings, "mean_completion_tokens": sum(lengths) / len(lengths),
            "finish_reasons": dict(sorted(reasons.items())), "reward_errors": reward_errors,
            "seconds": round(seconds, 3)}


def evaluate_with_config(config, params, tokenizer: Any, problems: Sequence[dict], eval_config, *, mesh=None,
                         rules=None, progress: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`evaluate` with its settings from a configs/eval.py ConfigDict, on the first
    eval_config.max_problems problems (all when it is None)."""
    if eval_config.max_problems is not None:
        problems = problems[:eval_config.max_problems]
    return evaluate(config, params, tokenizer, problems, template=eval_config.template, k=eval_config.k,
                    strategy=strategies.from_config(eval_config.sampling),
                    max_new_tokens=eval_config.max_new_tokens, batch_size=eval_config.batch_size,
                    seed=eval_config.seed, reward=eval_config.reward,
                    reward_params=eval_config.reward_params.to_dict(), pass_ks=tuple(eval_config.pass_ks),
                    system=eval_config.system, stop_strings=eval_config.stop_strings,
                    batching=eval_config.batching, mesh=mesh, rules=rules, progress=progress)
