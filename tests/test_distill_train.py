"""Logit and on-policy distillation runs (r1jax/train/distill.py) with tiny random models."""
import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import common, distill as distill_configs
from r1jax import models
from r1jax.train import distill


def _save_tiny(path, seed: int, *, vocab_size: int = 49152, tokenizer: str = ""):
    """A random tiny Llama saved as a HF directory (with its tokenizer): a teacher."""
    config = models.preset("tiny_llama", vocab_size=vocab_size)
    params = nn.meta.unbox(models.init_params(config, jax.random.key(seed)))
    models.save_pretrained(config, params, str(path),
                           tokenizer=models.load_tokenizer(tokenizer or common.smollm2_path()))
    return str(path)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return _save_tiny(tmp_path_factory.mktemp("teacher"), seed=1)


def _config(variant: str, teacher: str, **train):
    config = distill_configs.get_config(variant)
    config.teacher.path = teacher
    config.eval.max_problems = 0
    config.train.update(**train)
    return config


def _metrics(workdir) -> list[dict]:
    with open(workdir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def test_teacher_equal_to_student_gives_zero_kl_and_zero_gradient(tmp_path, teacher_dir):
    config = _config("logits_tiny", teacher_dir, num_steps=1)
    config.model.update(path=teacher_dir, preset="")
    m = distill.train(config, str(tmp_path / "w"))
    assert abs(m["loss"]) < 1e-6 and abs(m["kl"]) < 1e-6
    assert m["grad_norm"] < 1e-6
    assert m["student_logprob"] == pytest.approx(m["teacher_logprob"], abs=1e-6)
    assert m["teacher_logprob"] < 0
    assert m["teacher_tokens"] > 0


def test_logit_distillation_lowers_kl(tmp_path, teacher_dir):
    config = _config("logits_tiny", teacher_dir, num_steps=4, checkpoint_every=0)
    config.distill.top_k = 32  # the top-k path; the full one is the test above's
    distill.train(config, str(tmp_path / "w"))
    rows = [r for r in _metrics(tmp_path / "w") if "kl" in r]
    kl = [r["kl"] for r in rows]
    assert len(kl) == 4 and kl[0] > 0
    # Each step's batch is new, yet the KL falls at every step and by > 5% over four.
    assert all(b < a for a, b in zip(kl, kl[1:])) and kl[-1] < 0.95 * kl[0], kl
    # Every step the teacher reads the batch's non-padding tokens: the count only grows.
    tokens = [r["teacher_tokens"] for r in rows]
    assert all(b > a for a, b in zip(tokens, tokens[1:]))


def test_on_policy_run_checkpoints_resumes_and_counts_teacher_tokens(tmp_path, teacher_dir):
    def run(workdir, steps, eval_problems=0):
        config = _config("on_policy_tiny", teacher_dir, num_steps=steps, checkpoint_every=1)
        config.eval.max_problems = eval_problems  # greedy: the training rollouts do not change
        return distill.train(config, str(workdir))

    whole = run(tmp_path / "whole", 2, eval_problems=8)
    run(tmp_path / "cut", 1)
    resumed = run(tmp_path / "cut", 2)
    # The resumed run restored params, data position and the teacher-token count.
    for key in ("loss", "kl", "teacher_logprob", "student_logprob", "teacher_tokens"):
        assert resumed[key] == pytest.approx(whole[key], rel=1e-5, abs=1e-6), key
    rows = _metrics(tmp_path / "whole")
    assert "accuracy" in rows[0] and "accuracy" in rows[-1]
    by_step = {r["step"]: r for r in rows}
    assert 0 < by_step[1]["teacher_tokens"] < by_step[2]["teacher_tokens"]
    assert by_step[2]["teacher_logprob"] < 0 and by_step[2]["student_logprob"] < 0
    assert (tmp_path / "whole" / "samples.jsonl").exists()


def test_teacher_with_another_vocabulary_is_refused(tmp_path):
    teacher = _save_tiny(tmp_path / "digits", seed=0, vocab_size=20,
                         tokenizer=common.digits_tokenizer())
    config = _config("logits_tiny", teacher, num_steps=1)
    with pytest.raises(ValueError, match=r"config\.teacher\.path=.*digits.*share a tokenizer"):
        distill.train(config, str(tmp_path / "w"))


def test_on_policy_refuses_a_tempered_sampler(tmp_path, teacher_dir):
    config = _config("on_policy_tiny", teacher_dir, num_steps=1)
    config.rl.sampling.temperature = 0.7
    with pytest.raises(ValueError, match=r"config\.rl\.sampling="):
        distill.train(config, str(tmp_path / "w"))
