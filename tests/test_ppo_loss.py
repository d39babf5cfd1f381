"""PPO pieces against numpy loop transcriptions and hand-computed values."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.losses import grpo, ppo


def _gae_loop(rewards, values, mask, gamma, lam):
    """Textbook GAE, one row at a time, right to left over the counted tokens."""
    adv = np.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        idx = [t for t in range(rewards.shape[1]) if mask[b, t] > 0]
        last_adv, next_v = 0.0, 0.0
        for t in reversed(idx):
            delta = rewards[b, t] + gamma * next_v - values[b, t]
            last_adv = delta + gamma * lam * last_adv
            adv[b, t] = last_adv
            next_v = values[b, t]
    return adv, (adv + values) * mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (1.0, 0.95), (0.9, 0.8)])
def test_gae_matches_loop(gamma, lam):
    rng = np.random.default_rng(0)
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    values = rng.normal(size=mask.shape).astype(np.float32)
    rewards = np.asarray(ppo.token_rewards(jnp.array([1.0, -0.5, 2.0]), jnp.array(mask),
                                           jnp.array(rng.random(mask.shape), jnp.float32), 0.1))
    adv, ret = ppo.gae(jnp.array(rewards), jnp.array(values), jnp.array(mask), gamma=gamma, lam=lam)
    ref_adv, ref_ret = _gae_loop(rewards, values * mask, mask, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, atol=1e-5)
    np.testing.assert_allclose(ret, ref_ret, atol=1e-5)


def test_lambda_one_gamma_one_is_reward_to_go_minus_value():
    mask = jnp.ones((1, 3))
    values = jnp.array([[0.5, 0.2, -0.1]])
    rewards = ppo.token_rewards(jnp.array([1.0]), mask, None, 0.0)
    adv, ret = ppo.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    np.testing.assert_allclose(adv, [[0.5, 0.8, 1.1]], atol=1e-6)
    np.testing.assert_allclose(ret, [[1.0, 1.0, 1.0]], atol=1e-6)


def test_token_rewards_hand():
    mask = jnp.array([[1.0, 1.0, 0.0]])
    kl = jnp.array([[0.2, 0.4, 9.0]])
    np.testing.assert_allclose(ppo.token_rewards(jnp.array([3.0]), mask, kl, 0.5),
                               [[-0.1, 2.8, 0.0]], atol=1e-6)


def test_whiten_hand():
    mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    x = jnp.array([[1.0, 2.0, 100.0], [3.0, 4.0, 100.0]])
    # mean 2.5, population var 1.25
    np.testing.assert_allclose(ppo.whiten(x, mask, eps=0.0),
                               [[-1.5 / 1.25**0.5, -0.5 / 1.25**0.5, 0],
                                [0.5 / 1.25**0.5, 1.5 / 1.25**0.5, 0]], atol=1e-6)


def test_value_loss_hand():
    mask = jnp.array([[1.0, 1.0]])
    old = jnp.array([[0.0, 0.0]])
    new = jnp.array([[0.5, -0.1]])
    ret = jnp.array([[1.0, 1.0]])
    loss, m = ppo.value_loss(new, old, ret, mask, clip=0.2)
    # token 0: unclipped (0.5-1)^2=0.25, clipped (0.2-1)^2=0.64 -> 0.64; token 1: 1.21 both
    np.testing.assert_allclose(loss, 0.5 * (0.64 + 1.21) / 2, atol=1e-6)
    np.testing.assert_allclose(m["value_clipfrac"], 0.5, atol=1e-6)


def policy_loss(logprobs, old, adv, mask, *, eps_low, eps_high):
    """GRPO's loss with per-token advantages: PPO's policy term."""
    return grpo.grpo_loss(logprobs, old, None, adv, mask, eps_low=eps_low, eps_high=eps_high,
                          beta=0.0, aggregation="token_mean")[0]


def test_policy_loss_hand_and_finite_differences():
    mask = jnp.array([[1.0, 1.0, 0.0]])
    old = jnp.log(jnp.array([[0.5, 0.5, 0.5]]))
    adv = jnp.array([[1.0, -2.0, 5.0]])
    lp = jnp.log(jnp.array([[0.6, 0.45, 0.1]]))
    loss = policy_loss(lp, old, adv, mask, eps_low=0.1, eps_high=0.1)
    # token 0: ρ=1.2 -> min(1.2, 1.1)=1.1; token 1: ρ=0.9, -2 -> min(-1.8, -1.8)
    np.testing.assert_allclose(loss, -(1.1 - 1.8) / 2, atol=1e-6)

    lp = jnp.log(jnp.array([[0.52, 0.49, 0.1]]))  # inside the clip range: smooth
    grad = jax.grad(lambda x: policy_loss(x, old, adv, mask, eps_low=0.2, eps_high=0.2))(lp)
    h = 1e-3
    for t in range(3):
        e = jnp.zeros_like(lp).at[0, t].set(h)
        fd = (policy_loss(lp + e, old, adv, mask, eps_low=0.2, eps_high=0.2)
              - policy_loss(lp - e, old, adv, mask, eps_low=0.2, eps_high=0.2)) / (2 * h)
        np.testing.assert_allclose(grad[0, t], fd, atol=1e-3)
    vgrad = jax.grad(lambda v: ppo.value_loss(v, old * 0, adv, mask, clip=10.0)[0])(lp)
    np.testing.assert_allclose(vgrad, (lp - adv) * mask / 2, atol=1e-5)
