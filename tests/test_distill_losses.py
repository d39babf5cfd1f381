"""Distillation losses against hand-computed values, finite differences, and their own variants."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.losses import distill
from r1jax.models.transformer import head_logits


def test_forward_kl_hand_value():
    t = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
    s = jnp.log(jnp.array([[0.25, 0.5, 0.25]]))
    want = 0.5 * math.log(2) + 0.25 * math.log(0.5)
    np.testing.assert_allclose(distill.forward_kl(t, s), [want], rtol=1e-6)


def test_top_k_hand_value_and_k_equals_v():
    t = jnp.log(jnp.array([[0.5, 0.3, 0.2]]))
    s = jnp.log(jnp.array([[0.2, 0.2, 0.6]]))
    # top-2 of the teacher: tokens 0, 1 renormalised to 5/8, 3/8
    want = 5 / 8 * math.log(5 / 8 / 0.2) + 3 / 8 * math.log(3 / 8 / 0.2)
    np.testing.assert_allclose(distill.forward_kl(t, s, top_k=2), [want], rtol=1e-6)
    np.testing.assert_allclose(distill.forward_kl(t, s, top_k=3), distill.forward_kl(t, s), rtol=1e-6)


def test_chunked_equals_unchunked_with_different_widths():
    k = jax.random.split(jax.random.key(0), 4)
    th, tw = jax.random.normal(k[0], (2, 7, 6)), jax.random.normal(k[1], (6, 11))
    sh, sw = jax.random.normal(k[2], (2, 7, 4)), jax.random.normal(k[3], (4, 11))
    full = distill.forward_kl(head_logits(th, tw), head_logits(sh, sw), top_k=5)
    np.testing.assert_allclose(distill.chunked_forward_kl(th, tw, sh, sw, top_k=5, chunk=3), full,
                               rtol=1e-5)


def test_forward_kl_gradient_matches_finite_differences():
    t = jax.random.normal(jax.random.key(1), (5,))
    s = jax.random.normal(jax.random.key(2), (5,)).astype(jnp.float64) if jax.config.x64_enabled \
        else jax.random.normal(jax.random.key(2), (5,))
    g = jax.grad(lambda s: distill.forward_kl(t, s))(s)
    # analytic: d KL / d s = softmax(s) - softmax(t)
    np.testing.assert_allclose(g, jax.nn.softmax(s) - jax.nn.softmax(t), atol=1e-6)
    eps = 1e-2
    for i in range(5):
        e = jnp.zeros(5).at[i].set(eps)
        fd = (distill.forward_kl(t, s + e) - distill.forward_kl(t, s - e)) / (2 * eps)
        np.testing.assert_allclose(g[i], fd, atol=1e-3)


def test_reverse_kl_loss_hand_value_and_gradient():
    s = jnp.array([[-1.0, -2.0, -0.5]])
    t = jnp.array([[-1.5, -1.0, -9.0]])
    mask = jnp.array([[1, 1, 0]])
    loss, kl = distill.reverse_kl_loss(s, t, mask)
    np.testing.assert_allclose(kl, (0.5 + -1.0) / 2, rtol=1e-6)
    np.testing.assert_allclose(loss, (0.5 * -1.0 + -1.0 * -2.0) / 2, rtol=1e-6)
    grad = jax.grad(lambda s: distill.reverse_kl_loss(s, t, mask)[0])(s)
    np.testing.assert_allclose(grad, [[0.25, -0.5, 0.0]], rtol=1e-6)
