"""The countdown reward (the equation checked, not the target restated) and the config check
that refuses a reward that cannot verify the data kind."""
import numpy as np
import pytest

from r1jax import rewards
from r1jax.data import generated
from r1jax.rewards import countdown

NUMBERS, TARGET = [25, 5, 3, 7], 67  # (25 - 5) * 3 + 7


def _score(answer: str, numbers=NUMBERS, target=TARGET) -> float:
    completion = f"<think>Let me try.</think> <answer>{answer}</answer>"
    return rewards.get("countdown")([""], [completion], numbers=[numbers], target=[target])[0]


@pytest.mark.parametrize("answer", ["(25 - 5) * 3 + 7", "7 + 3 * (25 - 5)", "(25 - 5) * 3 + 7 = 67",
                                    r"$(25 - 5) \times 3 + 7$", "(25 − 5) × 3 + 7"])
def test_a_correct_equation_scores_one(answer):
    assert _score(answer) == 1.0


@pytest.mark.parametrize("answer", [
    "67",                          # the target restated: math_accuracy paid 1.0 for this
    "(25 - 5) * 3",                # 7 unused
    "(25 - 5) * 3 + 7 + 0",        # a number not given
    "(25 - 5) * 3 + 7 + 25 - 25",  # a number used twice
    "(25 - 5) * 3 + 7.0",          # no decimals
    "(25 - 5) * 3 + 7 ** 1",       # no other operators
    "-(5 - 25) * 3 + 7",           # no unary minus
    "__import__('os').system('true')",
    "(25 - 5) * 3 + 7 if True else 0",
    "(" * 300 + "7" + ")" * 300,   # over the size guard / the parser's nesting limit
    "(25 - 5) * 3 + 8",            # wrong value
])
def test_anything_else_scores_zero(answer):
    assert _score(answer) == 0.0


def test_only_the_first_answer_counts_and_a_tag_is_needed():
    fn = rewards.get("countdown")
    completions = ["(25 - 5) * 3 + 7",  # no answer tag
                   "<answer>67</answer>\nUser: again? Assistant: <answer>(25 - 5) * 3 + 7</answer>"]
    assert fn(["", ""], completions, numbers=[NUMBERS] * 2, target=[TARGET] * 2) == [0.0, 0.0]


def test_every_generated_witness_scores_one_and_the_target_alone_zero():
    records = generated.generate_splits("countdown", num_train=100, num_test=0, seed=5)["train"]
    fields = {"numbers": [r["numbers"] for r in records], "target": [r["target"] for r in records],
              "answer": [r["answer"] for r in records]}
    witnesses = [f"<answer>{r['solution']}</answer>" for r in records]
    targets = [f"<answer>{r['target']}</answer>" for r in records]
    prompts = [r["question"] for r in records]
    assert rewards.get("countdown")(prompts, witnesses, **fields) == [1.0] * len(records)
    assert rewards.get("countdown")(prompts, targets, **fields) == [0.0] * len(records)
    # The hole this closes: math_accuracy pays the target, which the question prints.
    assert np.mean(rewards.get("math_accuracy")(prompts, targets, **fields)) == 1.0


def test_check_rewards_fit_data():
    rewards.check_rewards_fit_data("countdown", ["countdown", "format"])
    rewards.check_rewards_fit_data("arithmetic", ["math_accuracy", "format", "language_consistency"])
    rewards.check_rewards_fit_data("code", ["code", "overlong"])
    with pytest.raises(ValueError, match=r"\['math_accuracy'\] cannot verify data.kind='countdown'.*\['countdown'\]"):
        rewards.check_rewards_fit_data("countdown", ["math_accuracy", "format"])
    with pytest.raises(ValueError, match=r"\['math_accuracy'\] cannot verify"):  # Even beside countdown.
        rewards.check_rewards_fit_data("countdown", {"countdown": 1.0, "math_accuracy": 1.0})
    with pytest.raises(ValueError, match=r"\['code', 'countdown'\] cannot verify data.kind='math'"):
        rewards.check_rewards_fit_data("math", ["code", "countdown"])
    with pytest.raises(ValueError, match="no built-in reward verifies 'chat'"):
        rewards.check_rewards_fit_data("chat", ["math_accuracy"])


def test_equation_typography():
    assert countdown.equation_of(r"<answer>$\left(25 - 5\right) \cdot 3 \div 1$</answer>") == "(25 - 5) * 3 / 1"
    assert countdown.equation_of("no tag") is None
