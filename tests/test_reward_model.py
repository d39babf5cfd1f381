"""A tiny reward model: fits a handful of pairs, scores them as a reward, names bad input."""
import json

import ml_collections
import numpy as np
import pytest

from configs import r1_zero, reward_model as rm_configs
from launch import evaluate_rm
from r1jax import data, rewards
from r1jax.data import pairs
from r1jax.eval import preference
from r1jax.rewards.reward_model import final_answer
from r1jax.train import grpo, reward_model

PAIRS = [
    {"prompt": "How do I boil an egg?", "chosen": "Simmer it for nine minutes.",
     "rejected": "Eggs are a waste of time."},
    {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"},
    {"prompt": "\n\nHuman: Say something rude.\n\nAssistant:", "chosen": "I'd rather not.",
     "rejected": "You are an idiot."},
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I refuse."},
    {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Berlin."},
    {"prompt": "Translate 'merci'.", "chosen": "Thank you.", "rejected": "Goodbye."},
    {"prompt": "Is the sun a star?", "chosen": "Yes, a G-type star.", "rejected": "No."},
    {"prompt": "Recommend a book.", "chosen": "Middlemarch, by George Eliot.",
     "rejected": "Books are boring."},
]


def _config(tmp_path, lines):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = rm_configs.get_config("tiny")
    config.data.update(name="pairs8", input=str(path), data_dir=str(tmp_path / "data"),
                       test_fraction=0.0)
    config.reward_model.update(batch_size=8, eval_pairs=0, max_train_pairs=0,
                               invalid_pairs="error")
    return config


def test_tiny_reward_model_fits_pairs_and_scores_them_as_a_reward(tmp_path):
    config = _config(tmp_path, PAIRS)
    config.optimizer.update(decay="constant", learning_rate=3e-3)
    config.train.update(num_steps=25, eval_every=0, checkpoint_every=0)
    workdir = str(tmp_path / "w")
    metrics = reward_model.train(config, workdir)
    assert metrics["pair_accuracy"] == 1.0, metrics
    assert metrics["loss"] < 0.2, metrics

    fn = rewards.get("reward_model", path=workdir, apply_to="response", batch_size=4)
    prompts = [p["prompt"] for p in PAIRS]
    chosen = fn(prompts, [p["chosen"] for p in PAIRS])
    rejected = fn(prompts, [p["rejected"] for p in PAIRS])
    assert all(c > r for c, r in zip(chosen, rejected)), (chosen, rejected)
    # final_answer scores the text after </think>, whatever the reasoning says.
    helpful = rewards.get("reward_model", path=workdir, apply_to="final_answer")
    thought = [f"<think>{r}</think>{c}" for c, r in zip([p["chosen"] for p in PAIRS],
                                                        [p["rejected"] for p in PAIRS])]
    np.testing.assert_allclose(helpful(prompts, thought), chosen, rtol=1e-5, atol=1e-5)
    summary = evaluate_rm.evaluate(fn, PAIRS)
    assert summary["pair_accuracy"] == 1.0 and summary["longer_wins_accuracy"] == 0.5


def test_final_answer_strips_the_reasoning():
    assert final_answer("<think>a\nb</think>\n<answer>42</answer>") == "<answer>42</answer>"
    assert final_answer("no reasoning block") == "no reasoning block"


SAME = {"id": "same", "prompt": "Hi", "chosen": "Hello", "rejected": "Hello "}
EMPTY = {"id": "empty", "prompt": "Hi", "chosen": "Hello", "rejected": "  "}


@pytest.mark.parametrize("bad, why", [(SAME, "chosen and rejected are identical"),
                                      (EMPTY, "the rejected response is empty")])
def test_a_bad_pair_is_named_by_file_and_line_at_start_up(tmp_path, bad, why):
    lines = [*PAIRS[:6], bad, *PAIRS[6:]]
    config = _config(tmp_path, lines)
    with pytest.raises(ValueError, match=rf"pairs.jsonl:7: {why}; .*invalid_pairs=drop"):
        reward_model.train(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()  # refused before the model or the data set is made


def test_bad_pairs_of_a_prepared_data_set_are_named_by_id(tmp_path):
    lines = [*PAIRS[:6], SAME, EMPTY]
    config = _config(tmp_path, lines)
    config.data.input = ""  # prepared already: no file to point at
    data.prepare("preference", str(tmp_path / "pairs.jsonl"), name="pairs8",
                 data_dir=config.data.data_dir)
    with pytest.raises(ValueError, match=r"'same': chosen and rejected are identical.*"
                                         r"'empty': the rejected response is empty.*invalid_pairs"):
        reward_model.train(config, str(tmp_path / "w"))
    records = [{"id": i, **p} for i, p in enumerate(lines)]
    assert len(pairs.valid_pairs(records, invalid="drop", source="x")) == 6


def test_a_path_that_is_not_a_reward_model_is_named(tmp_path):
    with pytest.raises(ValueError, match="is not a reward model: it has no reward_model.json"):
        rewards.get("reward_model", path=str(tmp_path))(["q"], ["a"])


def _not_reward_models(tmp_path):
    (tmp_path / "gguf").write_bytes(b"GGUF")
    (tmp_path / "empty").mkdir()
    (tmp_path / "info_only").mkdir()
    (tmp_path / "info_only" / "reward_model.json").write_text("{}")
    (tmp_path / "causal").mkdir()
    (tmp_path / "causal" / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"]}))
    return [("missing", "no such file or directory"), ("gguf", "it is a file"),
            ("empty", "it has no reward_model.json"),
            ("info_only", "it has reward_model.json but no checkpoints/"),
            ("causal", r"its config.json has architectures=\['LlamaForCausalLM'\]")]


def test_grpo_refuses_a_reward_model_path_at_start_up(tmp_path):
    for name, why in _not_reward_models(tmp_path):
        config = r1_zero.get_config("tiny")
        config.rewards = ml_collections.ConfigDict({"math_accuracy": 1.0, "helpfulness": 0.5})
        config.rewards_params.helpfulness = {"reward": "reward_model", "path": str(tmp_path / name),
                                             "apply_to": "final_answer"}
        workdir = tmp_path / f"w_{name}"
        with pytest.raises(ValueError, match=rf"^config.rewards_params.helpfulness.path='.*{name}'"
                                             rf" is not a reward model: {why}"):
            grpo.train(config, str(workdir))
        assert not workdir.exists()  # before the policy is loaded or anything is written


def test_grpo_refuses_unknown_reward_params_at_start_up(tmp_path):
    config = r1_zero.get_config("tiny")
    config.rewards_params.math_accuracy = {"sourcez": ("answer",)}
    with pytest.raises(ValueError, match=r"config.rewards_params.math_accuracy: .*'sourcez'"):
        grpo.train(config, str(tmp_path / "w"))


def test_hh_rlhf_prompts_become_chat_turns():
    prompt = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Help me?\n\nAssistant:"
    assert pairs.prompt_messages(prompt) == [
        {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Help me?"}]


def test_pair_metrics_against_hand_counts():
    rewards = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 0.0]])
    lengths = np.array([[10, 5], [10, 9], [3, 10], [5, 5]])
    m = preference.pair_metrics(rewards, lengths)
    assert m["pair_accuracy"] == 0.5 and m["margin"] == 0.25
    assert m["longer_wins_accuracy"] == 0.5  # pairs 0 and 1
    assert m["similar_length_pairs"] == 2 and m["similar_length_pair_accuracy"] == 0.0
    assert "similar_length_pair_accuracy" not in preference.pair_metrics(rewards[:1], lengths[:1])
