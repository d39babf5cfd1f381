"""Math accuracy: 1.0 when the completion's final answer equals the gold answer, else 0.0.

Final answer (`extract_answer`): the first of `sources` that finds one, by default the strict
ones (DEFAULT_SOURCES):
  "answer"       the content of the first complete `<answer>…</answer>` (`format.first_block`:
                 an answer in an invented next turn after it is not the answer);
  "boxed"        the content of the last `\\boxed{…}` (or `\\fbox{…}`);
and only where a config asks for it (`sources=SOURCES`):
  "last_number"  the last number in the completion (`-1,234.5`; a `-` after a digit is a minus
                 sign of subtraction, not of the number). It pays a reply with no tag at all, and
                 a reply that ends with a self-check ("… = 68. Check: 68 - 45 = 23") is scored on
                 23: use it only for prompts that ask for a bare number (the default R1-Zero
                 config's "Reply with just the number." chat prompt), never with R1 templates.
Gold answer (`gold_answer`): the text after the last `####` of a GSM8K worked solution, else the
whole field (a bare answer or LaTeX: `42`, `\\frac{1}{2}`, `2\\sqrt{2}`).

Comparison, when the gold answer is a number (`numeric_value` reads it: an integer or decimal,
`1,234`, or a fraction in lowest terms `3/4`, `\\frac{3}{4}`): the prediction must be a number
too, and is compared exactly (as a fraction). A prediction is a number when, after dropping
markup (`$…$`, `\\(…\\)`, `\\boxed{}`, `\\text{}`, `**`, a currency sign, `%`, a final period)
and everything up to an `=` whose left side is an expression or a one-letter name (`x = 5`,
`23 + 45 = 68`), what is left holds exactly one number literal, no operator (+ - * / ^ × ÷ ±,
LaTeX commands) and otherwise only words and punctuation: "72", "$72", "72 clips", "x = 5",
"The answer is 72." and "\\frac{1}{2}" (for 0.5) are accepted; "23 + 45", "\\boxed{23+45}",
"136/2" (a fraction not in lowest terms), "\\sqrt{4624}", "5 apples, 3 pears", "3 or 5",
"x = 5 or x = 3" and "The answer is 24, then total 72" score 0. Why: math-verify evaluates
expressions and picks a number out of prose, so against gold 68 it pays the question restated
("23 + 45": on generated arithmetic the question IS an expression equal to its answer) and
hedges that list several candidates. A number that must be a literal and must be alone is what
"the model found the answer" means for a numeric reference; it also costs no sympy call, which
keeps GSM8K rewards cheap.

Other gold answers (expressions, sets, intervals, LaTeX): math-verify (`parse` both,
`verify(gold, pred)`), on an answer without prose (no word of two or more letters outside LaTeX
commands: "\\sqrt{2} cm" and "\\frac{1}{2} or \\frac{1}{3}" score 0). Known to remain: such an
answer may still restate a symbolic question's expression (math-verify cannot tell a
restatement from a simplification).

`same_answer` is the one notion of "equal answers", shared with the cons@k vote
(r1jax.eval.metrics): numbers compare exactly, anything else through math-verify.

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
import math
import re
import threading
from decimal import Decimal
from fractions import Fraction

import math_verify
from math_verify.errors import TimeoutException

from r1jax.rewards.format import first_block
from r1jax.rewards.registry import safe_map

SOURCES = ("answer", "boxed", "last_number")
DEFAULT_SOURCES = ("answer", "boxed")
GOLD_TIMEOUT_S = 5

_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
# A leading "-" counts only when not preceded by a word character or ")" ("5-3" ends in 3).
_LAST_NUMBER = re.compile(rf"(?:(?<![\w)\]])-)?(?<![\w.,]){_NUMBER}")
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
# numeric_value: markup around a number, removed before reading it (see module docstring).
_WRAPPER = re.compile(r"\\(?:boxed|fbox|text|textbf|textrm|mathrm|mathbf)\s*\{([^{}]*)\}")
_LATEX_FRACTION = re.compile(r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_ESCAPED_SIGN = re.compile(r"\\([$%])")
_MARKUP = re.compile(r"\\[(),;! \[\]]|\$|\*\*|__")
_NUMERAL = re.compile(rf"-?{_NUMBER}(?:\s*/\s*\d+)?")
_OPERATOR = re.compile(r"[+*/^×÷±=<>\\{}\[\]|&#~@]|(?<![^\W\d_])-|-(?![^\W\d_])")
_MAX_NUMERIC_CHARS = 200  # A numeric answer is short; longer spans are not read as one.


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
    "answer": lambda text: first_block(text, "answer"),
    "boxed": _last_boxed,
    "last_number": _last_number,
}


def extract_answer(completion: str, sources=DEFAULT_SOURCES) -> str | None:
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


def ballot(completion: str, sources=DEFAULT_SOURCES, **scoring_params) -> str | None:
    """A completion's vote in cons@k: its answer as math_accuracy extracts it with the same
    params (`scoring_params`, e.g. timeout_s, do not change what is extracted)."""
    return extract_answer(completion, sources)


def _fraction(numeral: str) -> Fraction | None:
    """The value of one numeral (`-1,234.5`, `3/4`); None for a fraction not in lowest terms
    (`136/2` restates a division, `4/1` an integer)."""
    numerator, _, denominator = numeral.replace(",", "").replace(" ", "").partition("/")
    if not denominator:
        return Fraction(Decimal(numerator))
    a, b = int(numerator), int(denominator)
    return Fraction(a, b) if b > 1 and math.gcd(a, b) == 1 else None


def _has_prose(text: str) -> bool:
    """True when `text` has a word of two or more letters outside LaTeX commands."""
    return _WORD.search(_LATEX_COMMAND.sub("", text)) is not None


def numeric_value(answer: str) -> Fraction | None:
    """The number an answer states, or None when it is not one number (see module docstring).

    "72", "$72", "72 clips", "x = 5", "23 + 45 = 68", "\\frac{1}{2}" -> their value; "23 + 45",
    "136/2", "\\sqrt{4624}", "3 or 5", "5 apples, 3 pears" -> None.
    """
    if len(answer) > _MAX_NUMERIC_CHARS:
        return None
    text = answer.replace("\u2212", "-").replace("\u00a0", " ")
    for _ in range(4):  # Nested wrappers: \boxed{\text{72}}.
        text = _WRAPPER.sub(r" \1 ", text)
    text = _LATEX_FRACTION.sub(r" \1/\2 ", text)
    text = _MARKUP.sub(" ", _ESCAPED_SIGN.sub(r"\1", text))
    if text.count("=") > 1:
        return None
    left, equals, right = text.rpartition("=")
    if equals and _has_prose(left):  # "x = 5 or x = 3", "The total = 72": not one number.
        return None
    text = right if equals else text
    numerals = list(_NUMERAL.finditer(text))
    if len(numerals) != 1:
        return None
    numeral = numerals[0]
    before, after = text[:numeral.start()], text[numeral.end():]
    if before[-1:].isalnum() or before[-1:] in (".", "_") or after[:1].isalnum() or after[:1] == "_":
        return None  # "2x", "x2", ".5", "1e5": part of something else.
    if _OPERATOR.search(before + " " + after):
        return None
    return _fraction(numeral.group())


def _is_explosive(text: str) -> bool:
    """True for expressions whose exact value is astronomically large (see _EXPLOSIVE)."""
    return _EXPLOSIVE.search(text) is not None


def _latex_input(span: str) -> str:
    """What to give math-verify's parser for an extracted answer.

    Bare math (`2\\sqrt{2}`, `\\frac{1}{2}`) is wrapped in `$…$`: unwrapped, the parser reads
    `2\\sqrt{2}` as 2. Spans that are already delimited or that contain words (a gold answer
    written as a sentence, "The answer is $5$"; predictions with words never get here) go as
    they are, and the parser finds the answer in the sentence.
    """
    if "$" in span or "\\boxed" in span or _has_prose(span):
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


@functools.lru_cache(maxsize=8192)
def _gold_number(gold: str) -> Fraction | None:
    """numeric_value of a gold answer; cached because the G completions of a prompt share it."""
    return numeric_value(gold)


def same_answer(a: str, b: str, timeout_s: int | None = 2) -> bool:
    """Whether two extracted answers state the same thing: the reward's notion of equality,
    which the cons@k vote (r1jax.eval.metrics) uses too.

    Two numbers (`numeric_value`) compare exactly ("0.5", "1/2" and "\\frac{1}{2}" are one
    answer); a number never equals an answer that is not one ("68" and "23 + 45" differ, as the
    reward scores them); two other answers go to math-verify (a timeout or an answer it cannot
    parse: equal only if the texts are), except prose and explosive ones, compared as text.
    """
    x, y = numeric_value(a), numeric_value(b)
    if x is not None or y is not None:
        return x == y
    if any(_has_prose(t) or _is_explosive(t) for t in (a, b)):
        return " ".join(a.split()) == " ".join(b.split())
    try:
        return _sympy_equal(a, b, _timeout(timeout_s))
    except (ValueError, TimeoutError):
        return " ".join(a.split()) == " ".join(b.split())


def answer_score(completion: str, answer: str, sources=DEFAULT_SOURCES, max_answer_chars: int = 1000,
                 timeout_s: int = 2) -> float:
    """1.0 if the final answer of `completion` equals the gold `answer` (see module docstring)."""
    gold = gold_answer(answer)
    pred = extract_answer(completion, sources)
    if pred is None or len(pred) > max_answer_chars:
        return 0.0
    gold_number = _gold_number(gold)
    if gold_number is not None:
        return float(numeric_value(pred) == gold_number)
    if _has_prose(pred) or _is_explosive(pred):
        return 0.0
    return float(_sympy_equal(gold, pred, _timeout(timeout_s)))


def math_accuracy(prompts: list[str], completions: list[str], answer: list[str], *,
                  sources=DEFAULT_SOURCES, max_answer_chars: int = 1000, timeout_s: int = 2,
                  **fields) -> list[float]:
    """Math accuracy reward: N floats in {0, 1} (NaN: failed to score).

    Args:
      answer: N gold answers (GSM8K `… #### 42` or a bare answer / LaTeX).
      sources: answer sources in order of preference (subset of SOURCES; default the strict
        DEFAULT_SOURCES, see the module docstring for when "last_number" belongs here).
      max_answer_chars: longer extracted answers score 0.
      timeout_s: math-verify's per-call timeout (main thread only), whole seconds.
    """
    return safe_map(lambda c, a: answer_score(c, a, sources, max_answer_chars, timeout_s),
                    completions, answer)
