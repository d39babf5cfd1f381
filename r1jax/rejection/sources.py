"""Prompt sources of rejection sampling: what to ask, how to check the answers, and start-up checks.

A source is a ConfigDict (`source_config()` lists its keys) under config.sources.<name>:

  kind       math | code | chat. math and code are reasoning sources, chat the general ones
             (R1 mixes them about 3 : 1).
  input      a JSONL file, read as `format` (default: the kind's r1jax.data.jsonl record form;
             "preference" reads AlpacaEval / HH-RLHF pairs, the chosen reply being the reference);
  generate   or a generated task instead: {"task": "arithmetic" | "countdown", "num": prompts,
             "num_test": held-out questions kept out of them, "seed", difficulty knobs}: the
             train split of r1jax.data.generated, the same as the trainers' for the same seed.
  template, system
             how a question becomes the policy's prompt (r1jax.data.templates).
  quota      the first `quota` prompts are used (0: all); weight: the source's share of its
             group (reasoning / general) when the mix is cut down (see select.py).
  responses  "sample": the policy answers, n times; "reuse": the reference answer is the response
             (R1 reused DeepSeek-V3's SFT data for general prompts).
  n, max_new_tokens
             samples per prompt and their token budget (0: config.sampling's).
  rules      {reward name: threshold}: a sample passes when each reward scores >= threshold;
             rules_params: {reward name: {param: value}}.
  judge      also ask the generative judge (judge.py); with rules too, agreement is reported.
  skip_filters
             names of filters (filters.py) that do not apply to this source.

Every prompt becomes a `Prompt`; `load_prompts` checks the whole configuration first and fails
with the key at fault and the allowed values.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

from r1jax import rewards
from r1jax.data import generated, jsonl, templates
from r1jax.rejection import filters

KINDS = ("math", "code", "chat")
REASONING_KINDS = ("math", "code")
RESPONSES = ("sample", "reuse")
FORMATS = ("math", "code", "chat", "preference", "completion")
# The record field each rule reward reads its reference from: a prompt without it cannot be checked.
RULE_FIELDS = {"math_accuracy": "answer", "code": "tests"}


def source_config(**values) -> ml_collections.ConfigDict:
    """A source with every key (see the module docstring), `values` applied."""
    config = ml_collections.ConfigDict(dict(
        kind="math", input="", format="", generate={}, template="chat", system="", quota=0,
        weight=1.0, responses="sample", n=0, max_new_tokens=0, rules={}, rules_params={},
        judge=False, skip_filters=()))
    config.update(values)
    return config


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One prompt of a source.

    id: "<source>/<record id>"; question: the record's question text; user: the user message of
    the chat record written out (the question inside the source's template); system: its system
    message or None; reference: the reference answer (math: final answer; chat: a good reply;
    code: None); fields: the record columns the rule rewards read (answer, tests).
    """

    id: str
    source: str
    question: str
    user: str
    system: str | None
    reference: str | None
    fields: dict


def is_reasoning(kind: str) -> bool:
    return kind in REASONING_KINDS


def _fail(key: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{key}={value!r}: expected {allowed}")


def validate_source(name: str, source: ml_collections.ConfigDict, filter_names) -> None:
    """Raises ValueError (key and allowed values) or FileNotFoundError for a bad source config."""
    key = f"sources.{name}"
    if source.kind not in KINDS:
        raise _fail(f"{key}.kind", source.kind, f"one of {KINDS}")
    if source.responses not in RESPONSES:
        raise _fail(f"{key}.responses", source.responses, f"one of {RESPONSES}")
    if bool(source.input) == bool(source.generate):
        raise _fail(f"{key}.input / {key}.generate", (source.input, dict(source.generate)),
                    "exactly one of them: a JSONL file or a generated task")
    if source.input and not os.path.isfile(source.input):
        raise FileNotFoundError(f"{key}.input={source.input!r}: no such file")
    if source.format and source.format not in FORMATS:
        raise _fail(f"{key}.format", source.format, f"one of {FORMATS}")
    if source.generate and source.generate.get("task") not in generated.TASKS:
        raise _fail(f"{key}.generate.task", source.generate.get("task"), f"one of {sorted(generated.TASKS)}")
    for reward in source.rules:
        if reward not in rewards.names():
            raise _fail(f"{key}.rules", reward, f"registered rewards {rewards.names()}")
    for reward in source.rules_params:
        if reward not in source.rules:
            raise _fail(f"{key}.rules_params", reward, f"rewards named in {key}.rules {list(source.rules)}")
    unknown = sorted(set(source.skip_filters) - set(filter_names))
    if unknown:
        raise _fail(f"{key}.skip_filters", unknown, f"names among {list(filter_names)}")
    if source.responses == "reuse" and (source.rules or source.judge):
        raise _fail(f"{key}.responses", "reuse", "'sample' when rules or judge check the responses "
                    "(reused responses are taken as they are)")
    if min(source.quota, source.n, source.max_new_tokens) < 0 or source.weight <= 0:
        raise _fail(f"{key}.quota / n / max_new_tokens / weight",
                    (source.quota, source.n, source.max_new_tokens, source.weight),
                    "quota, n, max_new_tokens >= 0 and weight > 0")


def _records(source: ml_collections.ConfigDict) -> list[dict]:
    if source.input:
        return jsonl.read_records(source.input, source.format or source.kind)
    knobs = dict(source.generate)
    task, num, num_test, seed = (knobs.pop(k) for k in ("task", "num", "num_test", "seed"))
    return generated.generate_splits(task, num_train=num, num_test=num_test, seed=seed, **knobs)["train"]


def _question_and_reference(record: dict) -> tuple[str, str | None]:
    """(question, reference answer) of a record of any r1jax.data.jsonl form."""
    if "question" in record:  # math
        return record["question"], record["answer"]
    if "chosen" in record:  # preference: the preferred reply is the reference
        return record["prompt"], record["chosen"]
    if "completion" in record:
        return record["prompt"], record["completion"]
    if "messages" in record:  # chat: the last user turn, and the assistant reply after it
        messages = record["messages"]
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if not users:
            raise ValueError(f"record {record['id']!r} has no user message")
        after = messages[users[-1] + 1:]
        return messages[users[-1]]["content"], after[0]["content"] if after else None
    return record["prompt"], None  # code: checked by its tests


def user_message(template: str, question: str) -> str:
    """The user turn of the written chat record: what the policy was asked, template included
    ("chat:{question} Reply with just the number." gives the question and that instruction)."""
    if template in templates.CHAT_TEMPLATES:
        return question
    if template.startswith(templates.CHAT_FORMAT_PREFIX):
        return templates.render_prompt(template[len(templates.CHAT_FORMAT_PREFIX):], question)
    return templates.render_prompt(template, question)


def system_message(source: ml_collections.ConfigDict) -> str | None:
    if source.system:
        return source.system
    return templates.R1_SYSTEM_PROMPT if source.template == "chat_r1" else None


def source_prompts(name: str, source: ml_collections.ConfigDict) -> list[Prompt]:
    """The source's prompts (its first `quota`), each checked to carry what its checks need.

    Raises:
      ValueError: a prompt without the field a rule reward reads, or without a reference where
        the judge or reuse needs one (naming the source, the prompt and the field).
    """
    records = _records(source)
    if source.quota:
        records = records[:source.quota]
    out = []
    for record in records:
        question, reference = _question_and_reference(record)
        fields = {k: record[k] for k in ("answer", "tests") if k in record}
        for reward in source.rules:
            field = RULE_FIELDS.get(reward)
            if field and field not in fields:
                raise ValueError(f"sources.{name}: prompt {record['id']!r} has no {field!r}, which "
                                 f"rule {reward!r} checks against; its fields: {sorted(record)}")
        if reference is None and (source.judge or source.responses == "reuse"):
            why = "the judge compares with it" if source.judge else "responses='reuse' takes it"
            raise ValueError(f"sources.{name}: prompt {record['id']!r} has no reference answer, "
                             f"and {why}; its fields: {sorted(record)}")
        out.append(Prompt(id=f"{name}/{record['id']}", source=name, question=question,
                          user=user_message(source.template, question), system=system_message(source),
                          reference=reference, fields=fields))
    return out


def load_prompts(config: ml_collections.ConfigDict) -> list[Prompt]:
    """Every source's prompts, sources in config order; the whole config is validated first.

    Raises:
      ValueError, FileNotFoundError: see `validate_source` and `source_prompts`.
    """
    if not config.sources:
        raise ValueError("config.sources is empty: give at least one prompt source")
    filters.validate(config.filters)
    for name, source in config.sources.items():
        validate_source(name, source, list(config.filters))
    return [p for name, source in config.sources.items() for p in source_prompts(name, source)]
