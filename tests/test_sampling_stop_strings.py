"""Stop strings: completions cut after the token that completes the first stop string, on the
SmolLM2 tokenizer (merged tokens across the string's edges) and through `generate`."""
import jax
import numpy as np
import pytest

from r1jax import models, rewards, sampling
from r1jax.sampling import stop_strings
from tests.test_eval import byte_tokenizer

INVENTED_TURN = ("<think>4 + 5 is 9.</think> <answer>9</answer>\n\nUser: What is 2 + 3? "
                 "Assistant: <think>2 + 3 is 5.</think> <answer>5</answer>")


def test_an_invented_next_turn_is_cut_and_the_first_answer_scored(smollm2_gguf):
    _, tokenizer = smollm2_gguf
    ids = tokenizer.encode(INVENTED_TURN + "\n\nUser: more", add_special_tokens=False)
    other = tokenizer.encode("<think>no tags at all</think>", add_special_tokens=False)
    tokens = np.zeros((2, len(ids)), np.int32)
    tokens[0], tokens[1, :len(other)] = ids, other
    cut = sampling.cut_at_stop_strings(tokens, np.array([len(ids), len(other)]), tokenizer, ("</answer>",))

    text = tokenizer.decode(cut.tokens[0, :cut.lengths[0]].tolist())
    assert text.startswith("<think>4 + 5 is 9.</think> <answer>9</answer>") and "User" not in text
    assert "</answer>" not in tokenizer.decode(cut.tokens[0, :cut.lengths[0] - 1].tolist())  # The first such cut.
    assert cut.stopped.tolist() == [True, False] and cut.lengths[1] == len(other)
    assert cut.mask.sum(-1).tolist() == cut.lengths.tolist() and not cut.tokens[0, cut.lengths[0]:].any()
    np.testing.assert_array_equal(cut.tokens[1], tokens[1])
    # Scored on the answer to the question asked (9), not on the invented turn's (5): also
    # without the cut, since the rewards read the first answer block.
    fn = rewards.get("math_accuracy")
    assert fn(["", ""], [text, INVENTED_TURN], answer=["9", "9"]) == [1.0, 1.0]
    assert fn([""], [INVENTED_TURN], answer=["5"]) == [0.0]


def test_generate_cuts_where_the_string_first_appears():
    """Whatever a random model writes: with a piece of its own text as stop string, the same seed
    gives the same completion cut right after that piece's first occurrence."""
    tokenizer = byte_tokenizer()
    config = models.preset("tiny_llama", vocab_size=len(tokenizer))
    params = models.init_params(config, jax.random.key(0))
    settings = dict(max_new_tokens=24, temperature=1.0, n=2, seed=3)
    prompts = [tokenizer.encode("What is 2 + 2?")]
    full = sampling.generate(config, params, prompts, **settings)
    text = tokenizer.decode(full.tokens[0], skip_special_tokens=False)
    stop = next(text[i:i + 2] for i in range(4, len(text)) if text[i:i + 2].isascii() and len(text[i:i + 2]) == 2)
    cut = sampling.generate(config, params, prompts, stop_strings=(stop,), tokenizer=tokenizer, **settings)
    kept = cut.tokens[0]
    assert full.tokens[0][:len(kept)] == kept and cut.logprobs[0] == full.logprobs[0][:len(kept)]
    assert stop in tokenizer.decode(kept, skip_special_tokens=False)
    assert stop not in tokenizer.decode(kept[:-1], skip_special_tokens=False)
    assert cut.finish_reasons[0] == "stop"


def test_bad_stop_strings_are_refused():
    with pytest.raises(ValueError, match="not the string '</answer>'"):
        stop_strings.validate_stop_strings("</answer>")
    with pytest.raises(ValueError, match="non-empty strings"):
        stop_strings.validate_stop_strings(("</answer>", ""))
    config = models.preset("tiny_llama")
    with pytest.raises(ValueError, match="pass tokenizer="):
        sampling.generate(config, None, [[1, 2]], max_new_tokens=2, stop_strings=("x",))
