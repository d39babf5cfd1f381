"""GSPO's sequence-level ratio (r1jax.losses.grpo.importance_ratios) against a hand-computed
value, a per-sequence transcription of the paper's objective, and finite differences."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import r1_zero
from r1jax.losses import grpo


def _gspo_reference(logp, old, ref, adv, mask, eps_low, eps_high, beta, aggregation):
    """-J(θ) with GSPO's s_i, written with Python loops: s_i = exp(mean of the counted tokens'
    log-ratios), clipped per sequence, broadcast to the tokens and aggregated as TRL's
    importance_sampling_level="sequence" does (plus the per-token k3 KL term)."""
    b, t = logp.shape
    terms = []
    for i in range(b):
        counted = [j for j in range(t) if mask[i, j]]
        s = math.exp(sum(logp[i, j] - old[i, j] for j in counted) / max(len(counted), 1))
        surrogate = min(s * adv[i], min(max(s, 1 - eps_low), 1 + eps_high) * adv[i])
        seq = []
        for j in counted:
            kl = 0.0
            if beta > 0:
                kl = math.exp(ref[i, j] - logp[i, j]) - (ref[i, j] - logp[i, j]) - 1
            seq.append(surrogate - beta * kl)
        terms.append(seq)
    if aggregation == "sequence_mean":
        return -np.mean([sum(s) / max(len(s), 1) for s in terms])
    if aggregation == "token_mean":
        return -sum(sum(s) for s in terms) / sum(len(s) for s in terms)
    return -sum(sum(s) for s in terms) / (b * t)


def _loss(logp, old, adv, mask, level, eps=(3e-4, 4e-4), **kwargs):
    return grpo.grpo_loss(jnp.asarray(logp), jnp.asarray(old), None, jnp.asarray(adv),
                          jnp.asarray(mask), eps_low=eps[0], eps_high=eps[1], beta=0.0,
                          importance_level=level, **kwargs)


@pytest.mark.parametrize("level", ["sequence", "sequence_token"])
def test_gspo_loss_equals_a_hand_computed_value(level):
    # Row 0: log-ratios −0.0002, 0.0006 → s = e^0.0002 = 1.00020002, inside [1 − 3e-4, 1 + 4e-4]:
    #        A = +1 gives 1.00020002. (Per token, GRPO would clip the second: mean 1.0001.)
    # Row 1: log-ratio −0.001 (the second token is padding) → s = e^−0.001 = 0.9990005
    #        < 1 − 3e-4, A = −1: min(−0.9990005, −0.9997) = −0.9997.
    # J = (1.00020002 − 0.9997) / 2 = 0.00025001; the loss is −J.
    old = np.array([[-0.25, -0.5], [-0.125, -1.0]], np.float32)
    logp = old + np.array([[-0.0002, 0.0006], [-0.001, 5.0]], np.float32)
    mask = np.array([[1, 1], [1, 0]], np.float32)
    loss, metrics = _loss(logp, old, np.array([1.0, -1.0], np.float32), mask, level)
    np.testing.assert_allclose(float(loss), -0.00025001, atol=1e-7)
    assert float(metrics["clip_high"]) == 0
    assert float(metrics["clip_low"]) == pytest.approx(1 / 3)  # row 1's one token of three
    token_loss, _ = _loss(logp, old, np.array([1.0, -1.0], np.float32), mask, "token")
    np.testing.assert_allclose(float(token_loss), -(1.0001 - 0.9997) / 2, atol=1e-7)


@pytest.mark.parametrize("aggregation,beta", itertools.product(grpo.AGGREGATIONS, [0.0, 0.04]))
def test_gspo_loss_matches_the_per_sequence_transcription(aggregation, beta):
    rng = np.random.default_rng(0)
    b, t = 6, 9
    logp = rng.normal(-2, 0.5, (b, t))
    old = logp + rng.normal(0, 3e-4, (b, t))  # sequence ratios on both sides of the clip range
    ref = logp + rng.normal(0, 0.3, (b, t))
    adv = rng.normal(0, 1, b)
    mask = (rng.random((b, t)) < 0.7).astype(np.float64)
    mask[0] = 0  # an empty completion must not produce NaN
    loss, _ = grpo.grpo_loss(
        jnp.asarray(logp, jnp.float32), jnp.asarray(old, jnp.float32),
        jnp.asarray(ref, jnp.float32) if beta else None, jnp.asarray(adv, jnp.float32),
        jnp.asarray(mask, jnp.float32), eps_low=3e-4, eps_high=4e-4, beta=beta,
        aggregation=aggregation, importance_level="sequence")
    expected = _gspo_reference(logp, old, ref, adv, mask, 3e-4, 4e-4, beta, aggregation)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5, atol=1e-7)


def test_gspo_gradient_matches_finite_differences_and_gspo_token_has_the_same():
    """Central differences in float64 of the loss in log π_θ; GSPO-token, whose value is GSPO's
    but whose gradient is defined through stop-gradients, gives the same gradient with one
    advantage per sequence (the GSPO paper, §4.3)."""
    rng = np.random.default_rng(1)
    b, t = 4, 5
    with jax.enable_x64(True):
        logp = jnp.asarray(rng.normal(-2, 0.5, (b, t)))
        # Rows 0-1 inside the clip range, rows 2-3 far outside it on the side that clips.
        shift = np.array([1e-4, -1e-4, 0.05, -0.05])[:, None]
        old = logp - shift + jnp.asarray(rng.normal(0, 1e-5, (b, t)))
        adv = jnp.asarray([1.0, -0.5, 2.0, -1.0])
        mask = jnp.asarray((np.arange(t)[None] < np.array([5, 3, 4, 2])[:, None]).astype(float))

        def loss(x, level):
            return grpo.grpo_loss(x, old, None, adv, mask, eps_low=3e-4, eps_high=4e-4, beta=0.0,
                                  importance_level=level)[0]

        grad = np.asarray(jax.grad(loss)(logp, "sequence"))
        h = 1e-7
        numeric = np.zeros((b, t))
        for i, j in itertools.product(range(b), range(t)):
            step = jnp.zeros((b, t)).at[i, j].set(h)
            numeric[i, j] = (loss(logp + step, "sequence") - loss(logp - step, "sequence")) / (2 * h)
        np.testing.assert_allclose(grad, numeric, atol=1e-7)
        assert np.abs(grad[:2]).max() > 1e-3 and np.abs(grad[2:]).max() == 0  # clipped rows: 0
        np.testing.assert_allclose(jax.grad(loss)(logp, "sequence_token"), grad, atol=1e-12)
        assert float(loss(logp, "sequence_token")) == pytest.approx(float(loss(logp, "sequence")))


def test_token_level_is_grpos_ratio():
    rng = np.random.default_rng(2)
    logp = jnp.asarray(rng.normal(-2, 0.5, (3, 4)), jnp.float32)
    old = logp + jnp.asarray(rng.normal(0, 0.3, (3, 4)), jnp.float32)
    ratio = grpo.importance_ratios(logp, old, jnp.ones((3, 4)), "token")
    np.testing.assert_allclose(ratio, np.exp(np.asarray(logp) - np.asarray(old)), rtol=1e-6)
    with pytest.raises(ValueError, match="token"):
        grpo.importance_ratios(logp, old, jnp.ones((3, 4)), "sentence")


def test_the_gspo_variant_is_the_default_but_for_the_gspo_settings():
    default, gspo = r1_zero.get_config(""), r1_zero.get_config("gspo")
    assert gspo.rl.importance_level == "sequence"
    assert (gspo.rl.eps_low, gspo.rl.eps_high) == (3e-4, 4e-4)
    gspo.rl.update(importance_level="token", eps_low=default.rl.eps_low,
                   eps_high=default.rl.eps_high)
    gspo.variant = default.variant
    assert gspo.to_dict() == default.to_dict()
