"""The registry: names, params, and combine's total and metrics, errors included."""
import numpy as np
import pytest

from r1jax import rewards
from r1jax.rewards import registry


def test_builtin_names():
    for name in ("math_accuracy", "countdown", "format", "format_soft", "language_consistency", "code", "overlong"):
        assert name in rewards.names()
        assert callable(rewards.get(name))


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(KeyError, match="math_accuracy"):
        rewards.get("accuracy")


def test_register_and_duplicates(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTERED", {})

    @rewards.register("length_chars")
    def length_chars(prompts, completions, *, scale=1.0, **fields):
        return [scale * len(c) for c in completions]

    assert rewards.get("length_chars", scale=2.0)([""], ["abc"]) == [6.0]
    with pytest.raises(ValueError, match="already registered"):
        rewards.register("format", length_chars)
    with pytest.raises(TypeError, match="scale"):
        rewards.get("length_chars", scael=2.0)


def test_combine_weights_metrics_and_errors(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTERED", {})
    rewards.register("ones", lambda prompts, completions, **fields: [1.0] * len(completions))
    rewards.register("broken", lambda prompts, completions, **fields: 1 / 0)
    rewards.register("short", lambda prompts, completions, **fields: [1.0])
    rewards.register("flaky", lambda prompts, completions, **fields: registry.safe_map(
        lambda c: 1.0 / int(c), completions))
    completions = ["1", "0", "4"]
    total, metrics = rewards.combine([("ones", 0.5), ("broken", 1.0), ("short", 1.0), ("flaky", 2.0)],
                                     ["p"] * 3, completions, {"answer": ["x"] * 3})
    assert total.dtype == np.float32 and total.shape == (3,)
    np.testing.assert_allclose(total, [0.5 + 2.0, 0.5, 0.5 + 0.5])
    assert metrics["reward/ones"] == 1.0
    assert metrics["reward_errors/ones"] == 0.0
    assert metrics["reward_errors/broken"] == 3.0 and metrics["reward/broken"] == 0.0
    assert metrics["reward_errors/short"] == 3.0
    assert metrics["reward_errors/flaky"] == 1.0
    assert metrics["reward/flaky"] == pytest.approx((1.0 + 0.0 + 0.25) / 3)
    assert metrics["reward/total"] == pytest.approx(float(total.mean()))


def test_combine_with_a_config_mapping_and_params():
    ml_collections = pytest.importorskip("ml_collections")
    specs = ml_collections.ConfigDict({"format": 0.5, "overlong": 1.0})
    params = ml_collections.ConfigDict({"overlong": {"max_completion_len": 10, "overlong_buffer": 5}})
    completions = ["<think>a</think><answer>1</answer>", "b"]
    total, metrics = rewards.combine(specs, ["", ""], completions, {"completion_lengths": [3, 10]}, params)
    np.testing.assert_allclose(total, [0.5, -1.0])
    assert set(metrics) == {"reward/format", "reward_errors/format", "reward/overlong",
                            "reward_errors/overlong", "reward/total"}


def test_combine_on_an_empty_batch():
    total, metrics = rewards.combine({"format": 1.0}, [], [], {})
    assert total.shape == (0,) and metrics["reward/total"] == 0.0


def test_one_reward_under_two_names_with_its_own_params():
    completions = ["<think>a</think> <answer>1</answer>", "just 1"]
    specs = {"strict": 1.0, "soft": 0.5, "answer_first": 2.0}
    params = {"strict": {"reward": "format"}, "soft": {"reward": "format_soft"},
              "answer_first": {"reward": "math_accuracy", "sources": ("answer",)}}
    total, failed, components = rewards.score(specs, ["q", "q"], completions,
                                              {"answer": ["1", "1"]}, params)
    expected = {"strict": rewards.get("format")(["q", "q"], completions),
                "soft": rewards.get("format_soft")(["q", "q"], completions),
                "answer_first": rewards.get("math_accuracy", sources=("answer",))(
                    ["q", "q"], completions, answer=["1", "1"])}
    for name, scores in expected.items():
        np.testing.assert_array_equal(components[name], np.float32(scores))
    np.testing.assert_allclose(total, sum(w * np.float32(expected[n]) for n, w in specs.items()))
    assert not failed.any() and expected["answer_first"] == [1.0, 0.0]


def test_check_names_the_config_key_of_a_bad_param():
    rewards.check({"strict": 1.0}, {"strict": {"reward": "format"}}, "rewards_params")
    with pytest.raises(ValueError, match=r"config.rewards_params.strict: .*'sourcez'"):
        rewards.check({"strict": 1.0}, {"strict": {"reward": "math_accuracy", "sourcez": 1}},
                      "rewards_params")
    with pytest.raises(KeyError, match="unknown reward 'nope'"):
        rewards.check({"x": 1.0}, {"x": {"reward": "nope"}}, "rewards_params")
