"""Reward models to and from Hugging Face *ForSequenceClassification (num_labels=1): the same
scores from transformers' PyTorch model and from r1jax, both ways."""
import jax
import numpy as np
import pytest
import torch
import transformers

from r1jax import rewards
from r1jax.data import pairs
from r1jax.models import init_params, preset, save_pretrained
from r1jax.models import reward_model as rm

PROMPTS = ["Hi", "How are you?", "Name a colour."]
RESPONSES = ["Hello!", "Fine, thanks, and you? I am well.", "Blue."]


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf):
    return smollm2_gguf[1]


def _hf_scores(model, tokens, lengths, pad_id):
    mask = np.arange(tokens.shape[1])[None] < lengths[:, None]
    ids = np.where(mask, tokens, pad_id)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long))
    return out.logits[:, 0].numpy()


def test_export_scores_the_same_in_transformers(tmp_path, tokenizer):
    config = preset("tiny_llama", vocab_size=len(tokenizer))
    backbone = jax.device_get(init_params(config, jax.random.key(0)))
    params = {"backbone": backbone, "head": rm.init_head(config, seed=1)}
    params["head"]["kernel"] *= 30.0  # rewards of order 1, so 1e-4 is a tight comparison
    rm.save_pretrained(config, params, str(tmp_path / "hf"), tokenizer)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(tmp_path / "hf"), dtype=torch.float32).eval()
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.num_labels == 1
    tokens, lengths, _ = pairs.sequences(PROMPTS, RESPONSES, tokenizer, 64)
    ours = np.asarray(rm.rewards(config, params, tokens, lengths))
    theirs = _hf_scores(model, tokens, lengths, model.config.pad_token_id)
    assert np.abs(ours).max() > 0.1
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_transformers_reward_model_loads_into_r1jax(tmp_path, tokenizer, architecture):
    kwargs = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  num_labels=1, pad_token_id=tokenizer.pad_token_id or 0,
                  tie_word_embeddings=False)
    hf_config = (transformers.LlamaConfig(**kwargs) if architecture == "llama"
                 else transformers.Qwen2Config(**kwargs))
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_config(hf_config).eval()
    model.save_pretrained(str(tmp_path / "hf"))
    config, params = rm.load_pretrained(str(tmp_path / "hf"))
    tokens, lengths, _ = pairs.sequences(PROMPTS, RESPONSES, tokenizer, 64)
    ours = np.asarray(rm.rewards(config, params, tokens, lengths))
    theirs = _hf_scores(model, tokens, lengths, hf_config.pad_token_id)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)


def test_a_causal_lm_is_not_a_reward_model(tmp_path, tokenizer):
    config = preset("tiny_llama", vocab_size=len(tokenizer))
    save_pretrained(config, jax.device_get(init_params(config, jax.random.key(0))),
                    str(tmp_path / "lm"))
    with pytest.raises(ValueError, match="is not a reward model.*ForCausalLM"):
        rm.load_pretrained(str(tmp_path / "lm"))


def test_a_hf_reward_model_directory_is_a_reward(tmp_path, tokenizer):
    config = preset("tiny_llama", vocab_size=len(tokenizer))
    params = {"backbone": jax.device_get(init_params(config, jax.random.key(0))),
              "head": rm.init_head(config, seed=1)}
    rm.save_pretrained(config, params, str(tmp_path / "hf"), tokenizer)
    tokens, lengths, _ = pairs.sequences(PROMPTS, RESPONSES, tokenizer, config.max_seq_len)
    expected = np.asarray(rm.rewards(config, params, tokens, lengths))
    score = rewards.get("reward_model", path=str(tmp_path / "hf"), apply_to="response")
    np.testing.assert_allclose(score(PROMPTS, RESPONSES), expected, atol=1e-5, rtol=1e-5)
