"""math_accuracy: every GSM8K solution in every answer form, LaTeX equivalences, guards."""
import json
import os
import threading
import time

import pytest

from r1jax import rewards
from r1jax.rewards import math as math_reward

GSM8K = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "gsm8k", "train.jsonl")


@pytest.fixture(scope="module")
def gsm8k():
    if not os.path.exists(GSM8K):
        pytest.skip(f"GSM8K not found at {GSM8K}")
    with open(GSM8K) as f:
        return [json.loads(line) for line in f]


def _forms(solution, final):
    """The worked solution rewritten with `final` as its answer, in each supported form."""
    reasoning = solution.rpartition("####")[0].strip()
    return {"answer": f"<think>\n{reasoning}\n</think>\n<answer>{final}</answer>",
            "boxed": f"{reasoning}\nSo the answer is $\\boxed{{{final}}}$.",
            "last_number": f"{reasoning}\nSo the answer is {final}."}


def test_every_gsm8k_solution_in_every_form_scores_one(gsm8k):
    fn = rewards.get("math_accuracy", sources=math_reward.SOURCES)  # last_number is opt-in.
    for form in ("answer", "boxed", "last_number"):
        completions = [_forms(row["answer"], math_reward.gold_answer(row["answer"]))[form] for row in gsm8k]
        scores = fn([row["question"] for row in gsm8k], completions, answer=[row["answer"] for row in gsm8k])
        failures = [c[-60:] for c, s in zip(completions, scores) if s != 1.0]
        assert not failures, (form, len(failures), failures[:5])


def test_perturbed_gsm8k_answers_score_zero(gsm8k):
    fn = rewards.get("math_accuracy", sources=math_reward.SOURCES)
    for form in ("answer", "boxed", "last_number"):
        completions = []
        for row in gsm8k:
            gold = math_reward.gold_answer(row["answer"]).replace(",", "")
            completions.append(_forms(row["answer"], str(int(gold) + 1))[form])
        scores = fn([""] * len(gsm8k), completions, answer=[row["answer"] for row in gsm8k])
        assert sum(scores) == 0.0, form


def test_exact_numbers_agree_with_math_verify(gsm8k):
    """The exact comparison of numbers gives math-verify's verdict on plain numbers, on every
    4th row (1,869 rows, ~5 s): all 7,473 through sympy take ~20 s, more than this check is worth."""
    for row in gsm8k[::4]:
        gold = math_reward.gold_answer(row["answer"])
        for pred in (gold, str(int(gold.replace(",", "")) + 1)):
            by_sympy = math_reward._verify(math_reward._parsed_gold(gold), math_reward._parse(pred, 5), 5)
            assert by_sympy == (math_reward.numeric_value(pred) == math_reward.numeric_value(gold)), (gold, pred)


@pytest.mark.parametrize("pred, gold", [
    (r"\frac{1}{2}", "0.5"), ("0.5", r"\frac{1}{2}"), (r"2\sqrt{2}", r"\sqrt{8}"), (r"\sqrt{8}", r"2\sqrt{2}"),
    (r"\dfrac{3}{4}", "0.75"), ("1/3", r"\frac{1}{3}"), (r"\{1, 2\}", r"\{2, 1\}"), ("x = 5", "5"),
    ("$1,234", "#### 1,234"), ("72 clips", "#### 72"), ("**72**", "72"), ("18.00", "18"), (r"\pi/2", r"\frac{\pi}{2}"),
])
def test_latex_equivalences_score_one(pred, gold):
    assert math_reward.answer_score(f"<answer>{pred}</answer>", gold) == 1.0


@pytest.mark.parametrize("pred, gold", [
    (r"\frac{1}{3}", "0.5"), (r"3\sqrt{2}", r"\sqrt{8}"), ("73", "#### 72"), ("-7", "7"), ("(1, 2)", "[1, 2]"),
])
def test_different_answers_score_zero(pred, gold):
    assert math_reward.answer_score(f"<answer>{pred}</answer>", gold) == 0.0


def test_extraction_order_and_configuration():
    text = r"first 3, then \boxed{4}, <answer>5</answer> and finally 6"
    assert math_reward.extract_answer(text) == "5"
    assert math_reward.extract_answer(text, sources=("boxed", "answer")) == "4"
    assert math_reward.extract_answer(text, sources=("last_number",)) == "6"
    assert math_reward.extract_answer(r"\boxed{\frac{1}{2}} end") == r"\frac{1}{2}"
    last = ("last_number",)
    assert math_reward.extract_answer("5-3 = 2 so x=-4.", last) == "-4"
    assert math_reward.extract_answer("total 1,234.5 apples.", last) == "1,234.5"
    assert math_reward.extract_answer("total 1,234.5 apples.") is None  # Strict by default.
    assert math_reward.extract_answer("no answer here", math_reward.SOURCES) is None
    fn = rewards.get("math_accuracy", sources=("answer",))
    assert fn([""], [r"\boxed{72}"], answer=["72"]) == [0.0]
    with pytest.raises(ValueError, match="unknown answer source"):
        math_reward.extract_answer("1", sources=("last_word",))


def test_off_the_main_thread_explosive_answers_score_zero_at_once():
    """No signal-based timeout there: the guards alone keep sympy from computing 9^(9^(9^9))."""
    completions = [r"\boxed{9^{9^{9^{9}}}}", r"<answer>10^{10^{10}}</answer>", "<answer>2^{123456789}</answer>",
                   "<answer>9**9**9**9</answer>", r"<answer>99999999!</answer>", "<answer>" + "1" * 2000 + "</answer>",
                   r"<answer>\frac{1}{2}</answer>"]
    answers = [r"5\sqrt{2}"] * 6 + ["0.5"]  # Not a number: the math-verify path.
    scores = []
    worker = threading.Thread(target=lambda: scores.extend(
        rewards.get("math_accuracy")([""] * len(completions), completions, answer=answers)))
    start = time.monotonic()
    worker.start()
    worker.join(timeout=30)
    assert scores == [0.0] * 6 + [1.0]
    assert time.monotonic() - start < 2


def test_timeout_is_an_error_not_a_hang(monkeypatch):
    """A comparison that outlives timeout_s is NaN (an error for combine), after ~1 s.

    sympy's comparison is made to hang for sure: how long a real expression takes depends on the
    machine (nested parentheses timed out on one and finished in time on another)."""
    import math_verify.grader

    def hang(*args, **kwargs):
        time.sleep(60)

    monkeypatch.setattr(math_verify.grader, "sympy_expr_eq", hang)
    start = time.monotonic()
    total, metrics = rewards.combine({"math_accuracy": 1.0}, ["", ""],
                                     ["<answer>x + 2</answer>", "<answer>5</answer>"],
                                     {"answer": ["x + 1", "5"]},  # "x + 1" is not a number: sympy.
                                     params={"math_accuracy": {"timeout_s": 1}})
    assert time.monotonic() - start < 5
    assert total.tolist() == [0.0, 1.0]
    assert metrics["reward_errors/math_accuracy"] == 1.0


def test_unparseable_gold_is_an_error():
    scores = rewards.get("math_accuracy")([""], ["<answer>5</answer>"], answer=["no answer at all"])
    assert scores[0] != scores[0]  # NaN


# Reward hacks (issue 13): each case scored 1.0 before the strict numeric rule.
@pytest.mark.parametrize("completion, gold", [
    ("<answer>23 + 45</answer>", "68"),                       # the question restated
    (r"<answer>\boxed{23+45}</answer>", "68"),
    (r"\boxed{23+45}", "68"),
    ("<answer>136/2</answer>", "68"),                         # a fraction not in lowest terms
    (r"<answer>\sqrt{4624}</answer>", "68"),
    ("<answer>5 apples, 3 pears</answer>", "3"),              # hedges: several candidates
    ("<answer>3 or 5</answer>", "5"),
    ("<answer>x = 5 or x = 3</answer>", "3"),
    ("<answer>The answer is 24, then total 72</answer>", "24"),
    ("23 + 45 = 68. Check: 68 - 45 = 23", "23"),              # no tag: no answer by default
    (r"<answer>$\sqrt{2}$ cm</answer>", r"\sqrt{2}"),        # prose around a symbolic answer
])
def test_restated_questions_hedges_and_untagged_replies_score_zero(completion, gold):
    assert rewards.get("math_accuracy")([""], [completion], answer=[gold]) == [0.0]


@pytest.mark.parametrize("pred", ["72", "$72", r"\$72", "72 clips", "72.", "The answer is 72.", "x = 72",
                                  "48 + 24 = 72", r"\boxed{72}", r"\text{72 clips}", "**72**"])
def test_a_plain_number_in_any_usual_dress_scores_one(pred):
    assert math_reward.answer_score(f"<answer>{pred}</answer>", "#### 72") == 1.0


def test_the_first_answer_is_scored_not_one_in_an_invented_next_turn():
    completion = ("<think>4 + 5 = 9</think> <answer>9</answer>\nUser: and 2 + 3? Assistant: "
                  "<think>easy</think> <answer>5</answer>")
    fn = rewards.get("math_accuracy")
    assert fn(["", ""], [completion, completion], answer=["9", "5"]) == [1.0, 0.0]


def test_last_number_is_used_only_where_configured():
    reply = "47 + 38 = 85"
    assert rewards.get("math_accuracy")([""], [reply], answer=["85"]) == [0.0]
    assert rewards.get("math_accuracy", sources=math_reward.SOURCES)([""], [reply], answer=["85"]) == [1.0]


@pytest.mark.parametrize("a, b, same", [
    ("0.5", r"\frac{1}{2}", True), ("1/2", "0.5", True), ("$1,234", "1234.0", True), ("72 clips", "72", True),
    ("68", "23 + 45", False), ("3", "0.5", False), (r"\sqrt{8}", r"2\sqrt{2}", True), (r"\{1, 2\}", r"\{2, 1\}", True),
    (r"\sqrt{8}", r"3\sqrt{2}", False), ("3 or 5", "3 or  5", True), ("3 or 5", "5", False),
])
def test_same_answer(a, b, same):
    assert math_reward.same_answer(a, b) is same
    assert math_reward.same_answer(b, a) is same
