"""GGUF files (llama.cpp's format) as a tensor source for r1jax.models.convert, without PyTorch.

Tensors are dequantized with the gguf package into Hugging Face's layout (llama's q/k rows
un-permuted), so loading a GGUF shares convert.py's one path with HF safetensors.
"""
from __future__ import annotations

import gguf
import numpy as np

from r1jax.models.config import ARCHITECTURES, ModelConfig, unsupported_architecture
from r1jax.models.hf_files import check_shape


def unpermute_rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undoes llama.cpp's q/k row order: [heads * D, E] with each head's rows interleaved.

    llama.cpp's converter reorders a head's rows from HF's rotate-half halves (r_0 .. r_{D/2-1},
    r_{D/2} .. r_{D-1}) to pairs (r_0, r_{D/2}, r_1, r_{D/2+1}, ...) for its rotary kernel.
    """
    d = weight.shape[0] // heads
    return weight.reshape(heads, d // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


class GGUFSource:
    """The tensors of a GGUF file, dequantized to float32 in HF's layout."""

    def __init__(self, path: str, reader: gguf.GGUFReader, config: ModelConfig,
                 gguf_to_hf: dict[str, str]):
        """gguf_to_hf: the HF name of each GGUF tensor name the model reads."""
        self._path = path
        self._tensors = {t.name: t for t in reader.tensors}
        # Only llama's q/k rows are permuted: llama.cpp runs Qwen models with the rotate-half
        # (NeoX) kernel, which needs no reordering.
        self._rotary_heads = {}
        if config.architecture == "llama":
            self._rotary_heads = {"attn_q": config.num_heads, "attn_k": config.num_kv_heads}
        self.names = {gguf_to_hf.get(name, name) for name in self._tensors}

    def read(self, name: str, gguf_name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Tensor `gguf_name`, dequantized, checked to have the HF `shape`, in HF's row order."""
        del name  # The safetensors source's key.
        if gguf_name not in self._tensors:
            raise ValueError(f"Tensor {gguf_name} is missing from {self._path}.")
        tensor = self._tensors[gguf_name]
        try:
            weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError:
            raise ValueError(f"Tensor {gguf_name} in {self._path} uses GGUF quantisation "
                             f"{tensor.tensor_type.name}, which the gguf package cannot "
                             "dequantize.") from None
        check_shape(gguf_name, weight, shape)
        heads = self._rotary_heads.get(gguf_name.split(".")[-2])
        return weight if heads is None else unpermute_rotary_rows(weight, heads)


def is_gguf(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def open_gguf(path: str) -> gguf.GGUFReader:
    try:
        return gguf.GGUFReader(path)
    except (ValueError, KeyError) as e:  # Bad header, or a quantisation type gguf does not know.
        raise ValueError(f"Cannot read GGUF file {path}: {e}") from e


_REQUIRED = object()


def _gguf_field(reader: gguf.GGUFReader, key: str, default=_REQUIRED):
    field = reader.get_field(key)
    if field is None:
        if default is _REQUIRED:
            raise ValueError(f"GGUF file lacks metadata {key!r}.")
        return default
    return field.contents()


def _float32_value(value: float) -> float:
    # GGUF stores float32: take the shortest decimal that rounds to it (1e-05, not 9.99999974e-06).
    return float(str(np.float32(value)))


def config_from_gguf(reader: gguf.GGUFReader) -> ModelConfig:
    """The ModelConfig of a GGUF file's metadata (llama, qwen2 or qwen3)."""
    arch = _gguf_field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise unsupported_architecture(arch)
    tensors = {t.name: t for t in reader.tensors}
    # llama.cpp stores llama3's rope scaling as per-frequency factors, not as its parameters.
    if "rope_freqs.weight" in tensors or _gguf_field(reader, f"{arch}.rope.scaling.type",
                                                      "none") != "none":
        raise ValueError("GGUF rope scaling is not supported; convert the Hugging Face checkpoint.")
    if "token_embd.weight" not in tensors:
        raise ValueError("Tensor token_embd.weight is missing from the GGUF file.")

    def field(key: str, default=_REQUIRED):
        return _gguf_field(reader, f"{arch}.{key}", default)

    embed, heads = field("embedding_length"), field("attention.head_count")
    return ModelConfig(
            architecture=arch,
            vocab_size=int(tensors["token_embd.weight"].shape[1]),  # GGUF shapes are [E, V].
            num_layers=field("block_count"), embed_dim=embed,
            mlp_dim=field("feed_forward_length"), num_heads=heads,
            num_kv_heads=field("attention.head_count_kv", heads),
            head_dim=field("attention.key_length", embed // heads),
            rope_theta=_float32_value(field("rope.freq_base", 10_000.0)),
            norm_eps=_float32_value(field("attention.layer_norm_rms_epsilon")),
            qkv_bias=arch == "qwen2", qk_norm=arch == "qwen3",
            tie_embeddings="output.weight" not in tensors,
            max_seq_len=field("context_length"))
