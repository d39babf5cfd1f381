"""A reward model: a transformer backbone and a scalar head on the last token's hidden state.

    params = {"backbone": the policy's params tree, "head": {"kernel": [E, 1]}}

The head has no bias: the Bradley–Terry loss cannot see a constant offset, and Hugging Face's
*ForSequenceClassification `score` layer has none, so the export is exact. The head reads the final (normed) hidden state of each sequence's last real token, the one that
has attended to the whole prompt and response, as Hugging Face's *ForSequenceClassification
models do. Sequences are right-padded; `lengths` says where each ends.

`save_pretrained` writes such a Hugging Face directory (num_labels=1): the backbone as
convert.save_pretrained writes a causal LM, the head as `score.weight` [1, E] beside it.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from r1jax import sharding
from r1jax.models import convert, hf_files, transformer
from r1jax.models.config import ModelConfig

HEAD_AXES = {"kernel": PartitionSpec("embed", None)}


def head_shapes(config: ModelConfig) -> dict:
    return {"kernel": jax.ShapeDtypeStruct((config.embed_dim, 1), jnp.dtype(config.param_dtype))}


def abstract_params(config: ModelConfig) -> dict:
    """jax.ShapeDtypeStruct tree of the reward model's params (checkpoint restore's target)."""
    import flax.linen as nn
    return {"backbone": nn.meta.unbox(transformer.abstract_params(config)),
            "head": head_shapes(config)}


def init_head(config: ModelConfig, seed: int) -> dict:
    """A head whose initial rewards are small (std ≈ 1/sqrt(E) of a unit-RMS hidden state)."""
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0.0, 1.0 / config.embed_dim, (config.embed_dim, 1))
    return {"kernel": kernel.astype(config.param_dtype)}


def param_shardings(config: ModelConfig, mesh, rules) -> dict:
    """NamedShardings of the params tree: the backbone's own, the head's from HEAD_AXES."""
    return {"backbone": sharding.param_shardings(config, mesh, rules),
            "head": sharding.logical_to_shardings(HEAD_AXES, mesh, rules, head_shapes(config))}


def shard_params(config: ModelConfig, backbone, head: dict, mesh, rules) -> dict:
    """Places a loaded backbone (numpy or jax) and head onto their shards."""
    heads = param_shardings(config, mesh, rules)["head"]
    return {"backbone": sharding.shard_params(config, backbone, mesh, rules),
            "head": jax.tree.map(lambda x, s: jax.device_put(jnp.asarray(x), s), head, heads)}


def rewards(config: ModelConfig, params: dict, tokens: jax.Array,
            lengths: jax.Array) -> jax.Array:
    """float32[B] rewards of right-padded int32[B, T] tokens whose first lengths[b] are real."""
    t = tokens.shape[1]
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), tokens.shape)
    segment_ids = (positions < lengths[:, None]).astype(jnp.int32)
    hidden, _ = transformer.forward(config, params["backbone"], tokens, positions, segment_ids,
                                    return_hidden=True)
    last = jnp.take_along_axis(hidden, (lengths - 1)[:, None, None], axis=1)[:, 0]
    kernel = params["head"]["kernel"].astype(jnp.float32)
    return jnp.dot(last.astype(jnp.float32), kernel)[:, 0]


SCORE_FILE = "score.safetensors"


def save_pretrained(config: ModelConfig, params: dict, path: str, tokenizer=None) -> None:
    """Writes a HF *ForSequenceClassification directory (num_labels=1) of the reward model.

    HF scores the last token that is not `pad_token_id` (the tokenizer's, else EOS), which is
    the last real token whenever a rendering does not end in the pad token (ChatML's ends in a
    newline after <|im_end|>).
    """
    convert.save_pretrained(config, params["backbone"], path, tokenizer)
    with open(os.path.join(path, hf_files.CONFIG_FILE)) as f:
        hf = json.load(f)
    hf["architectures"] = [hf["architectures"][0].replace("ForCausalLM",
                                                          "ForSequenceClassification")]
    hf["num_labels"] = 1
    if hf.get("pad_token_id") is None:
        hf["pad_token_id"] = hf.get("eos_token_id")
    with open(os.path.join(path, hf_files.CONFIG_FILE), "w") as f:
        json.dump(hf, f, indent=2)

    import safetensors.numpy  # Only an export needs it (to read back the backbone it wrote).
    score = {"score.weight": np.asarray(params["head"]["kernel"]).astype(config.param_dtype).T}
    index_path = os.path.join(path, hf_files.INDEX_FILE)
    if not os.path.exists(index_path):  # one file (under 2 GiB): transformers reads only it
        single = os.path.join(path, hf_files.SINGLE_FILE)
        tensors = {**safetensors.numpy.load_file(single), **score}
        tensors.pop("lm_head.weight", None)  # a classifier has no vocabulary projection
        hf_files.save_tensors(tensors, single)
        return
    hf_files.save_tensors(score, os.path.join(path, SCORE_FILE))
    with open(index_path) as f:
        index = json.load(f)
    index["weight_map"]["score.weight"] = SCORE_FILE
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2)


def classifier_problem(hf: dict) -> str | None:
    """Why a HF config.json (as a dict) is not a one-label sequence classifier, or None."""
    architecture = (hf.get("architectures") or [""])[0]
    labels = hf.get("num_labels", len(hf.get("id2label") or {"0": ""}))
    if not architecture.endswith("ForSequenceClassification") or labels != 1:
        return (f"its config.json has architectures={hf.get('architectures')} and {labels} "
                "labels; expected a *ForSequenceClassification with num_labels=1")
    return None


def load_pretrained(path: str, **overrides) -> tuple[ModelConfig, dict]:
    """(config, numpy params) of a HF *ForSequenceClassification directory with one label (an
    r1jax export, or a Llama / Qwen2 reward model from the Hub).

    The backbone is read as if its embeddings were tied: a classifier has no vocabulary
    projection, and the reward never uses one.

    Raises:
      ValueError: the directory's config.json is not a one-label sequence classifier.
    """
    with open(os.path.join(path, hf_files.CONFIG_FILE)) as f:
        problem = classifier_problem(json.load(f))
    if problem:
        raise ValueError(f"{path} is not a reward model: {problem}.")
    config, backbone = convert.load_pretrained_numpy(path, tie_embeddings=True, **overrides)
    score = hf_files.SafetensorsSource(path).read("score.weight", "", (1, config.embed_dim))
    return config, {"backbone": backbone,
                    "head": {"kernel": score.T.astype(config.param_dtype)}}
