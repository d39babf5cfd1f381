"""Math accuracy: 1.0 when the completion's final answer equals the gold answer, else 0.0.

Final answer (`extract_answer`): the first of `sources` that finds one, by default
  "answer"       the content of the last `<answer>…</answer>`,
  "boxed"        the content of the last `\\boxed{…}` (or `\\fbox{…}`),
  "last_number"  the last number in the completion (`-1,234.5`; a `-` after a digit is a minus
                 sign of subtraction, not of the number).
Gold answer (`gold_answer`): the text after the last `####` of a GSM8K worked solution, else the
whole field (a bare answer or LaTeX: `42`, `\\frac{1}{2}`, `2\\sqrt{2}`).

Comparison: math-verify (`parse` both, `verify(gold, pred)`), which handles fractions,
decimals, LaTeX, sets, intervals and equations. When both sides are plain decimal numbers they
are compared exactly without sympy: the same verdict (checked on every GSM8K row in the tests)
at a hundredth of the cost, which is what keeps GSM8K rewards cheap.

Guards, so that no completion can hang a training step:
- extracted answers longer than `max_answer_chars`, and answers whose value would take sympy
  minutes to compute (power towers, huge exponents or factorials: `_is_explosive`), score 0;
- in the main thread, math-verify's own signal-based timeouts (`timeout_s`) bound the rest; off
  the main thread signals are unavailable and only the guards above apply;
- a timeout or an unparseable gold answer is an error (NaN: 0 and an error count, see
  registry); an unparseable prediction is simply wrong (0.0).
"""
from __future__ import annotations

import functools
import itertools
import re
import threading
from decimal import Decimal

import math_verify
from math_verify.errors import TimeoutException

from r1jax.rewards.format import last_block
from r1jax.rewards.registry import safe_map

SOURCES = ("answer", "boxed", "last_number")
GOLD_TIMEOUT_S = 5

_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
# A leading "-" counts only when not preceded by a word character or ")" ("5-3" ends in 3).
_LAST_NUMBER = re.compile(rf"(?:(?<![\w)\]])-)?(?<![\w.,]){_NUMBER}")
_PLAIN_NUMBER = re.compile(rf"-?{_NUMBER}")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"[{}]")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")
_EXPLOSIVE = re.compile(
    r"\^\s*\{[^{}]*\^"                       # nested exponent: 9^{9^{9}}
    r"|\^\s*\d\s*\^"                         # 9^9^9
    r"|\^\s*\{?\s*\(?\s*\d{7,}"              # 2^{10000000}
    r"|[\d)]\s*\*\*\s*\(?\s*\d+\s*\)?\s*\*\*"  # 9**9**9 (but not markdown **72**)
    r"|\d{5,}\s*!"                           # 99999!
)


def gold_answer(answer: str) -> str:
    """The final answer of a gold field: after GSM8K's last `####`, else the stripped field."""
    return answer.rpartition("####")[2].strip()


def _last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{…}` with balanced braces, or None."""
    matches = list(_BOXED.finditer(text))
    if not matches:
        return None
    start = matches[-1].end()
    depth = 1
    for brace in _BRACE.finditer(text, start):
        depth += 1 if brace.group() == "{" else -1
        if depth == 0:
            return text[start:brace.start()]
    return None


def _last_number(text: str) -> str | None:
    """The last number of `text` as written (`-1,234.5`), or None."""
    match = None
    for match in _LAST_NUMBER.finditer(text):
        pass
    return match.group(0) if match else None


_EXTRACTORS = {
    "answer": lambda text: last_block(text, "answer"),
    "boxed": _last_boxed,
    "last_number": _last_number,
}


def extract_answer(completion: str, sources=SOURCES) -> str | None:
    """The final answer (stripped of spaces and markdown emphasis) from the first of `sources`
    (see module docstring) that finds a non-empty one, or None."""
    for source in sources:
        if source not in _EXTRACTORS:
            raise ValueError(f"unknown answer source {source!r}; choose from {SOURCES}")
        found = _EXTRACTORS[source](completion)
        # Markdown emphasis around the answer (`**72**`) is not part of it.
        found = found.strip().strip("*_").strip() if found else None
        if found:
            return found
    return None


def _plain_number(text: str) -> Decimal | None:
    """The value of a plain decimal number (`72`, `$1,234.50`, `-3.`), else None."""
    text = text.strip().removeprefix("\\$").removeprefix("$").rstrip(".").strip()
    return Decimal(text.replace(",", "")) if _PLAIN_NUMBER.fullmatch(text) else None


def _numbers_equal(gold: str, pred: str) -> bool | None:
    """Exact verdict for two plain numbers, or None to defer to math-verify.

    Unequal non-integers are deferred because math-verify rounds (0.333333 vs 0.3333333).
    """
    a, b = _plain_number(gold), _plain_number(pred)
    if a is None or b is None:
        return None
    if a == b:
        return True
    return False if a == a.to_integral_value() and b == b.to_integral_value() else None


def _is_explosive(text: str) -> bool:
    """True for expressions whose exact value is astronomically large (see _EXPLOSIVE)."""
    return _EXPLOSIVE.search(text) is not None


def _latex_input(span: str) -> str:
    """What to give math-verify's parser for an extracted answer.

    Bare math (`2\\sqrt{2}`, `\\frac{1}{2}`) is wrapped in `$…$`: unwrapped, the parser reads
    `2\\sqrt{2}` as 2. Spans that are already delimited or that contain words ("72 clips",
    "The answer is $5$") go as they are, and the parser finds the answer in the sentence.
    """
    if "$" in span or "\\boxed" in span or _WORD.search(_LATEX_COMMAND.sub("", span)):
        return span
    return f"${span}$"


def _timeout(seconds: int | None) -> int | None:
    """`seconds` in the main thread; None elsewhere, where math-verify's signal alarm fails."""
    return seconds if threading.current_thread() is threading.main_thread() else None


def _parse(text: str, timeout: int | None) -> list:
    """math_verify.parse; [] for text it cannot parse; a timeout raises TimeoutError."""
    try:
        return math_verify.parse(_latex_input(text), parsing_timeout=timeout, raise_on_error=True)
    except TimeoutException as e:  # A BaseException: turn it into an error safe_map counts.
        raise TimeoutError(f"math-verify parse timed out on {text[:80]!r}") from e
    except Exception:  # noqa: BLE001 - an unparseable answer is a wrong answer.
        return []


@functools.lru_cache(maxsize=8192)
def _parsed_gold(gold: str) -> tuple:
    """The parsed gold answer; cached because the G completions of a prompt share it."""
    parsed = _parse(gold, _timeout(GOLD_TIMEOUT_S))
    if not parsed:
        raise ValueError(f"gold answer {gold!r} does not parse")
    return tuple(parsed)


def _verify(gold: tuple, pred: list, timeout: int | None) -> bool:
    """math_verify.verify over every (gold, pred) pair; a timeout raises TimeoutError.

    Pairs are verified one by one because with raise_on_error=True (needed to tell timeouts
    from mismatches) one failing pair would otherwise hide the others.
    """
    for g, p in itertools.product(gold, pred):
        try:
            if math_verify.verify(g, p, timeout_seconds=timeout, raise_on_error=True):
                return True
        except TimeoutException as e:
            raise TimeoutError("math-verify verify timed out") from e
        except Exception:  # noqa: BLE001 - incomparable objects are not equal.
            continue
    return False


@functools.lru_cache(maxsize=65536)
def _sympy_equal(gold: str, pred: str, timeout: int | None) -> bool:
    """math-verify's verdict on two answer strings; cached because the samples of a group
    often share their answer (timeouts raise, and are not cached)."""
    return _verify(_parsed_gold(gold), _parse(pred, timeout), timeout)


def answer_score(completion: str, answer: str, sources=SOURCES, max_answer_chars: int = 1000,
                 timeout_s: int = 2) -> float:
    """1.0 if the final answer of `completion` equals the gold `answer` (see module docstring)."""
    gold = gold_answer(answer)
    pred = extract_answer(completion, sources)
    if pred is None or len(pred) > max_answer_chars or _is_explosive(pred):
        return 0.0
    exact = _numbers_equal(gold, pred)
    if exact is not None:
        return float(exact)
    return float(_sympy_equal(gold, pred, _timeout(timeout_s)))


def math_accuracy(prompts: list[str], completions: list[str], answer: list[str], *,
                  sources=SOURCES, max_answer_chars: int = 1000, timeout_s: int = 2,
                  **fields) -> list[float]:
    """Math accuracy reward: N floats in {0, 1} (NaN: failed to score).

    Args:
      answer: N gold answers (GSM8K `… #### 42` or a bare answer / LaTeX).
      sources: answer sources in order of preference (subset of SOURCES).
      max_answer_chars: longer extracted answers score 0.
      timeout_s: math-verify's per-call timeout (main thread only), whole seconds.
    """
    return safe_map(lambda c, a: answer_score(c, a, sources, max_answer_chars, timeout_s),
                    completions, answer)
