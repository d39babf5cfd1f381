"""Countdown reward: 1.0 when the answer is an equation that reaches the target from the given
numbers, each used exactly once, with + - * / and parentheses only; else 0.0.

Registered as `countdown`; fields `numbers` (list of int per example) and `target` (int), as the
countdown data set writes them (r1jax.data.countdown). The equation is the first complete
`<answer>…</answer>` block (`format.first_block`, so an invented next turn cannot supply it);
there is no fallback to a box or a last number: the target alone ("<answer>179</answer>", which
math_accuracy would pay, since the question prints the target) is not an equation of the numbers.

Rules, as the question states them (r1jax.data.countdown.question_text):
- every given number appears exactly once (a multiset: a number given twice is used twice);
- only integer literals, + - * /, parentheses; no unary minus, no decimals, no other syntax;
- the value, computed with exact fractions (7 / 2 * 2 is 7), equals the target; a trailing
  "= <result>" is ignored, only the left side is checked;
- common math typography is read as Python's: `×`, `\\times`, `\\cdot` as `*`; `÷`, `\\div` as
  `/`; `−` as `-`; `$…$`, `\\(…\\)`, `\\left(` / `\\right)` delimiters are dropped.

Safety: the expression is never passed to `eval`; its `ast` is walked with a whitelist of node
types (anything else rejects it), it is at most 500 characters (parsing and exact arithmetic on
that stay in the milliseconds), and without a power operator no value can explode.
"""
from __future__ import annotations

import ast
import fractions
import operator
import re
from collections.abc import Sequence

from r1jax.rewards.format import first_block
from r1jax.rewards.registry import safe_map

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
# Long enough for any honest answer, short enough that parsing a hostile completion stays cheap.
_MAX_EXPRESSION_CHARS = 500
_TYPOGRAPHY = {"×": "*", "\\times": "*", "\\cdot": "*", "÷": "/", "\\div": "/", "−": "-",
               "\\left": "", "\\right": "", "\\(": "", "\\)": "", "\\[": "", "\\]": "", "$": ""}
_TYPOGRAPHY_PATTERN = re.compile("|".join(re.escape(k) for k in sorted(_TYPOGRAPHY, key=len, reverse=True)))


def evaluate_expression(expression: str) -> tuple[fractions.Fraction, list[int]]:
    """Evaluates an arithmetic expression of non-negative integers, + - * / and parentheses.

    Args:
      expression: e.g. "(25 - 5) * 3".

    Returns:
      (value as an exact Fraction, the integer literals in the order they appear).

    Raises:
      ValueError: not such an expression (other syntax, names, calls, unary minus, floats),
        division by zero, or longer than 500 characters.
    """
    if len(expression) > _MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {_MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from e
    literals: list[int] = []

    def walk(node: ast.AST) -> fractions.Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            literals.append(node.value)
            return fractions.Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ValueError("division by zero")
            return _OPERATORS[type(node.op)](left, right)
        raise ValueError(f"unsupported element {type(node).__name__} in {expression!r}")

    return walk(tree.body), literals


def countdown_verify(expression: str, numbers: Sequence[int], target: int) -> bool:
    """True iff `expression` uses each of `numbers` exactly once and evaluates to `target`.

    Args:
      expression: the model's equation; a trailing "= <result>" is ignored (only the left side
        is checked), because models often write "(25 - 5) * 3 = 60".
      numbers: the puzzle's numbers (a multiset: a number given twice may be used twice).
      target: the number to reach.

    Returns:
      bool; False for anything malformed (never raises on model output).
    """
    left = expression.split("=", 1)[0]
    try:
        value, literals = evaluate_expression(left)
    except (ValueError, RecursionError):
        return False
    return sorted(literals) == sorted(int(n) for n in numbers) and value == target


def equation_of(completion: str) -> str | None:
    """The equation a completion answers with: its first `<answer>` block, typography read as
    Python operators (see module docstring); None without an answer block."""
    block = first_block(completion, "answer")
    if block is None:
        return None
    return _TYPOGRAPHY_PATTERN.sub(lambda m: _TYPOGRAPHY[m.group()], block).strip()


def countdown(prompts: list[str], completions: list[str], numbers: list[Sequence[int]],
              target: list[int], **fields) -> list[float]:
    """Countdown reward: N floats in {0, 1} (see module docstring).

    Args:
      numbers: N lists of the puzzle's numbers.
      target: N targets.
    """
    def score(completion: str, given: Sequence[int], goal: int) -> float:
        equation = equation_of(completion)
        return float(equation is not None and countdown_verify(equation, given, int(goal)))

    return safe_map(score, completions, numbers, target)
