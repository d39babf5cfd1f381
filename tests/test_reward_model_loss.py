"""The Bradley–Terry loss against an independent float64 numpy transcription of its formula and
of its gradient (central finite differences)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.losses.reward_model import bradley_terry_loss


def numpy_loss(chosen, rejected, margin, center):
    """mean over pairs of log(1 + exp(−(r_c − r_r − m))) + c (r_c + r_r)², in float64."""
    z = chosen - rejected - margin
    return np.mean(np.log1p(np.exp(-z)) + center * (chosen + rejected) ** 2)


def finite_difference_grad(f, x, eps=1e-6):
    grad = np.zeros_like(x)
    for i in range(x.size):
        step = np.zeros_like(x)
        step.flat[i] = eps
        grad.flat[i] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad


@pytest.mark.parametrize("margin,center", [(0.0, 0.0), (0.5, 0.0), (0.3, 0.01)])
def test_loss_and_gradient_match_the_transcription(margin, center):
    rng = np.random.default_rng(0)
    chosen, rejected = rng.normal(size=6) * 2, rng.normal(size=6) * 2
    loss, _ = bradley_terry_loss(jnp.asarray(chosen, jnp.float32),
                                 jnp.asarray(rejected, jnp.float32), margin=margin,
                                 center_coef=center)
    np.testing.assert_allclose(float(loss), numpy_loss(chosen, rejected, margin, center),
                               rtol=1e-5)

    grad_c, grad_r = jax.grad(
        lambda c, r: bradley_terry_loss(c, r, margin=margin, center_coef=center)[0],
        argnums=(0, 1))(jnp.asarray(chosen, jnp.float32), jnp.asarray(rejected, jnp.float32))
    expected_c = finite_difference_grad(
        lambda c: numpy_loss(c, rejected, margin, center), chosen)
    expected_r = finite_difference_grad(
        lambda r: numpy_loss(chosen, r, margin, center), rejected)
    np.testing.assert_allclose(np.asarray(grad_c), expected_c, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(grad_r), expected_r, rtol=1e-4, atol=1e-7)


def test_metrics_count_the_pairs_the_model_orders_right():
    chosen = jnp.array([2.0, 0.0, 1.0, -1.0])
    rejected = jnp.array([1.0, 1.0, 0.5, -3.0])
    _, m = bradley_terry_loss(chosen, rejected)
    assert float(m["pair_accuracy"]) == 0.75
    np.testing.assert_allclose(float(m["margin"]), (1.0 - 1.0 + 0.5 + 2.0) / 4)
    np.testing.assert_allclose(float(m["chosen_reward"]), 0.5)
    np.testing.assert_allclose(float(m["rejected_reward"]), -0.125)


def test_loss_is_log2_when_the_rewards_tie():
    loss, _ = bradley_terry_loss(jnp.zeros(3), jnp.zeros(3))
    np.testing.assert_allclose(float(loss), np.log(2.0), rtol=1e-6)
