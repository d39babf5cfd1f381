"""Model FLOPs from a config's shapes, peak FLOP/s per device kind, and MFU.

Model FLOPs count the matmuls the model needs, not what an implementation spends (remat's
recomputation, padding and masked-out attention are not counted), so MFU compares runs fairly:

    matmul params N  = per layer d·hd·(H + 2K) (q, k, v) + H·hd·d (o) + 3·d·F (SwiGLU),
                       times L, plus V·d for the output head (the input embedding is a lookup)
    attention        = per layer 2·H·hd FLOPs per (query, key) pair for QKᵀ and as many for AV
    training token   = 6N + 6·L·H·hd·T   (forward + backward over causal sequences of length T:
                       each query sees (T + 1) / 2 keys on average, counted as T / 2)
    inference token  = 2N + 4·L·H·hd·C   (a forward pass attending to C cached tokens)

Dense shapes only: for an MoE or MLA config the per-token counts are None (its active
parameters would need counting instead).
"""
from __future__ import annotations

from r1jax.models.config import ModelConfig

# Dense bf16 peak FLOP/s per chip (vendor figures, no sparsity), matched against
# jax.Device.device_kind by the first key it contains (case-insensitive; more specific first).
PEAK_FLOPS = {
    "TPU v6 lite": 918e12,   # v6e (Trillium)
    "TPU v6e": 918e12,
    "TPU v5 lite": 197e12,   # v5e
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,        # v5p reports "TPU v5"
    "TPU v4": 275e12,
    "H200": 989e12,
    "H100": 989e12,          # SXM; the PCIe card peaks at 756e12
    "A100": 312e12,
}


def matmul_params(config: ModelConfig) -> int:
    """N: weights multiplied once per token (see the module docstring)."""
    d, hd, h, k = config.embed_dim, config.head_dim, config.num_heads, config.num_kv_heads
    layer = d * hd * (h + 2 * k) + h * hd * d + 3 * d * config.mlp_dim
    return config.num_layers * layer + config.vocab_size * d


def _attention_pair_flops(config: ModelConfig) -> int:
    """Forward FLOPs per (query, key) pair over all layers: QKᵀ and AV, 2·H·hd each."""
    return 4 * config.num_layers * config.num_heads * config.head_dim


def _counted(config: ModelConfig) -> bool:
    """Whether the counts above hold for `config`: dense attention and MLPs (see the module
    docstring)."""
    return config.moe is None and config.mla is None


def train_flops_per_token(config: ModelConfig, seq_len: int) -> float | None:
    """Model FLOPs of one trained token (forward + backward) in causal sequences of seq_len;
    None for an MoE or MLA model (not counted yet: its runs log tokens/s without MFU)."""
    if not _counted(config):
        return None
    return 6 * matmul_params(config) + 3 * _attention_pair_flops(config) * seq_len / 2


def inference_flops_per_token(config: ModelConfig, context: float) -> float | None:
    """Model FLOPs of one forward token attending to `context` tokens (its cache, itself
    included); for a prefill of P tokens use context (P + 1) / 2. None for an MoE or MLA
    model."""
    if not _counted(config):
        return None
    return 2 * matmul_params(config) + _attention_pair_flops(config) * context


def peak_flops(device_kind: str) -> float | None:
    """Peak bf16 FLOP/s of one device of this kind; None when unknown (CPUs among them)."""
    kind = device_kind.lower()
    return next((peak for name, peak in PEAK_FLOPS.items() if name.lower() in kind), None)


def mfu(tokens_per_s_per_device: float, flops_per_token: float,
        device_kind: str) -> float | None:
    """Model FLOPs utilisation in [0, 1]; None where the device's peak is unknown."""
    peak = peak_flops(device_kind)
    return None if peak is None else tokens_per_s_per_device * flops_per_token / peak


def throughput(prefix: str, tokens: float, seconds: float, flops_per_token: float | None,
               devices: list) -> dict:
    """{PREFIXtokens_per_second_per_device, PREFIXmfu} of `tokens` processed in `seconds` over
    `devices` (jax.Device; all of one kind); mfu is left out where the devices' peak or the
    model's FLOPs (`flops_per_token` None) are unknown, as on CPUs."""
    per_device = tokens / max(seconds, 1e-9) / len(devices)
    out = {f"{prefix}tokens_per_second_per_device": per_device}
    utilisation = None if flops_per_token is None else mfu(per_device, flops_per_token,
                                                           devices[0].device_kind)
    if utilisation is not None:
        out[f"{prefix}mfu"] = utilisation
    return out
