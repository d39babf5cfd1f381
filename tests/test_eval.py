"""r1jax.eval.evaluate: prompts, stop tokens, scoring and metrics, with a scripted sampler and with
the real sampler on a tiny random model and a real (tiny, byte-level) tokenizer."""
import dataclasses
import types

import jax
import pytest
import tokenizers
import transformers
from tokenizers import decoders, models as bpe_models, pre_tokenizers, processors

from configs import eval as eval_configs
from r1jax import data, models, sampling
from r1jax.data import templates
from r1jax.eval import evaluate as evaluation
from r1jax.eval import metrics
from r1jax.rewards import math as math_reward

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_tokenizer(with_bos: bool = False) -> transformers.PreTrainedTokenizerBase:
    """A real HF tokenizer with one token per byte (ids 0..255), ChatML specials and template.

    with_bos: also a <s> BOS that encode() prepends by default, like Llama 3's tokenizer.
    """
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = tokenizers.Tokenizer(bpe_models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    specials = {"eos_token": "<|im_end|>", "additional_special_tokens": ["<|im_start|>"]}
    if with_bos:
        tok.add_special_tokens(["<s>"])
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 256)])
        specials["bos_token"] = "<s>"
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=CHATML, **specials)


PROBLEMS = [
    {"id": "a", "question": "What is 2 + 2?", "answer": "4", "solution": ""},
    {"id": "b", "question": "What is 3 * 3?", "answer": "Three threes #### 9", "solution": ""},
    {"id": "c", "question": "What is 10 - 7?", "answer": "3", "solution": ""},
]


@dataclasses.dataclass
class Scripted:
    """A stand-in for sampling.generate that returns fixed completion texts, recording its calls."""

    tokenizer: object
    completions: dict  # question -> list of k completion texts
    calls: list = dataclasses.field(default_factory=list)

    def __call__(self, config, params, prompts, **settings):
        self.calls.append({"prompts": prompts, **settings})
        tokens = [self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
                  for prompt in prompts  # With the "{question}" template a prompt decodes to its question.
                  for text in self.completions[self.tokenizer.decode(prompt)]]
        return types.SimpleNamespace(tokens=tokens, finish_reasons=["stop"] * len(tokens), logprobs=None)


def test_scripted_completions_are_scored_voted_and_aggregated(monkeypatch):
    tokenizer = byte_tokenizer()
    script = Scripted(tokenizer, {
        # 2 of 4 correct; the vote is 2:2 between "4" and "5" and "5" came first: cons wrong.
        "What is 2 + 2?": ["It is 5.", "\\boxed{4}", "<answer> 4 </answer>", "$5.00"],
        # 1 of 4 correct, but "9" wins 1:1:1 (None casts no vote): cons right.
        "What is 3 * 3?": ["I do not know", "so 9", "so 6", "nothing"],
        # 0 of 4 correct, no answers at all.
        "What is 10 - 7?": ["no", "idea", "at", "all"],
    })
    monkeypatch.setattr(sampling, "generate", script)
    summary, problems = evaluation.evaluate(
            None, None, tokenizer, PROBLEMS, template="{question}", k=4,
            strategy=sampling.Strategy(temperature=0.6, top_p=0.95),
            max_new_tokens=16, batch_size=8, seed=5, pass_ks=(1, 2, 4), progress=False,
            reward_params={"sources": math_reward.SOURCES})  # Bare replies: last_number on.

    assert [p["correct"] for p in problems] == [[False, True, True, False], [False, True, False, False],
                                                [False] * 4]
    assert problems[0]["extracted_answers"] == ["5", "4", "4", "5.00"]  # "5.00" votes with "5".
    assert problems[1]["extracted_answers"] == [None, "9", "6", None]
    assert problems[0]["completions"][1] == "\\boxed{4}"  # Decoded without the eos token.
    assert [p["prompt"] for p in problems] == [p["question"] for p in PROBLEMS]
    assert problems[1]["answer"] == "Three threes #### 9"
    correct = [p["correct"] for p in problems]
    assert summary["pass@1"] == pytest.approx((2 / 4 + 1 / 4 + 0) / 3)
    assert summary["pass@2"] == pytest.approx(sum(metrics.pass_at_k(4, sum(c), 2) for c in correct) / 3)
    assert summary["pass@4"] == pytest.approx(2 / 3)
    assert summary["cons@4"] == pytest.approx(1 / 3)
    assert summary["num_problems"] == 3 and summary["k"] == 4
    assert summary["finish_reasons"] == {"stop": 12} and summary["reward_errors"] == 0
    # One sampler call over every prompt, with the evaluation's settings.
    [call] = script.calls
    assert call["prompts"] == [tokenizer.encode(p["question"], add_special_tokens=False) for p in PROBLEMS]
    assert {key: call[key] for key in ("n", "seed", "temperature", "top_p", "max_new_tokens", "batch_size")} == {
            "n": 4, "seed": 5, "temperature": 0.6, "top_p": 0.95, "max_new_tokens": 16, "batch_size": 8}
    assert call["stop_tokens"] == (tokenizer.eos_token_id,)
    assert call["stop_strings"] == () and call["tokenizer"] is tokenizer  # The template asks for no tags.


def test_r1_templates_stop_at_the_answer_and_the_reward_gets_the_question(monkeypatch):
    tokenizer = byte_tokenizer()
    script = Scripted(tokenizer, {p["question"] + " Use <answer></answer>.": ["<answer>4</answer>"] for p in PROBLEMS})
    monkeypatch.setattr(sampling, "generate", script)
    seen = []
    monkeypatch.setattr(evaluation.rewards, "get", lambda name, **params: lambda prompts, completions, **fields: (
        seen.append(fields), [1.0] * len(completions))[1])
    evaluation.evaluate(None, None, tokenizer, PROBLEMS[:1], template="{question} Use <answer></answer>.",
                        k=1, strategy=sampling.Strategy(), max_new_tokens=8, batch_size=1, seed=0,
                        reward="spy", progress=False)
    assert script.calls[0]["stop_strings"] == ("</answer>",)
    assert seen[0]["question"] == ["What is 2 + 2?"] and "answer" in seen[0]
    assert templates.default_stop_strings("r1_zero") == templates.default_stop_strings("chat_r1") == ("</answer>",)
    assert templates.default_stop_strings("chat") == templates.default_stop_strings("plain") == ()


def test_stop_tokens_include_chat_end_tokens():
    tokenizer = types.SimpleNamespace(eos_token_id=7, get_vocab=lambda: {"<|im_end|>": 3, "<|eot_id|>": 9, "x": 1})
    assert models.stop_tokens(tokenizer) == (3, 7, 9)
    assert models.stop_tokens(byte_tokenizer()) == (byte_tokenizer().eos_token_id,)


def test_model_input_writes_an_added_bos_into_the_prompt_text():
    plain = byte_tokenizer()
    text, ids = data.encode_prompt(plain, "Q: {question}", "hi")
    assert text == "Q: hi" and ids == plain.encode("Q: hi", add_special_tokens=False)

    with_bos = byte_tokenizer(with_bos=True)
    text, ids = data.encode_prompt(with_bos, "Q: {question}", "hi")
    assert text == "<s>Q: hi" and ids[0] == with_bos.bos_token_id
    assert with_bos.encode(text, add_special_tokens=False) == ids  # The text is exactly the model's input.

    # A chat template carries its own special tokens: nothing is added to it.
    text, ids = data.encode_prompt(with_bos, "chat", "hi")
    assert text == templates.render_prompt("chat", "hi", with_bos)
    assert ids == with_bos.encode(text, add_special_tokens=False)


def test_evaluate_rejects_bad_settings():
    tokenizer = byte_tokenizer()
    common = dict(template="plain", strategy=sampling.Strategy(), max_new_tokens=4, batch_size=4, seed=0)
    with pytest.raises(KeyError, match="unknown reward 'nope'"):
        evaluation.evaluate(None, None, tokenizer, PROBLEMS, k=1, reward="nope", **common)
    with pytest.raises(ValueError, match="no problems"):
        evaluation.evaluate(None, None, tokenizer, [], k=1, **common)
    with pytest.raises(ValueError, match="pass_ks=\\[8\\]"):
        evaluation.evaluate(None, None, tokenizer, PROBLEMS, k=4, pass_ks=(8,), **common)


def test_tiny_random_model_end_to_end():
    """The real sampler on a random tiny Llama: shapes, prompt text, determinism, consistency."""
    tokenizer = byte_tokenizer()
    config = models.preset("tiny_llama", vocab_size=len(tokenizer))
    params = models.init_params(config, jax.random.key(0))
    eval_config = eval_configs.get_config("tiny")
    eval_config.template = "chat"
    eval_config.max_problems = 2

    summary, problems = evaluation.evaluate_with_config(config, params, tokenizer, PROBLEMS, eval_config,
                                                        progress=False)
    assert len(problems) == 2 and summary["num_problems"] == 2
    for record, problem in zip(PROBLEMS, problems):
        assert problem["id"] == record["id"]
        assert problem["prompt"] == templates.render_prompt("chat", record["question"], tokenizer)
        assert len(problem["completions"]) == len(problem["correct"]) == eval_config.k
        assert all(1 <= n <= eval_config.max_new_tokens for n in problem["num_tokens"])
        assert problem["correct"] == [s is not None and s >= 1.0 for s in problem["scores"]]
    assert summary["pass@1"] == metrics.aggregate([p["correct"] for p in problems], (1,))["pass@1"]
    assert set(summary) >= {"pass@1", "pass@2", "pass@4", "cons@4", "mean_completion_tokens", "finish_reasons"}
    # Same seed, same samples.
    _, problems_again = evaluation.evaluate_with_config(config, params, tokenizer, PROBLEMS, eval_config,
                                                        progress=False)
    assert [p["completions"] for p in problems_again] == [p["completions"] for p in problems]


def test_eval_config_variants():
    greedy = eval_configs.get_config("greedy").sampling
    assert (greedy.temperature, greedy.top_k, greedy.top_p) == (0.0, None, None)
    r1 = eval_configs.get_config("r1")
    assert (r1.k, r1.sampling.temperature, r1.sampling.top_p) == (64, 0.6, 0.95)
    assert max(r1.pass_ks) <= r1.k
    tiny = eval_configs.get_config("tiny")
    assert max(tiny.pass_ks) <= tiny.k
    with pytest.raises(ValueError, match="unknown eval config variant 'huge'"):
        eval_configs.get_config("huge")
