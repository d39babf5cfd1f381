"""Importance-sampling correction: the sampler's log-probs of the truncated distribution it drew
from (checked against transformers' own top-k / top-p warpers), the TIS weights they give (1
without truncation, the kept mass with it), and a run that logs them every step."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch
from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)

from configs import r1_zero
from r1jax.losses import grpo as grpo_lib, importance
from r1jax.train import grpo, run
from tests.test_grpo_train import CONFIG, sampled_rollouts

TEMPERATURE = 0.8


def _sampled(top_k=None, top_p=None):
    """(params, SampleOutput, the matching Rollouts with π_old from the trainer's forward pass,
    the trainer's float32[N, C, V] logits) for 4 prompts × 2 samples of the tiny model."""
    params, out, batch = sampled_rollouts(TEMPERATURE, top_k, top_p)
    device_batch = jax.tree.map(jnp.asarray, batch.arrays())
    trainer_old, _ = grpo.completion_logprobs(CONFIG, params, device_batch, TEMPERATURE)
    logits, _ = grpo.completion_logits(CONFIG, params, device_batch)
    return params, out, batch.replace(logprobs=np.asarray(trainer_old)), np.asarray(logits)


def _transformers_distribution(logits, top_k=None, top_p=None):
    """float64[..., V] log-probs of the distribution transformers' warpers sample from: the
    temperature, then top-k, then top-p, renormalised."""
    scores = torch.tensor(logits.reshape(-1, logits.shape[-1]), dtype=torch.float32)
    ids = torch.zeros((scores.shape[0], 1), dtype=torch.long)
    scores = TemperatureLogitsWarper(TEMPERATURE)(ids, scores)
    if top_k is not None:
        scores = TopKLogitsWarper(top_k)(ids, scores)
    if top_p is not None:
        scores = TopPLogitsWarper(top_p)(ids, scores)
    return torch.log_softmax(scores.double(), -1).numpy().reshape(logits.shape)


def test_sampler_logprobs_under_top_k_and_top_p_are_the_truncated_distributions():
    _, out, batch, logits = _sampled(top_k=20, top_p=0.9)
    reference = _transformers_distribution(logits, top_k=20, top_p=0.9)
    picked = np.take_along_axis(reference, np.asarray(out.tokens)[..., None], -1)[..., 0]
    mask = np.asarray(out.mask)
    np.testing.assert_allclose(np.asarray(out.sampled_logprobs)[mask], picked[mask], atol=1e-5)
    # The untruncated log-probs (GRPO's π_old) stay the trainer's, lower by the kept mass.
    np.testing.assert_allclose(np.asarray(out.logprobs)[mask], batch.logprobs[mask], atol=1e-5)
    assert (np.asarray(out.sampled_logprobs)[mask] > np.asarray(out.logprobs)[mask] + 1e-3).all()
    assert (np.asarray(out.sampled_logprobs)[~mask] == 0).all()


def test_without_truncation_the_tis_weight_is_one_at_the_first_update():
    params, _, batch, _ = _sampled()
    device_batch = jax.tree.map(jnp.asarray, batch.arrays())
    weights, _ = importance.correction_weights(device_batch.logprobs,
                                               device_batch.sampler_logprobs, device_batch.mask,
                                               "tis", 2.0)
    mask = batch.mask > 0
    np.testing.assert_allclose(np.asarray(weights)[mask], 1.0, atol=1e-5, rtol=0)
    updated = {}
    for mode in ("none", "tis"):
        rl = ml_collections.ConfigDict(dict(algorithm="grpo",
            num_micro_batches=1, aggregation="sequence_mean", beta=0.0, eps_low=0.2,
            eps_high=0.2, sampling=dict(temperature=TEMPERATURE), importance_level="token",
            is_correction=mode, is_bound=2.0))
        state = run.TrainState(params=params, opt_state=optax.sgd(1.0).init(params),
                               reference=None, updates=jnp.zeros((), jnp.int32))
        updated[mode] = grpo.grpo_update(state, device_batch, model_config=CONFIG,
                                         optimizer=optax.sgd(1.0), rl=rl, nan_policy="stop")
    metrics = updated["tis"][1]
    assert abs(float(metrics["is_weight_min"]) - 1) < 1e-5
    assert abs(float(metrics["is_weight_max"]) - 1) < 1e-5
    for a, b in zip(jax.tree.leaves(updated["none"][0].params),
                    jax.tree.leaves(updated["tis"][0].params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_with_truncation_the_tis_weight_is_the_kept_probability_mass():
    _, out, batch, logits = _sampled(top_k=20, top_p=0.9)
    kept = np.isfinite(_transformers_distribution(logits, top_k=20, top_p=0.9))
    probs = np.exp(_transformers_distribution(logits))
    mass = np.where(kept, probs, 0.0).sum(-1)
    weights, metrics = importance.correction_weights(
        jnp.asarray(batch.logprobs), jnp.asarray(batch.sampler_logprobs), jnp.asarray(batch.mask),
        "tis", 2.0)
    mask = batch.mask > 0
    np.testing.assert_allclose(np.asarray(weights)[mask], mass[mask], atol=1e-5)
    assert mass[mask].max() < 0.99  # truncation cut something everywhere
    np.testing.assert_allclose(float(metrics["is_log_ratio_abs"]), -np.log(mass[mask]).mean(),
                               rtol=1e-4)


def test_weights_are_truncated_or_masked_beyond_the_bound():
    old = jnp.log(jnp.array([[0.5, 0.2, 0.3, 0.9]]))
    sampler = jnp.log(jnp.array([[0.1, 0.4, 0.3, 0.1]]))  # ratios 5, 0.5, 1, 9 (9: padding)
    mask = jnp.array([[1.0, 1.0, 1.0, 0.0]])
    tis, tis_metrics = importance.correction_weights(old, sampler, mask, "tis", 2.0)
    masked, _ = importance.correction_weights(old, sampler, mask, "mask", 2.0)
    np.testing.assert_allclose(tis, [[2.0, 0.5, 1.0, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(masked, [[0.0, 0.5, 1.0, 1.0]], rtol=1e-6)
    assert float(tis_metrics["is_bounded"]) == pytest.approx(1 / 3)
    assert float(tis_metrics["is_weight_max"]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="tis"):
        importance.correction_weights(old, sampler, mask, "none", 2.0)


def test_the_weights_scale_each_tokens_surrogate_but_not_the_kl_term():
    rng = np.random.default_rng(3)
    b, t = 3, 4
    logp = rng.normal(-2, 0.5, (b, t)).astype(np.float32)
    old = (logp + rng.normal(0, 0.3, (b, t))).astype(np.float32)
    ref = (logp + rng.normal(0, 0.3, (b, t))).astype(np.float32)
    adv = rng.normal(0, 1, b).astype(np.float32)
    w = rng.uniform(0.2, 2.0, (b, t)).astype(np.float32)
    mask = np.ones((b, t), np.float32)
    loss, _ = grpo_lib.grpo_loss(*map(jnp.asarray, (logp, old, ref, adv, mask)), eps_low=0.2,
                                 eps_high=0.2, beta=0.1, aggregation="token_mean",
                                 is_weights=jnp.asarray(w))
    ratio = np.exp(logp.astype(np.float64) - old)
    surrogate = np.minimum(ratio * adv[:, None], np.clip(ratio, 0.8, 1.2) * adv[:, None])
    kl = np.exp(ref - logp.astype(np.float64)) - (ref - logp) - 1
    np.testing.assert_allclose(float(loss), -(w * surrogate - 0.1 * kl).mean(), rtol=1e-5)


def test_a_run_with_gspo_token_and_tis_logs_the_mismatch_every_step(tmp_path):
    config = r1_zero.get_config("tiny")
    config.data.data_dir = str(tmp_path / "data")
    config.rl.sampling.update(top_k=20, top_p=0.9)
    config.rl.update(importance_level="sequence_token", is_correction="tis", is_bound=2.0)
    config.train.update(num_steps=2, eval_every=0, checkpoint_every=2)
    config.eval.update(max_problems=8)
    grpo.train(config, str(tmp_path / "w"))
    with open(tmp_path / "w" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f if "loss" in line]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert 0 < row["is_weight_min"] <= row["is_weight_mean"] < 1 and row["is_bounded"] == 0
        assert row["is_log_ratio_abs"] > 0 and np.isfinite(row["loss"])


@pytest.mark.parametrize("key,value,message", [
    ("rl.importance_level", "sentence", "rl.importance_level='sentence'"),
    ("rl.is_correction", "clip", "rl.is_correction='clip'"),
    ("rl.is_bound", 0.5, "rl.is_bound=0.5"),
])
def test_bad_importance_settings_are_named(key, value, message):
    config = r1_zero.get_config("tiny")
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        grpo.validate_config(config, mesh_batch=8)
