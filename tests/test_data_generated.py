"""Generated tasks: reproducible from their seed, disjoint splits, and every answer verifies."""
import pytest

from r1jax.data import countdown, generated


def test_same_seed_same_data_other_seed_other_data():
    first = generated.generate_splits("countdown", num_train=50, num_test=20, seed=3)
    again = generated.generate_splits("countdown", num_train=50, num_test=20, seed=3)
    other = generated.generate_splits("countdown", num_train=50, num_test=20, seed=4)
    assert first == again
    assert first["train"] != other["train"] and first["test"] != other["test"]


def test_a_split_does_not_depend_on_the_other_splits_size():
    small = generated.generate_splits("arithmetic", num_train=10, num_test=5, seed=0, digits=3)
    large = generated.generate_splits("arithmetic", num_train=10, num_test=50, seed=0, digits=3)
    assert large["test"][:5] == small["test"]


@pytest.mark.parametrize("digits,num_operands,operations", [(1, 2, "+-*"), (3, 2, "*"), (2, 4, "+-*")])
def test_every_arithmetic_answer_verifies(digits, num_operands, operations):
    splits = generated.generate_splits("arithmetic", num_train=300, num_test=50, seed=1, digits=digits,
                                       num_operands=num_operands, operations=operations)
    for example in splits["train"] + splits["test"]:
        expression = example["question"].removeprefix("What is ").removesuffix("?")
        operands = [int(t) for t in expression.split() if t.isdigit()]
        assert len(operands) == num_operands
        assert all(len(str(n)) == digits for n in operands if n)  # digits=1 includes 0.
        assert set(expression) - set("0123456789 ") <= set(operations)
        # Python's own arithmetic on our generated (trusted) text is the independent oracle.
        assert example["answer"] == str(eval(expression))  # pylint: disable=eval-used
        assert example["solution"] == f"{expression} = {example['answer']}"


@pytest.mark.parametrize("num_numbers,max_number,max_target", [(3, 20, 100), (4, 100, 1000), (6, 10, 1000)])
def test_every_countdown_puzzle_is_solved_by_its_witness(num_numbers, max_number, max_target):
    splits = generated.generate_splits("countdown", num_train=300, num_test=50, seed=2, num_numbers=num_numbers,
                                       max_number=max_number, max_target=max_target)
    for example in splits["train"] + splits["test"]:
        numbers, target = example["numbers"], example["target"]
        assert len(numbers) == num_numbers and all(1 <= n <= max_number for n in numbers)
        assert 1 <= target <= max_target and example["answer"] == str(target)
        assert countdown.countdown_verify(example["solution"], numbers, target)
        assert example["question"] == countdown.question_text(numbers, target)


@pytest.mark.parametrize("task", ["arithmetic", "countdown"])
def test_no_test_question_is_in_train(task):
    knobs = {"digits": 1, "operations": "+"} if task == "arithmetic" else {"num_numbers": 3, "max_number": 5}
    splits = generated.generate_splits(task, num_train=500, num_test=40, seed=0, **knobs)
    assert len(splits["train"]) == 500 and len(splits["test"]) == 40
    assert not {e["question"] for e in splits["test"]} & {e["question"] for e in splits["train"]}
    assert [e["id"] for e in splits["test"][:2]] == [f"{task}-test-0", f"{task}-test-1"]


def test_a_space_too_small_for_disjoint_splits_is_an_error():
    # 1-digit additions: 100 questions, which 2,000 test draws cover.
    with pytest.raises(ValueError, match="test split covers nearly every question"):
        generated.generate_splits("arithmetic", num_train=10, num_test=2000, seed=0, digits=1, operations="+")


@pytest.mark.parametrize("task,knobs,message", [
    ("arithmetic", {"operations": "/"}, "operations from"),
    ("arithmetic", {"digits": 0}, "digits >= 1"),
    ("countdown", {"num_numbers": 1}, "num_numbers >= 2"),
    ("sudoku", {}, "unknown generated task"),
])
def test_bad_knobs_are_errors(task, knobs, message):
    with pytest.raises(ValueError, match=message):
        generated.generate_splits(task, num_train=1, num_test=1, seed=0, **knobs)


@pytest.mark.parametrize("expression,expected", [
    ("(25 - 5) * 3 + 0", False),        # 0 is not one of the numbers.
    ("(25 - 5) * 3", True),
    ("3 * (25 - 5) = 60", True),         # A trailing "= result" is allowed.
    ("(25 - 5) * 3 = 61", True),         # ... and ignored: only the left side counts.
    ("25 * 3 - 5", False),               # 70.
    ("(25 - 5) * 3 * 1", False),         # An extra number.
    ("25 * 3", False),                   # A missing number.
    ("60", False),
    ("(25 - 5) * 3.0", False),           # Floats are not the given numbers.
    ("-(5 - 25) * 3", False),            # No unary minus.
    ("(25 - 5) ** 3", False),            # No powers.
    ("__import__('os').system('true')", False),
    ("(25 - 5) * 3 /", False),           # Syntax error.
    ("25 / (5 - 5) * 3", False),         # Division by zero.
    ("(" * 300 + "3" + ")" * 300, False),  # Too deep / too long: refused, not crashed.
])
def test_countdown_verify(expression, expected):
    assert countdown.countdown_verify(expression, [25, 5, 3], 60) is expected


def test_countdown_verify_uses_exact_fractions_and_multisets():
    assert (1 / 10 + 2 / 10) * 10 != 3                                   # In floats; exactly 3 in fractions:
    assert countdown.countdown_verify("(1 / 10 + 2 / 10) * 10", [1, 10, 2, 10, 10], 3)
    assert countdown.countdown_verify("(1 + 2) / 3", [3, 1, 2], 1)
    assert not countdown.countdown_verify("2 + 2", [2, 3], 4)          # Each given number exactly once.
    assert countdown.countdown_verify("2 + 2", [2, 2], 4)
