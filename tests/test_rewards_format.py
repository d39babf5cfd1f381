"""format (strict) and format_soft, and the tag helpers the other rewards use."""
import time

import pytest

from r1jax import rewards
from r1jax.rewards import format as fmt

GOOD = "<think>\n2 + 2 = 4\n</think>\n<answer>4</answer>"


@pytest.mark.parametrize("completion, strict, soft", [
    (GOOD, 1.0, 1.0),
    ("  <think>a</think><answer>b</answer>\n", 1.0, 1.0),
    ("Sure! " + GOOD, 0.0, 1.0),                                  # text before
    (GOOD + " Hope this helps.", 0.0, 1.0),                       # text after
    ("<think>a</think> so <answer>b</answer>", 0.0, 0.0),         # text between
    ("<think>a</think><think>b</think><answer>c</answer>", 0.0, 1.0),  # two think blocks
    ("<think>a</think><answer>b</answer><answer>c</answer>", 0.0, 1.0),  # two answers
    ("<think> </think><answer>b</answer>", 0.0, 1.0),             # empty think
    ("<think>a</think><answer></answer>", 0.0, 1.0),              # empty answer
    ("<answer>b</answer><think>a</think>", 0.0, 0.0),             # wrong order
    ("<think>a<answer>b</answer></think>", 0.0, 0.0),             # nested
    ("<think>a</think>", 0.0, 0.0),
    ("4", 0.0, 0.0),
])
def test_strict_and_soft(completion, strict, soft):
    assert rewards.get("format")([""], [completion]) == [strict]
    assert rewards.get("format_soft")([""], [completion]) == [soft]


def test_prompt_that_opens_the_think_block():
    prompt = "<|im_start|>assistant\n<think>\n"
    completion = "2 + 2 = 4\n</think>\n<answer>4</answer>"
    assert rewards.get("format")([prompt], [completion]) == [1.0]
    assert rewards.get("format")([""], [completion]) == [0.0]


def test_adversarial_completions_take_linear_time():
    completions = ["<think>" * 100_000, "</think>" * 100_000 + "<answer>", "<think>" + " " * 200_000]
    start = time.monotonic()
    rewards.get("format_soft")([""] * 3, completions)
    rewards.get("format")([""] * 3, completions)
    assert time.monotonic() - start < 1


def test_helpers():
    assert fmt.last_block("<answer>1</answer> <answer>2</answer>", "answer") == "2"
    assert fmt.last_block("<answer>1", "answer") is None
    assert fmt.think_text("<think>cot</think><answer>1</answer>") == "cot"
    assert fmt.think_text("cot without opening</think>rest") == "cot without opening"
    assert fmt.think_text("<think>unfinished cot") == "unfinished cot"
    assert fmt.think_text("no tags") == "no tags"
