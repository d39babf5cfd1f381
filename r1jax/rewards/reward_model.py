"""A trained reward model as a reward: `get("reward_model", path=WORKDIR, apply_to=...)`.

R1's last stage scores helpfulness on the final answer only, leaving the reasoning free
(apply_to="final_answer": the text after `</think>`), and harmlessness on the whole response
(apply_to="response"). The model sees what it was trained on: the question (the `question`
field, before any template; else the prompt) as the user's turn, the text as the assistant's.

Each process scores its own rows on its own devices; the model, its tokenizer and the compiled
forward pass are loaded once per path and kept.
"""
from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence

import jax
import numpy as np

from r1jax import checkpoint, sharding
from r1jax.data import pairs
from r1jax.models import hf_files, load_tokenizer
from r1jax.models import reward_model as rm
from r1jax.rewards.format import THINK_CLOSE

APPLY_TO = ("final_answer", "response")
# Tokens a HF reward model reads unless `seq_len` says: rows are padded to it, so the model's own
# context (32k and more) would cost every batch that much.
HF_SEQ_LEN = 2048
INFO_FILE = "reward_model.json"  # written by r1jax.train.reward_model


def final_answer(completion: str) -> str:
    """The completion after its first `</think>` (the whole completion when there is none)."""
    _, closed, after = completion.partition(THINK_CLOSE)
    return after.strip() if closed else completion.strip()


def path_problem(path: str) -> str | None:
    """Why `path` is not a reward model (see `read_model`), or None; reads small files only."""
    if not os.path.exists(path):
        return "no such file or directory"
    if not os.path.isdir(path):
        return ("it is a file; a reward model is a directory (a reward-model workdir or a HF "
                "*ForSequenceClassification directory)")
    if os.path.isfile(os.path.join(path, hf_files.CONFIG_FILE)):
        with open(os.path.join(path, hf_files.CONFIG_FILE)) as f:
            return rm.classifier_problem(json.load(f))
    if not os.path.isfile(os.path.join(path, INFO_FILE)):
        return (f"it has no {INFO_FILE} (written by launch.train with configs/reward_model.py) "
                "and no config.json (a HF *ForSequenceClassification directory)")
    if not os.path.isdir(os.path.join(path, checkpoint.CHECKPOINT_DIR)):
        return f"it has {INFO_FILE} but no {checkpoint.CHECKPOINT_DIR}/"
    return None


def check_params(key: str, params: dict) -> None:
    """Refuses, at a trainer's start-up, params (config `key`) whose path is not a reward model:
    otherwise only the first reward call would find out."""
    path = params.get("path")
    if not path:
        raise ValueError(f"config.{key}.path is required: a reward-model workdir or a HF "
                         "*ForSequenceClassification directory.")
    problem = path_problem(os.path.abspath(path))
    if problem:
        raise ValueError(f"config.{key}.path={path!r} is not a reward model: {problem}.")
    if params.get("apply_to") is not None and params["apply_to"] not in APPLY_TO:
        raise ValueError(f"config.{key}.apply_to={params['apply_to']!r}; expected one of "
                         f"{APPLY_TO}.")


def read_info(path: str) -> dict:
    """WORKDIR/reward_model.json, after `path_problem`'s check."""
    problem = path_problem(path)
    if problem:
        raise ValueError(f"reward_model path={path!r} is not a reward model: {problem}.")
    with open(os.path.join(path, INFO_FILE)) as f:
        return json.load(f)


def read_model(path: str) -> tuple[object, dict, str, dict]:
    """(model config, host params, tokenizer path, info) of a reward-model workdir (newest
    checkpoint) or a HF *ForSequenceClassification directory (whose rewards are not normalised:
    mean 0, std 1)."""
    if os.path.isfile(os.path.join(path, hf_files.CONFIG_FILE)):
        config, params = rm.load_pretrained(path)
        return config, params, path, {"seq_len": min(config.max_seq_len, HF_SEQ_LEN),
                                      "reward_mean": 0.0,
                                      "reward_std": 1.0}
    info = read_info(path)
    config, params = checkpoint.restore_params(path, shapes=rm.abstract_params)
    return config, params, os.path.join(path, checkpoint.TOKENIZER_DIR), info


@functools.lru_cache(maxsize=4)
def load(path: str) -> tuple[Callable, object, dict]:
    """(score(tokens int32[B, T], lengths int32[B]) -> float32[B], tokenizer, info) of the
    reward model at `path` (see `read_model`), sharded over this process's devices."""
    config, params, tokenizer_path, info = read_model(path)
    devices = jax.local_devices()
    mesh = sharding.make_mesh({"fsdp": len(devices)}, devices)
    rules = sharding.DEFAULT_RULES
    shardings = rm.param_shardings(config, mesh, rules)
    params = jax.device_put(params, shardings)
    batch = sharding.batch_sharding(mesh, ndim=1)
    score = sharding.sharded_jit(functools.partial(rm.rewards, config), mesh, rules,
                                 in_shardings=(shardings, batch, batch),
                                 out_shardings=sharding.replicated(mesh))
    tokenizer = load_tokenizer(tokenizer_path)
    return functools.partial(score, params), tokenizer, {**info, "devices": len(devices)}


def reward_model(prompts: list[str], completions: list[str], *, path: str,
                 apply_to: str = "final_answer", normalize: bool = False, batch_size: int = 16,
                 seq_len: int = 0, question: Sequence[str] | None = None,
                 **fields) -> list[float]:
    """N rewards of the reward model at `path`: a reward-model workdir or a HF
    *ForSequenceClassification directory (see the module docstring).

    Args:
      apply_to: "final_answer" (the text after </think>) or "response" (all of it).
      normalize: (r − mean) / std with the model's held-out mean and std (reward_model.json), so
        several reward models and rule rewards can be weighted together.
      batch_size: rows per forward pass (rounded up to a multiple of the local devices).
      seq_len: tokens per row (longer renderings keep their end); 0: the model's training
        seq_len (reward_model.json), or HF_SEQ_LEN for a HF directory.
      question: optional N questions before templating, shown to the model as the user's turn.
    """
    if apply_to not in APPLY_TO:
        raise ValueError(f"reward_model apply_to={apply_to!r}; expected one of {APPLY_TO}.")
    score, tokenizer, info = load(os.path.abspath(path))
    texts = [final_answer(c) if apply_to == "final_answer" else c for c in completions]
    tokens, lengths, _ = pairs.sequences(question if question is not None else prompts, texts,
                                         tokenizer, seq_len or info["seq_len"])
    size = -(-batch_size // info["devices"]) * info["devices"]
    out = []
    for start in range(0, len(texts), size):
        rows = np.arange(start, start + size) % len(texts)  # the last batch padded with repeats
        out.append(np.asarray(score(tokens[rows], lengths[rows])))
    rewards = np.concatenate(out)[:len(texts)] if out else np.zeros((0,), np.float32)
    if normalize:
        rewards = (rewards - info["reward_mean"]) / max(info["reward_std"], 1e-6)
    return [float(r) for r in rewards]
