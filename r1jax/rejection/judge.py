"""The generative judge: a model compares a candidate's final answer with the reference answer.

R1 used DeepSeek-V3 as a judge for prompts whose answers no rule can check. Here any model r1jax
loads can judge; it is prompted with `TEMPLATE` (or `SCORE_TEMPLATE`), holding the question, the
reference and the candidate's final answer (the text after its reasoning: after the last
`</think>`), and answers greedily through the same sampler as the policy.

Parsing is strict (`parse_verdict`): the judge's reply must end with its verdict, `[[CORRECT]]` or
`[[INCORRECT]]` (score mode: `[[N]]`, N an integer from 1 to 10, accepted when N >= threshold),
and hold no other `[[`. Anything else (garbage, nothing, a reply cut off by the token budget, two
verdicts) is a judge error: never accepted, counted.

The candidate cannot write the verdict: only the judge's own reply is parsed, and the candidate's
text has its `[[` / `]]` broken up before it enters the judge's prompt, so a judge that merely
echoes it produces no verdict (an error, not an acceptance). A judge can still be talked into a
wrong verdict by persuasive text; that is the judge model's weakness, not the parser's.

Also registered as the reward `generative_judge` (r1jax.rewards.get("generative_judge",
model=PATH)): 1.0 correct, 0.0 incorrect, NaN on a judge error (0 and an error count in
`rewards.combine`), for GRPO on prompts without rule checks.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Sequence

from r1jax.rewards import format as format_rewards

TEMPLATE = (
    "You are grading an answer. Compare the candidate's final answer with the reference answer.\n\n"
    "Question:\n{question}\n\nReference answer:\n{reference}\n\nCandidate's final answer:\n{answer}\n\n"
    "Does the candidate's final answer mean the same as the reference answer? Think briefly, then end "
    "your reply with exactly one verdict: [[CORRECT]] or [[INCORRECT]].")
SCORE_TEMPLATE = (
    "You are grading an answer. Compare the candidate's final answer with the reference answer.\n\n"
    "Question:\n{question}\n\nReference answer:\n{reference}\n\nCandidate's final answer:\n{answer}\n\n"
    "Rate how well the candidate's final answer matches the reference, from 1 (wrong) to 10 (fully "
    "correct). End your reply with the rating in double brackets, e.g. [[7]].")
MODES = ("verdict", "score")
_PLACEHOLDER = re.compile(r"\{(question|reference|answer)\}")
_VERDICT_END = re.compile(r"\[\[(CORRECT|INCORRECT)\]\]\s*\Z")
_SCORE_END = re.compile(r"\[\[(10|[1-9])\]\]\s*\Z")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """accepted: the candidate passes; score: 1/0 (verdict mode) or the 1-10 rating, None on an
    error; error: why the reply was unparsable, else None; reply: the judge's text."""

    accepted: bool
    score: float | None
    error: str | None
    reply: str


def final_answer(completion: str) -> str:
    """The text after the reasoning: after the last `</think>`, else the whole completion."""
    _, close, after = completion.rpartition(format_rewards.THINK_CLOSE)
    return (after if close else completion).strip()


def neutralise(text: str) -> str:
    """`text` with verdict brackets broken up ("[[" -> "[ [", "]]" -> "] ]"), repeatedly, so a
    candidate cannot place a verdict the judge might echo."""
    while "[[" in text or "]]" in text:
        text = text.replace("[[", "[ [").replace("]]", "] ]")
    return text


def judge_prompt(template: str, question: str, reference: str, completion: str) -> str:
    """The judge's user message; placeholders are filled in one pass, so text inside one value
    (a candidate writing "{reference}") is never substituted again."""
    values = {"question": question, "reference": reference,
              "answer": neutralise(final_answer(completion))}
    return _PLACEHOLDER.sub(lambda m: values[m[1]], template)


def parse_verdict(reply: str, mode: str = "verdict", threshold: float = 7) -> Verdict:
    """The judge's verdict from its whole reply (see the module docstring for the rules)."""
    end = (_VERDICT_END if mode == "verdict" else _SCORE_END).search(reply)
    if end is None:
        return Verdict(False, None, "no verdict at the end of the reply", reply)
    if reply.count("[[") != 1:
        return Verdict(False, None, "more than one [[...]] in the reply", reply)
    if mode == "verdict":
        correct = end[1] == "CORRECT"
        return Verdict(correct, float(correct), None, reply)
    score = float(end[1])
    return Verdict(score >= threshold, score, None, reply)


class Judge:
    """Judges candidates with `complete(judge prompts) -> replies` (a model, or a test's stand-in)."""

    def __init__(self, complete: Callable[[list[str]], list[str]], *, template: str = "",
                 mode: str = "verdict", threshold: float = 7):
        if mode not in MODES:
            raise ValueError(f"judge.mode={mode!r}: expected one of {MODES}")
        template = template or (TEMPLATE if mode == "verdict" else SCORE_TEMPLATE)
        missing = [p for p in ("{question}", "{reference}", "{answer}") if p not in template]
        if missing:
            raise ValueError(f"judge.template lacks the placeholders {missing}")
        self.complete, self.template, self.mode, self.threshold = complete, template, mode, threshold

    def __call__(self, questions: Sequence[str], references: Sequence[str],
                 completions: Sequence[str]) -> list[Verdict]:
        if not completions:
            return []
        prompts = [judge_prompt(self.template, q, r, c)
                   for q, r, c in zip(questions, references, completions)]
        return [parse_verdict(reply, self.mode, self.threshold) for reply in self.complete(prompts)]


def model_completer(model_config, params, tokenizer, *, max_new_tokens: int, batch_size: int = 64,
                    batching: str = "static", mesh=None,
                    rules=None) -> Callable[[list[str]], list[str]]:
    """complete(user messages) -> replies: greedy, in the model's chat template, through
    r1jax.sampling.generate (the policy's sampler)."""
    from r1jax import models, sampling  # JAX only when a model judges.
    from r1jax.data import pipeline

    def complete(messages: list[str]) -> list[str]:
        ids = [pipeline.encode_prompt(tokenizer, "chat", m)[1] for m in messages]
        out = sampling.generate(model_config, params, ids, max_new_tokens=max_new_tokens,
                                temperature=0.0, stop_tokens=models.stop_tokens(tokenizer),
                                batch_size=batch_size, batching=batching, mesh=mesh, rules=rules)
        # A reply cut by the budget keeps no end token: it ends where it was cut, and parses as
        # an error unless the verdict had already closed it.
        return [tokenizer.decode(t, skip_special_tokens=True) for t in out.tokens]

    return complete


@functools.cache
def _model_judge(model: str, max_new_tokens: int, template: str, mode: str, threshold: float) -> Judge:
    """A judge backed by the model at `model` (HF directory or .gguf), loaded once per process."""
    from r1jax import models
    config, params = models.load_pretrained(model)
    complete = model_completer(config, params, models.load_tokenizer(model), max_new_tokens=max_new_tokens)
    return Judge(complete, template=template, mode=mode, threshold=threshold)


def generative_judge(prompts: list[str], completions: list[str], answer: list[str], *,
                     model: str = "", question: list[str] | None = None, template: str = "",
                     mode: str = "verdict", threshold: float = 7, max_new_tokens: int = 64,
                     **fields) -> list[float]:
    """The judge as a reward: N floats, 1.0 accepted, 0.0 rejected, NaN on a judge error.

    Args:
      answer: N reference answers.
      model: the judge's HF directory or .gguf, loaded on first use; "" is SmolLM2-135M-Instruct
        (the wheel's GGUF), the only model available offline here, and a poor judge.
      question: N question texts; None: the prompts as they are.
    """
    if not model:
        from r1jax.models.convert import smollm2_gguf_path
        model = smollm2_gguf_path()
    judge = _model_judge(model, max_new_tokens, template, mode, float(threshold))
    verdicts = judge(question if question is not None else prompts, answer, completions)
    return [float("nan") if v.error else float(v.accepted) for v in verdicts]
