"""MoE models in the trainers: router metrics reach the update's metrics, the routing biases are
left to the balancing step (not AdamW), which moves them by ±rate towards even loads."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import r1_zero
from r1jax import models
from r1jax.train import grpo, run
from tests.test_grpo_train import _rollout_batch

CONFIG = models.preset("tiny_deepseek_v3")


def _update(rate: float):
    params = models.init_params(CONFIG, jax.random.key(0))
    opt = r1_zero.get_config("tiny").optimizer
    optimizer = run.make_optimizer(opt, run.learning_rate_schedule(opt, 10), CONFIG)
    state = run.TrainState(params=params, opt_state=optimizer.init(params), reference=None,
                           updates=jnp.zeros((), jnp.int32))
    batch = jax.tree.map(jnp.asarray, _rollout_batch(np.random.default_rng(0), n=8).arrays())
    rl = ml_collections.ConfigDict(dict(
        num_micro_batches=2, aggregation="sequence_mean", beta=0.0, eps_low=0.2, eps_high=0.2,
        sampling=dict(temperature=1.0),
        importance_level="token", is_correction="none", is_bound=2.0))
    new_state, metrics = grpo.grpo_update(state, batch, model_config=CONFIG, optimizer=optimizer,
                                          rl=rl, nan_policy="stop", router_bias_rate=rate)
    return state, new_state, metrics


@pytest.mark.parametrize("rate", [0.0, 0.01])
def test_routing_biases_move_only_by_the_balancing_step(rate):
    state, new_state, metrics = _update(rate)
    assert {"router/max_violation", "router/load_max", "router/dropped"} <= set(metrics)
    assert "router/load" not in metrics  # consumed by the balancing step
    assert float(metrics["router/load_max"]) >= 1.0 >= float(metrics["router/load_min"])
    old = state.params["layers"]["mlp"]["score_bias"]
    new = new_state.params["layers"]["mlp"]["score_bias"]
    step = np.abs(np.asarray(new) - np.asarray(old))
    if rate == 0:
        np.testing.assert_array_equal(new, old)  # AdamW (weight decay included) never touches it
    else:
        assert np.isin(np.round(step / rate, 5), [0.0, 1.0]).all() and step.max() > 0
    # Everything else did learn.
    assert not np.allclose(new_state.params["embedding"], state.params["embedding"])
