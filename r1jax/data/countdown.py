"""The Countdown game: reach a target from given numbers with + - * /, each number used once.

`make_example` draws one solvable puzzle (with a witness expression). The verifier of a model's
expression, `countdown_verify`, lives with the reward that uses it (r1jax.rewards.countdown) and
is re-exported here.
"""
import fractions
import operator
from collections.abc import Sequence

import numpy as np

from r1jax.rewards.countdown import countdown_verify  # noqa: F401 - re-exported.

_BY_SYMBOL = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_MAX_DRAWS = 10_000


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
