"""Model FLOPs against a hand count and XLA's own count; peak FLOP/s lookup and MFU."""
import jax
import jax.numpy as jnp
import pytest

from r1jax import models
from r1jax.models import flops

# tiny_llama: V=256, L=2, d=64, F=128, H=4, K=2, hd=16, untied head.
# Per layer: q,k,v 64*16*(4+2+2) = 8192; o 4*16*64 = 4096; SwiGLU 3*64*128 = 24576 -> 36864.
# N = 2 * 36864 + 256*64 (head) = 90112. Attention per (query, key) pair: 2 layers * 4 heads *
# 16 dims * (2 for QK^T + 2 for AV) = 512 FLOPs.
N = 90_112
PAIR = 512


def test_tiny_model_matches_the_hand_count():
    config = models.preset("tiny_llama")
    assert flops.matmul_params(config) == N
    # Training at T=32: 6N + 3 * PAIR * 32 / 2 (causal: half the pairs).
    assert flops.train_flops_per_token(config, 32) == 6 * N + 3 * PAIR * 16
    assert flops.inference_flops_per_token(config, 100) == 2 * N + PAIR * 100


def test_forward_flops_agree_with_xla():
    """XLA's cost analysis of a forward pass (which computes every (query, key) pair, masked or
    not) is 2N per token plus the attention per pair, up to the elementwise work (norms,
    softmax, rope). One layer: XLA counts a scan's body once, whatever its trip count."""
    config = models.preset("tiny_llama", num_layers=1)
    params = models.init_params(config, jax.random.key(0))
    b, t = 2, 64
    compiled = jax.jit(lambda p, x: models.logits(config, p, x)).lower(
        params, jnp.zeros((b, t), jnp.int32)).compile()
    xla = compiled.cost_analysis()
    xla = (xla[0] if isinstance(xla, list) else xla)["flops"]
    ours = b * t * flops.inference_flops_per_token(config, t)  # Every pair: context t.
    assert ours <= xla <= 1.1 * ours


@pytest.mark.parametrize("kind,peak", [
    ("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("TPU v5p", 459e12), ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12), ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("cpu", None)])
def test_peak_flops_per_device_kind(kind, peak):
    assert flops.peak_flops(kind) == peak


def test_mfu():
    assert flops.mfu(1000.0, 1e9, "NVIDIA H100 80GB HBM3") == pytest.approx(1e12 / 989e12)
    assert flops.mfu(1000.0, 1e9, "cpu") is None


class _Device:
    def __init__(self, kind):
        self.device_kind = kind


def test_throughput_per_device_and_mfu():
    # 8e3 tokens in 2 s on 4 H100s: 1e3 tokens/s each; at 1e9 FLOPs a token, 1e12 / 989e12.
    h100s = [_Device("NVIDIA H100 80GB HBM3")] * 4
    assert flops.throughput("update_", 8e3, 2.0, 1e9, h100s) == {
        "update_tokens_per_second_per_device": 1e3, "update_mfu": pytest.approx(1e12 / 989e12)}
    # Unknown peak (CPU) or unknown model FLOPs (MoE / MLA): no mfu key.
    assert flops.throughput("", 8e3, 2.0, 1e9, [_Device("cpu")]) == {
        "tokens_per_second_per_device": 4e3}
    assert flops.throughput("", 8e3, 2.0, None, h100s) == {"tokens_per_second_per_device": 1e3}


def test_only_dense_models_are_counted():
    assert flops.train_flops_per_token(models.preset("tiny_llama"), 32) is not None
    for name in ("tiny_deepseek_v3", "tiny_qwen3_moe"):  # MLA and/or MoE: not counted yet
        assert flops.train_flops_per_token(models.preset(name), 32) is None
        assert flops.inference_flops_per_token(models.preset(name), 100) is None
