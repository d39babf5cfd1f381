"""Greedy decoding equals `transformers` generate token for token (PyTorch, float32).

Tiny random Llama / Qwen2 / Qwen3 models are built and saved by transformers itself and loaded
with r1jax.models.load_pretrained; SmolLM2-135M-Instruct comes from its GGUF file. Each batch
holds prompts of different lengths (left-padded on both sides), decoded for 64 new tokens.
"""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers needs it to load GGUF models.

from r1jax import sampling
from r1jax.models import load_pretrained

NEW_TOKENS = 64
TINY_SHAPE = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-5)
TINY_CASES = {
        "llama": (transformers.LlamaConfig, dict(tie_word_embeddings=False)),
        "qwen2_tied": (transformers.Qwen2Config, dict(rope_theta=1e6, tie_word_embeddings=True)),
        "qwen3": (transformers.Qwen3Config, dict(head_dim=32, tie_word_embeddings=False)),
}
TINY_PROMPTS = [[1, 17, 33, 4], [1] + list(range(40, 70)), [1, 9], [1, 200, 100, 50, 25, 12, 6]]
QUESTIONS = ["What is 12 + 30?", "Name three primary colors.",
             "Write a short story about a robot who learns to paint.", "Hi!"]


def transformers_greedy(model, prompts, max_new_tokens, stop_tokens=()):
    """transformers' greedy completions of left-padded prompts, cut after the first stop token."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    # One thread: OpenMP's spinning barriers make two threads many times slower on a busy host.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=list(stop_tokens) or None,
                                 pad_token_id=0)
    finally:
        torch.set_num_threads(threads)
    completions = []
    for row in out[:, width:].tolist():
        end = next((i + 1 for i, t in enumerate(row) if t in stop_tokens), len(row))
        completions.append(row[:end])
    return completions


def _first_difference(ours, reference):
    return next((i for i, (a, b) in enumerate(zip(ours, reference)) if a != b),
                min(len(ours), len(reference)))


def assert_same_completions(ours, reference):
    for row, (a, b) in enumerate(zip(ours, reference)):
        assert a == b, (f"row {row} differs from token {_first_difference(a, b)}:\n"
                        f"  r1jax:        {a}\n  transformers: {b}")


@pytest.fixture(scope="module", params=sorted(TINY_CASES))
def tiny(request, tmp_path_factory):
    """(transformers model, the HF directory it was saved to)."""
    config_class, overrides = TINY_CASES[request.param]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config_class(**TINY_SHAPE, **overrides))
    with torch.no_grad():
        for param in model.parameters():  # HF's init leaves norms at 1 and biases at 0.
            param.add_(0.1 * torch.randn_like(param))
    directory = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(directory)
    return model.eval(), directory


def test_tiny_greedy_matches_transformers(tiny):
    model, directory = tiny
    config, params = load_pretrained(directory)
    stop = (2,)  # The configs' eos id: rows that emit it stop early in both implementations.
    ours = sampling.generate(config, params, TINY_PROMPTS, max_new_tokens=NEW_TOKENS,
                             stop_tokens=stop)
    reference = transformers_greedy(model, TINY_PROMPTS, NEW_TOKENS, stop)
    assert_same_completions(ours.tokens, reference)
    assert ours.finish_reasons == ["stop" if r[-1] in stop else "length" for r in reference]


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    """(r1jax config, params, tokenizer, chat prompts, transformers model) for SmolLM2."""
    path, tokenizer = smollm2_gguf
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}],
                                             add_generation_prompt=True, tokenize=True)
               for q in QUESTIONS]
    prompts = [list(p["input_ids"] if hasattr(p, "keys") else p) for p in prompts]
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path)).eval()
    config, params = load_pretrained(path)
    return config, params, tokenizer, prompts, model


def test_smollm2_greedy_matches_transformers(smollm2):
    config, params, tokenizer, prompts, model = smollm2
    assert len({len(p) for p in prompts}) == len(prompts)  # Different lengths, one batch.
    stop = (tokenizer.eos_token_id,)
    ours = sampling.generate(config, params, prompts, max_new_tokens=NEW_TOKENS, stop_tokens=stop)
    reference = transformers_greedy(model, prompts, NEW_TOKENS, stop)
    for prompt, completion in zip(QUESTIONS, ours.tokens):
        print(f"{prompt!r} -> {tokenizer.decode(completion)!r}")
    assert_same_completions(ours.tokens, reference)
    assert max(len(t) for t in ours.tokens) == NEW_TOKENS  # Some row ran the full budget.
