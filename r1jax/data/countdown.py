"""The Countdown game: reach a target from given numbers with + - * /, each number used once.

`make_example` draws one solvable puzzle (with a witness expression); `countdown_verify` checks a
model's expression. Expressions are evaluated by walking their `ast` with exact fractions, never
with `eval`, so a completion cannot run code, and 7/2*2 is exactly 7.
"""
import ast
import fractions
import operator
from collections.abc import Sequence

import numpy as np

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_BY_SYMBOL = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
# Long enough for any honest answer, short enough that parsing a hostile completion stays cheap.
_MAX_EXPRESSION_CHARS = 500
_MAX_DRAWS = 10_000


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


def question_text(numbers: Sequence[int], target: int) -> str:
    """The puzzle as asked: numbers, target and rules. Returns str."""
    listed = ", ".join(str(n) for n in numbers)
    return (
        f"Using the numbers [{listed}], create an equation that equals {target}. You can use "
        "basic arithmetic operations (+, -, *, /) and each number must be used exactly once."
    )


def _random_solution(rng: np.random.Generator, numbers: list[int]) -> tuple[fractions.Fraction, str] | None:
    """Combines all `numbers` in a random tree of random operations.

    Returns (value, expression), or None when a step was not allowed: we keep every intermediate
    result a positive integer (no negative or fractional steps), as in the TV game, so that the
    witness looks like something a person would write.
    """
    terms = [(fractions.Fraction(n), str(n)) for n in numbers]
    while len(terms) > 1:
        i, j = rng.choice(len(terms), size=2, replace=False)
        (a, a_text), (b, b_text) = terms[i], terms[j]
        symbol = "+-*/"[rng.integers(4)]
        value = _BY_SYMBOL[symbol](a, b)  # b > 0: every term is a positive integer.
        if value <= 0 or value.denominator != 1:
            return None
        terms = [t for k, t in enumerate(terms) if k not in (i, j)] + [(value, f"({a_text} {symbol} {b_text})")]
    value, text = terms[0]
    return value, text[1:-1] if text.startswith("(") else text


def make_example(rng: np.random.Generator, *, num_numbers: int = 4, max_number: int = 100,
                 max_target: int = 1000) -> dict:
    """Draws one solvable Countdown puzzle.

    Args:
      rng: the generator to draw from (the caller seeds it, which makes data sets reproducible).
      num_numbers: how many numbers to combine (the difficulty knob; 3 or 4 as in TinyZero).
      max_number: numbers are drawn from 1..max_number.
      max_target: targets lie in 1..max_target.

    Returns:
      {"question", "answer" (the target as text), "solution" (a witness expression),
       "numbers": list[int], "target": int}.
    """
    if num_numbers < 2 or max_number < 1 or max_target < 1:
        raise ValueError(f"need num_numbers >= 2, max_number >= 1, max_target >= 1; got "
                         f"{num_numbers}, {max_number}, {max_target}")
    for _ in range(_MAX_DRAWS):  # Rejection sampling; a valid tree usually turns up in a few draws.
        numbers = [int(n) for n in rng.integers(1, max_number + 1, size=num_numbers)]
        drawn = _random_solution(rng, numbers)
        if drawn is not None and drawn[0] <= max_target:
            target = int(drawn[0])
            return {"question": question_text(numbers, target), "answer": str(target),
                    "solution": drawn[1], "numbers": numbers, "target": target}
    raise ValueError(f"no puzzle with {num_numbers} numbers in 1..{max_number} reaching a target in "
                     f"1..{max_target} found in {_MAX_DRAWS} draws; raise max_target")
