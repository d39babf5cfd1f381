"""Multi-digit arithmetic questions ("What is 482 * 37?") with exact integer answers."""
import numpy as np

from r1jax.rewards.countdown import evaluate_expression

_SUPPORTED_OPERATIONS = "+-*"


def make_example(rng: np.random.Generator, *, digits: int = 2, num_operands: int = 2,
                 operations: str = "+-*") -> dict:
    """Draws one arithmetic question.

    Args:
      rng: the generator to draw from (the caller seeds it, which makes data sets reproducible).
      digits: digits per operand, the difficulty knob (digits=1 draws 0..9, digits=3 100..999).
      num_operands: operands per expression; with more than two, the usual precedence applies.
      operations: the operators to draw from, a subset of "+-*" (division is left out because
        its answers would not be integers).

    Returns:
      {"question", "answer" (the integer result as text), "solution" (the expression = result)}.
    """
    if digits < 1 or num_operands < 2 or not operations or set(operations) - set(_SUPPORTED_OPERATIONS):
        raise ValueError(f"need digits >= 1, num_operands >= 2 and operations from {_SUPPORTED_OPERATIONS!r}; "
                         f"got {digits}, {num_operands}, {operations!r}")
    low = 0 if digits == 1 else 10 ** (digits - 1)
    operands = rng.integers(low, 10**digits, size=num_operands)
    symbols = [operations[k] for k in rng.integers(len(operations), size=num_operands - 1)]
    expression = str(operands[0]) + "".join(f" {s} {n}" for s, n in zip(symbols, operands[1:]))
    value, _ = evaluate_expression(expression)  # Exact, and integral: no division.
    answer = str(int(value))
    return {"question": f"What is {expression}?", "answer": answer, "solution": f"{expression} = {answer}"}
