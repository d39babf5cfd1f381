"""Logit parity with transformers (PyTorch, float32), loading and saving through r1jax.models.

Tiny random models are built and saved by transformers itself; SmolLM2-135M-Instruct comes from
its GGUF file, which transformers dequantizes on its own. Each reference loads once per module.
"""
import json
import os

import numpy as np
import pytest
import safetensors

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers needs it to load GGUF models.

from r1jax.models import load_pretrained, load_tokenizer, logits, save_pretrained

TINY_TOLERANCE = 1e-4
SMOLLM2_TOLERANCE = 1e-3
TINY_SHAPE = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-5)
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}

SHARD_BYTES = 40_000  # Splits a tiny model into ~12 files.

# name: (config class, config overrides, whether both sides save it sharded)
TINY_CASES = {
        "llama": (transformers.LlamaConfig, dict(tie_word_embeddings=False), False),
        "llama3_rope_tied": (transformers.LlamaConfig,
                             dict(rope_theta=500_000.0, rope_scaling=LLAMA3_ROPE,
                                  tie_word_embeddings=True), False),
        "qwen2_tied": (transformers.Qwen2Config, dict(rope_theta=1e6, tie_word_embeddings=True),
                       False),
        # head_dim 32 != hidden_size / heads, as in Qwen3-0.6B.
        "qwen3": (transformers.Qwen3Config, dict(head_dim=32, tie_word_embeddings=False), False),
        "llama_sharded": (transformers.LlamaConfig, dict(tie_word_embeddings=False), True),
}


def _torch_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(tokens)).logits.float().numpy()


def _max_delta(ours, reference) -> float:
    return float(np.abs(np.asarray(ours) - reference).max())


def _weight_names(directory) -> set:
    """Tensor names of a saved HF model, read from its index or its single file."""
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            return set(json.load(f)["weight_map"])
    with safetensors.safe_open(os.path.join(directory, "model.safetensors"), framework="np") as f:
        return set(f.keys())


def _load_transformers(directory, **kwargs):
    """A transformers model loaded from `directory`, failing on any missing or unused weight."""
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
            directory, output_loading_info=True, **kwargs)
    problems = {kind: keys for kind, keys in info.items() if keys}
    assert not problems, problems
    return model.eval()


@pytest.fixture(scope="module", params=sorted(TINY_CASES))
def tiny(request, tmp_path_factory):
    """(HF directory written by transformers, sharded?, int32[2, 24] tokens, float32 logits)."""
    config_class, overrides, sharded = TINY_CASES[request.param]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config_class(**TINY_SHAPE, **overrides))
    with torch.no_grad():
        # HF initialises norms to 1 and biases to 0; perturbing every tensor lets a swapped or
        # mis-transposed one show in the logits.
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    directory = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(directory, max_shard_size=SHARD_BYTES if sharded else "2GB")
    assert os.path.exists(directory / "model.safetensors.index.json") == sharded
    tokens = np.random.default_rng(0).integers(0, TINY_SHAPE["vocab_size"], (2, 24), np.int32)
    return directory, sharded, tokens, _torch_logits(model.eval(), tokens)


def test_tiny_load_matches_transformers(tiny):
    directory, _, tokens, reference = tiny
    config, params = load_pretrained(directory)
    delta = _max_delta(logits(config, params, tokens), reference)
    print(f"{directory.name}: max|Δlogits| {delta:.2e} "
          f"(max|logits| {np.abs(reference).max():.1f})")
    assert delta <= TINY_TOLERANCE


def test_tiny_save_round_trip(tiny, tmp_path):
    directory, sharded, tokens, reference = tiny
    config, params = load_pretrained(directory)
    save_pretrained(config, params, tmp_path, max_shard_bytes=SHARD_BYTES if sharded else 2**31)
    assert os.path.exists(tmp_path / "model.safetensors.index.json") == sharded
    assert _weight_names(tmp_path) == _weight_names(directory)
    delta = _max_delta(_torch_logits(_load_transformers(tmp_path), tokens), reference)
    print(f"{directory.name} round trip: max|Δlogits| {delta:.2e}")
    assert delta <= TINY_TOLERANCE


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    """SmolLM2 from its GGUF: (path, tokenizer, int32[1, T] chat prompt, transformers' logits)."""
    path, tokenizer = smollm2_gguf
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is 12 + 30?"}],
                                         add_generation_prompt=True, tokenize=False)
    tokens = np.array([tokenizer(text, add_special_tokens=False)["input_ids"]], np.int32)
    model = _load_transformers(os.path.dirname(path), gguf_file=os.path.basename(path))
    return path, tokenizer, tokens, _torch_logits(model, tokens)


@pytest.fixture(scope="module")
def smollm2_params(smollm2):
    config, params = load_pretrained(smollm2[0])
    return config, params


def test_smollm2_gguf_matches_transformers(smollm2, smollm2_params):
    _, _, tokens, reference = smollm2
    ours = np.asarray(logits(*smollm2_params, tokens))
    delta = _max_delta(ours, reference)
    print(f"SmolLM2 GGUF: max|Δlogits| {delta:.2e} over {tokens.shape[1]} tokens "
          f"(max|logits| {np.abs(reference).max():.1f})")
    assert delta <= SMOLLM2_TOLERANCE
    np.testing.assert_array_equal(ours.argmax(-1), reference.argmax(-1))


def test_smollm2_save_round_trip(smollm2, smollm2_params, tmp_path):
    path, tokenizer, tokens, reference = smollm2
    save_pretrained(*smollm2_params, tmp_path, tokenizer=tokenizer)
    delta = _max_delta(_torch_logits(_load_transformers(tmp_path), tokens), reference)
    print(f"SmolLM2 saved and reloaded by transformers: max|Δlogits| {delta:.2e}")
    assert delta <= SMOLLM2_TOLERANCE
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.chat_template == tokenizer.chat_template
    text = tokenizer.decode(tokens[0])
    assert reloaded(text, add_special_tokens=False)["input_ids"] == tokens[0].tolist()


def test_smollm2_cached_tokenizer_matches_conversion(smollm2):
    path, cached, tokens, _ = smollm2
    converted = load_tokenizer(path, cache=False)
    assert converted.chat_template == cached.chat_template
    assert (converted.bos_token_id, converted.eos_token_id) == (cached.bos_token_id,
                                                                cached.eos_token_id)
    text = converted.decode(tokens[0]) + " déjà vu 12345 <|im_end|>"
    assert converted(text)["input_ids"] == cached(text)["input_ids"]
