"""GRPO and SFT losses against direct per-token transcriptions of their formulas."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.losses import grpo, logprobs, sft


def _paper_grpo(logp, old, ref, adv, mask, eps_low, eps_high, beta, aggregation):
    """-J(θ) written token by token with Python loops, as in the R1 paper's equation."""
    b, t = logp.shape
    terms, lengths = [], []
    for i in range(b):
        seq = []
        for j in range(t):
            if not mask[i, j]:
                continue
            ratio = math.exp(logp[i, j] - old[i, j])
            surrogate = min(ratio * adv[i], min(max(ratio, 1 - eps_low), 1 + eps_high) * adv[i])
            kl = 0.0
            if beta > 0:
                kl = math.exp(ref[i, j] - logp[i, j]) - (ref[i, j] - logp[i, j]) - 1
            seq.append(surrogate - beta * kl)
        terms.append(seq)
        lengths.append(len(seq))
    if aggregation == "sequence_mean":
        return -np.mean([sum(s) / max(len(s), 1) for s in terms])
    if aggregation == "token_mean":
        return -sum(sum(s) for s in terms) / sum(lengths)
    return -sum(sum(s) for s in terms) / (b * t)


@pytest.mark.parametrize("aggregation,beta,eps", itertools.product(
    grpo.AGGREGATIONS, [0.0, 0.04], [(0.2, 0.2), (0.2, 0.28)]))
def test_grpo_loss_matches_paper_formula(aggregation, beta, eps):
    rng = np.random.default_rng(0)
    b, t = 6, 9
    logp = rng.normal(-2, 0.5, (b, t))
    old = logp + rng.normal(0, 0.3, (b, t))  # ratios far enough from 1 to clip
    ref = logp + rng.normal(0, 0.3, (b, t))
    adv = rng.normal(0, 1, b)
    mask = (rng.random((b, t)) < 0.7).astype(np.float64)
    mask[0] = 0  # an empty completion must not produce NaN
    loss, metrics = grpo.grpo_loss(
        jnp.asarray(logp, jnp.float32), jnp.asarray(old, jnp.float32),
        jnp.asarray(ref, jnp.float32) if beta else None, jnp.asarray(adv, jnp.float32),
        jnp.asarray(mask, jnp.float32), eps_low=eps[0], eps_high=eps[1], beta=beta,
        aggregation=aggregation)
    expected = _paper_grpo(logp, old, ref, adv, mask, eps[0], eps[1], beta, aggregation)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5, atol=1e-6)
    assert ("kl" in metrics) == (beta > 0)
    assert 0 < float(metrics["clip_low"]) + float(metrics["clip_high"]) < 1


def test_grpo_gradient_raises_probability_of_better_completion():
    logp = jnp.log(jnp.array([[0.3], [0.3]]))
    adv = jnp.array([1.0, -1.0])
    mask = jnp.ones((2, 1))

    def loss_fn(lp):
        return grpo.grpo_loss(lp, jax.lax.stop_gradient(lp), None, adv, mask, eps_low=0.2,
                              eps_high=0.2, beta=0.0)[0]

    grad = jax.grad(loss_fn)(logp)
    # Gradient descent on the loss moves logp along -grad: up for A > 0, down for A < 0.
    assert grad[0, 0] < 0 < grad[1, 0]


def test_kl_penalty_gradient_pulls_towards_reference():
    ref = jnp.log(jnp.array([[0.5]]))
    logp = jnp.log(jnp.array([[0.2]]))
    grad = jax.grad(lambda lp: grpo.grpo_loss(
        lp, jax.lax.stop_gradient(lp), ref, jnp.zeros(1), jnp.ones((1, 1)), eps_low=0.2,
        eps_high=0.2, beta=1.0)[0])(logp)
    assert grad[0, 0] < 0  # descent raises logp towards the reference's 0.5


def test_group_advantages():
    rewards = jnp.array([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    adv = grpo.group_advantages(rewards, 4)
    first = np.array([1, 0, 0, 0.0])
    expected = (first - first.mean()) / (first.std(ddof=1) + 1e-4)
    np.testing.assert_allclose(adv[:4], expected, rtol=1e-6)
    np.testing.assert_allclose(adv[4:], 0.0)  # a group with equal rewards teaches nothing
    np.testing.assert_allclose(grpo.group_advantages(rewards, 4, scale_by_std=False)[:4],
                               first - first.mean())


def test_unknown_aggregation_names_the_choices():
    with pytest.raises(ValueError, match="sequence_mean"):
        grpo.aggregate(jnp.ones((1, 1)), jnp.ones((1, 1)), "mean")


def test_sft_loss_matches_manual_cross_entropy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 11)).astype(np.float32)
    targets = rng.integers(0, 11, (2, 5))
    weights = (rng.random((2, 5)) < 0.6).astype(np.float32)
    loss, metrics = sft.sft_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights),
                                 z_loss=1e-3)
    nll, z, n = 0.0, 0.0, 0
    for i, j in itertools.product(range(2), range(5)):
        if weights[i, j]:
            logz = np.log(np.exp(logits[i, j].astype(np.float64)).sum())
            nll += logz - logits[i, j, targets[i, j]]
            z += logz ** 2
            n += 1
    np.testing.assert_allclose(float(metrics["cross_entropy"]), nll / n, rtol=1e-5)
    np.testing.assert_allclose(float(loss), nll / n + 1e-3 * z / n, rtol=1e-5)
    entropy = logprobs.token_entropy(jnp.asarray(logits))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(entropy, -(p * np.log(p)).sum(-1), rtol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_and_entropy_in_one_pass_match_numpy(temperature):
    """The trainers' one-pass log-probs and entropy against float64
    numpy, with the gradient of Σ log p against the softmax formula onehot - p."""
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(3, 4, 50)) * 4).astype(np.float32)
    targets = rng.integers(0, 50, (3, 4))
    logp, entropy = logprobs.token_logprobs_and_entropy(jnp.asarray(logits), jnp.asarray(targets),
                                                        temperature)
    scaled = logits.astype(np.float64) / temperature
    ref_logp = scaled - np.log(np.exp(scaled).sum(-1, keepdims=True))
    p = np.exp(ref_logp)
    np.testing.assert_allclose(logp, np.take_along_axis(ref_logp, targets[..., None], -1)[..., 0],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(entropy, -(p * ref_logp).sum(-1), rtol=1e-5, atol=1e-5)
    grad = jax.grad(lambda x: logprobs.token_logprobs_and_entropy(
        x, jnp.asarray(targets), temperature)[0].sum())(jnp.asarray(logits))
    onehot = np.eye(50)[targets]
    np.testing.assert_allclose(grad, (onehot - p) / temperature, rtol=1e-4, atol=1e-5)


def test_shape_annotations_are_checked_in_the_tests():
    """conftest's jaxtyping hook: a [B, T] loss input of the wrong length is refused by name."""
    from jaxtyping import TypeCheckError
    ok = jnp.zeros((2, 3))
    with pytest.raises(TypeCheckError):
        grpo.grpo_loss(ok, jnp.zeros((2, 4)), None, jnp.zeros((2,)), ok, eps_low=0.2,
                       eps_high=0.2, beta=0.0)
