"""Hugging Face model directories on disk: config.json, safetensors files (one, or shards with an
index) read tensor by tensor, FP8 block-quantised weights dequantised, and written back in shards.

Shared by convert.py (dense families) and convert_moe.py (DeepSeek-V3, Qwen3-MoE).
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
from typing import Callable

import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
MAX_SHARD_BYTES = 2 * 1024**3
# safetensors' numpy reader has no float8 type; these are read raw and typed with ml_dtypes.
_FLOAT8 = {"F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2}


def check_shape(name: str, tensor: np.ndarray, expected: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise ValueError(f"Tensor {name} has shape {tuple(tensor.shape)}, but the config expects "
                         f"{tuple(expected)}.")


def read_hf_config(directory: str) -> dict:
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No {CONFIG_FILE} in {directory}: expected a Hugging Face model "
                                "directory (config.json + safetensors).")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"Cannot parse {path}: {e}") from e


def quantization_block(hf: dict) -> tuple[int, int]:
    """The [rows, cols] block of a config's FP8 `weight_scale_inv` scales (DeepSeek: 128x128)."""
    quant = hf.get("quantization_config") or {}
    if quant and quant.get("quant_method") != "fp8":
        raise ValueError(f"quantization_config.quant_method={quant.get('quant_method')!r} is not "
                         "supported; supported: 'fp8' (block-quantised, weight_scale_inv).")
    return tuple(quant.get("weight_block_size") or (128, 128))


def dequantize_blocks(weight: np.ndarray, scale_inv: np.ndarray,
                      block: tuple[int, int] = (128, 128)) -> np.ndarray:
    """float32 weight [O, I] from a quantised weight and float32[ceil(O/b0), ceil(I/b1)] scales."""
    scales = np.repeat(np.repeat(scale_inv.astype(np.float32), block[0], 0), block[1], 1)
    return weight.astype(np.float32) * scales[:weight.shape[0], :weight.shape[1]]


@contextlib.contextmanager
def _named_file_errors(file: str, action: str):
    """safetensors' errors (a damaged header, a full disk) name neither the file nor the action:
    re-raised as OSError, an expected failure (one error line in the binaries), naming both."""
    try:
        yield
    except safetensors.SafetensorError as e:
        raise OSError(f"{action} {file}: {e}") from e


def _safe_open(file: str):
    with _named_file_errors(file, "cannot read safetensors file"):
        return safetensors.safe_open(file, framework="np")


def save_tensors(tensors: dict[str, np.ndarray], file: str) -> None:
    """Writes a safetensors file that transformers and PEFT read (they refuse one whose metadata
    does not name a framework); a failed write (a full disk) names the file."""
    with _named_file_errors(file, "cannot write"):
        safetensors.numpy.save_file(tensors, file, metadata={"format": "pt"})


def _read_raw(file: str, name: str, dtype) -> np.ndarray:
    """A tensor straight from a safetensors file's header and bytes, as `dtype`."""
    with open(file, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    begin, end = header[name]["data_offsets"]
    data = np.fromfile(file, np.uint8, count=end - begin, offset=8 + header_len + begin)
    return data.view(dtype).reshape(header[name]["shape"])


class SafetensorsSource:
    """The tensors of a HF directory: model.safetensors, or the shards its index lists.

    A weight stored with a `<name>_scale_inv` companion (FP8 checkpoints such as DeepSeek-V3's)
    is dequantised to float32 with the config's block size (`quantization_block`).
    """

    def __init__(self, directory: str, block: tuple[int, int] = (128, 128)):
        index, single = os.path.join(directory, INDEX_FILE), os.path.join(directory, SINGLE_FILE)
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            self._files = {name: os.path.join(directory, file) for name, file in weight_map.items()}
        elif os.path.exists(single):
            with _safe_open(single) as f:
                self._files = {name: single for name in f.keys()}
        else:
            raise FileNotFoundError(
                    f"No {SINGLE_FILE} or {INDEX_FILE} in {directory} (PyTorch .bin checkpoints "
                    "are not supported: re-save them with safe_serialization=True).")
        self.names = set(self._files)
        self._directory = directory
        self._block = block

    def _tensor(self, name: str) -> np.ndarray:
        file = self._files[name]
        with _safe_open(file) as f:
            dtype = f.get_slice(name).get_dtype()
            if dtype not in _FLOAT8:
                return f.get_tensor(name)
        return _read_raw(file, name, _FLOAT8[dtype])

    def read(self, name: str, gguf_name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Tensor `name` (dequantised if it has scales), checked to have the HF `shape`."""
        del gguf_name  # The GGUF source's key.
        if name not in self._files:
            raise ValueError(f"Tensor {name} is missing from {self._directory}.")
        tensor = self._tensor(name)
        if name + "_scale_inv" in self._files:
            tensor = dequantize_blocks(tensor, self._tensor(name + "_scale_inv"), self._block)
        check_shape(name, tensor, shape)
        return tensor


def plan_shards(sizes: list[tuple[str, int]], max_bytes: int) -> list[list[str]]:
    """Groups (name, bytes) in order into shards of at most max_bytes (or one oversized tensor)."""
    shards, current, current_bytes = [], [], 0
    for name, nbytes in sizes:
        if current and current_bytes + nbytes > max_bytes:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(name)
        current_bytes += nbytes
    return shards + [current]


def _remove_stale_weights(path: str) -> None:
    # Shards or an index left by an earlier save would be mixed into this one when loading.
    for stale in glob.glob(os.path.join(path, "model*.safetensors")) + [
            os.path.join(path, INDEX_FILE)]:
        if os.path.exists(stale):
            os.remove(stale)


def write_hf_directory(path: str, config_json: dict, sizes: list[tuple[str, int]],
                       tensor: Callable[[str], np.ndarray], tokenizer,
                       max_shard_bytes: int) -> None:
    """Writes config.json and the tensors named in (name, bytes) `sizes`, `tensor(name)` giving
    each, into model.safetensors or shards of at most max_shard_bytes with an index; a given
    tokenizer is saved alongside."""
    shards = plan_shards(sizes, max_shard_bytes)
    os.makedirs(path, exist_ok=True)
    _remove_stale_weights(path)
    files = [SINGLE_FILE] if len(shards) == 1 else [
            f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for file, shard in zip(files, shards):
        save_tensors({name: tensor(name) for name in shard}, os.path.join(path, file))
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(nbytes for _, nbytes in sizes)},
                 "weight_map": {name: file for file, shard in zip(files, shards) for name in shard}}
        with open(os.path.join(path, INDEX_FILE), "w") as f:
            json.dump(index, f, indent=2)
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        json.dump(config_json, f, indent=2)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
