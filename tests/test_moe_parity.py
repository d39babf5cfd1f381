"""DeepSeek-V3 and Qwen3-MoE against transformers (PyTorch, float32): logits, greedy samples,
saving back, FP8 checkpoints and the multi-token-prediction layers.

Tiny random models are built and saved by transformers itself, every weight (and DeepSeek's
balancing bias) perturbed so a swapped, mis-transposed or mis-ordered tensor shows.
"""
import os

import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.numpy

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from r1jax import sampling
from r1jax.models import load_pretrained, logits, save_pretrained
from r1jax.models import convert_moe
from tests.test_parity import _load_transformers, _max_delta, _torch_logits, _weight_names
from tests.test_sampling_parity import assert_same_completions, transformers_greedy

TOLERANCE = 1e-4
SHAPE = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
             rms_norm_eps=1e-5, moe_intermediate_size=32, num_experts_per_tok=2,
             tie_word_embeddings=False)
YARN = dict(rope_type="yarn", rope_theta=10_000.0, factor=4.0, original_max_position_embeddings=64,
            mscale=1.0, mscale_all_dim=1.0, beta_fast=32, beta_slow=1)
DEEPSEEK = dict(n_routed_experts=8, n_shared_experts=1, n_group=4, topk_group=2,
                first_k_dense_replace=1, routed_scaling_factor=2.5, kv_lora_rank=32,
                q_lora_rank=48, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16)
CASES = {
        # Group-limited routing, YaRN with mscale, q LoRA, a dense first layer, interleaved RoPE.
        "deepseek_v3": (transformers.DeepseekV3Config, dict(DEEPSEEK, rope_parameters=YARN)),
        # Plain q projection, YaRN's attention factor from `factor` alone, halves RoPE layout,
        # every layer MoE, no group limit, two shared experts.
        "deepseek_v3_plain_q": (transformers.DeepseekV3Config, dict(
                DEEPSEEK, q_lora_rank=None, rope_interleave=False, first_k_dense_replace=0,
                n_group=1, topk_group=1, n_shared_experts=2,
                rope_parameters=dict(rope_type="yarn", rope_theta=10_000.0, factor=2.0,
                                     original_max_position_embeddings=128))),
        "qwen3_moe": (transformers.Qwen3MoeConfig, dict(num_experts=8, norm_topk_prob=True,
                                                        head_dim=16, num_key_value_heads=2)),
}
PROMPTS = [[1, 17, 33, 4], [1] + list(range(40, 70)), [1, 9], [1, 200, 100, 50, 25, 12, 6]]


@pytest.fixture(scope="module", params=sorted(CASES))
def tiny(request, tmp_path_factory):
    """(name, transformers model, its HF directory, int32[2, 24] tokens, its float32 logits)."""
    config_class, overrides = CASES[request.param]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config_class(**{**SHAPE, **overrides}))
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith(("weight", "gate_up_proj", "down_proj", "e_score_correction_bias")):
                tensor.add_(0.1 * torch.randn_like(tensor))
    directory = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(directory)
    tokens = np.random.default_rng(0).integers(0, SHAPE["vocab_size"], (2, 24), np.int32)
    return request.param, model.eval(), directory, tokens, _torch_logits(model.eval(), tokens)


def test_logits_match_transformers(tiny):
    name, _, directory, tokens, reference = tiny
    config, params = load_pretrained(directory)
    assert config.architecture == name.split("_plain")[0]
    delta = _max_delta(logits(config, params, tokens), reference)
    print(f"{name}: max|Δlogits| {delta:.2e} (max|logits| {np.abs(reference).max():.1f})")
    assert delta <= TOLERANCE


def test_greedy_samples_match_transformers(tiny):
    _, model, directory, _, _ = tiny
    config, params = load_pretrained(directory)
    ours = sampling.generate(config, params, PROMPTS, max_new_tokens=24)
    assert_same_completions(ours.tokens, transformers_greedy(model, PROMPTS, 24))


def test_save_round_trip(tiny, tmp_path):
    _, _, directory, tokens, reference = tiny
    config, params = load_pretrained(directory)
    save_pretrained(config, params, tmp_path, max_shard_bytes=200_000)
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    assert _weight_names(tmp_path) == _weight_names(directory)
    assert _max_delta(_torch_logits(_load_transformers(tmp_path), tokens), reference) <= TOLERANCE


def _tensors(directory) -> dict:
    with safetensors.safe_open(os.path.join(directory, "model.safetensors"), framework="np") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def test_multi_token_prediction_layer_is_skipped(tmp_path):
    """DeepSeek-V3 checkpoints store the MTP module as the layer after the last: ignored."""
    config_class, overrides = CASES["deepseek_v3"]
    model = transformers.AutoModelForCausalLM.from_config(config_class(**{**SHAPE, **overrides}))
    model.save_pretrained(tmp_path / "base")
    tensors = _tensors(tmp_path / "base")
    last = SHAPE["num_hidden_layers"] - 1
    for name, value in list(tensors.items()):
        if name.startswith(f"model.layers.{last}."):
            tensors[name.replace(f"layers.{last}.", f"layers.{last + 1}.")] = value + 1
    tensors[f"model.layers.{last + 1}.eh_proj.weight"] = np.ones((64, 128), np.float32)
    os.makedirs(tmp_path / "mtp")
    safetensors.numpy.save_file(tensors, tmp_path / "mtp" / "model.safetensors",
                                metadata={"format": "pt"})
    (tmp_path / "mtp" / "config.json").write_text((tmp_path / "base" / "config.json").read_text())
    base = load_pretrained(tmp_path / "base")[1]
    with_mtp = load_pretrained(tmp_path / "mtp")[1]
    np.testing.assert_array_equal(with_mtp["layers"]["mlp"]["gate"], base["layers"]["mlp"]["gate"])


def test_fp8_block_quantised_weights_are_dequantised(tmp_path):
    """Every 2-D weight stored as float8_e4m3fn with per-16x16-block float32 scales."""
    config_class, overrides = CASES["deepseek_v3"]
    model = transformers.AutoModelForCausalLM.from_config(config_class(**{**SHAPE, **overrides}))
    model.save_pretrained(tmp_path / "base")
    block = 16
    quantised, expected = {}, {}
    for name, value in _tensors(tmp_path / "base").items():
        if value.ndim != 2 or "embed" in name or "lm_head" in name or ".gate.weight" in name:
            quantised[name] = expected[name] = value
            continue
        rows, cols = -(-value.shape[0] // block), -(-value.shape[1] // block)
        scale = np.random.default_rng(len(name)).uniform(0.5, 2.0, (rows, cols)).astype(np.float32)
        fp8 = np.empty(value.shape, ml_dtypes.float8_e4m3fn)
        dequantised = np.empty(value.shape, np.float32)
        for r in range(rows):
            for c in range(cols):
                cell = np.s_[r * block:(r + 1) * block, c * block:(c + 1) * block]
                fp8[cell] = (value[cell] / scale[r, c]).astype(ml_dtypes.float8_e4m3fn)
                dequantised[cell] = fp8[cell].astype(np.float32) * scale[r, c]
        quantised[name] = torch.from_numpy(fp8.view(np.uint8)).view(torch.float8_e4m3fn)
        quantised[name + "_scale_inv"] = scale
        expected[name] = dequantised
    import safetensors.torch
    os.makedirs(tmp_path / "fp8")
    safetensors.torch.save_file({k: torch.as_tensor(v) for k, v in quantised.items()},
                                tmp_path / "fp8" / "model.safetensors", metadata={"format": "pt"})
    hf = {**model.config.to_dict(), "quantization_config": {
            "quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [block, block]}}
    config, params = convert_moe.load_hf_directory(str(tmp_path / "fp8"), hf)
    reference = convert_moe.load_hf_directory(str(tmp_path / "base"), model.config.to_dict())[1]
    # The one dequantised tensor compared exactly; the whole model through its logits.
    kv_b = expected["model.layers.1.self_attn.kv_b_proj.weight"]
    np.testing.assert_array_equal(params["layers"]["attn"]["kv_b_kernel"][0],
                                  kv_b.T.reshape(32, 4, 32))
    tokens = np.arange(16, dtype=np.int32)[None]
    assert _max_delta(logits(config, params, tokens), np.asarray(
        logits(config, reference, tokens))) < 0.5  # e4m3 keeps ~2 significant digits.


@pytest.mark.parametrize("change, message", [
        ({"scoring_func": "softmax"}, r"scoring_func='softmax' is not supported; supported: 'sigmoid'"),
        ({"topk_method": "group_limited_greedy"},
         r"topk_method='group_limited_greedy' is not supported; supported: 'noaux_tc'"),
        ({"quantization_config": {"quant_method": "awq"}}, r"quant_method='awq' is not supported"),
])
def test_unsupported_deepseek_variants_are_refused(change, message, tmp_path):
    config_class, overrides = CASES["deepseek_v3"]
    hf = {**config_class(**{**SHAPE, **overrides}).to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        convert_moe.load_hf_directory(str(tmp_path), hf)
