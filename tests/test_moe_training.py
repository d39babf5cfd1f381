"""MoE models in the trainers: router metrics reach the update's metrics, the routing biases are
left to the balancing step (not AdamW), which moves them by ±rate towards even loads; the config
picks the dispatch and the expert mesh axis, and a GRPO run on an expert mesh logs the router."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import r1_zero
from r1jax import models
from r1jax.models import policy
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
    rl = ml_collections.ConfigDict(dict(algorithm="grpo",
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


def test_model_section_overrides_the_dispatch_and_refuses_what_cannot_apply():
    config = policy.with_moe_overrides(CONFIG, "all_to_all", 2.0)
    assert (config.moe.dispatch, config.moe.capacity_factor) == ("all_to_all", 2.0)
    assert policy.with_moe_overrides(CONFIG, "", 0.0) is CONFIG
    with pytest.raises(ValueError, match=r"config.model.moe_dispatch='sinkhorn' is not allowed"):
        policy.with_moe_overrides(CONFIG, "sinkhorn", 0.0)
    with pytest.raises(ValueError, match=r"moe_dispatch='capacity'.*llama model has no MoE"):
        policy.with_moe_overrides(models.preset("tiny_llama"), "capacity", 0.0)


def test_tiny_moe_grpo_step_on_an_expert_mesh_logs_router_metrics(tmp_path):
    """r1_zero:tiny_moe with its experts split over 8 devices and tokens exchanged all-to-all:
    the run trains and metrics.jsonl carries the router's loads, balance and drops."""
    config = r1_zero.get_config("tiny_moe")
    config.data.data_dir = str(tmp_path / "data")
    config.mesh.shape.update(fsdp=1, expert=8)
    config.model.moe_dispatch = "all_to_all"
    config.train.update(num_steps=1, eval_every=0, checkpoint_every=0)
    config.eval.max_problems = 0
    grpo.train(config, str(tmp_path / "w"))
    with open(tmp_path / "w" / "metrics.jsonl") as f:
        row = [json.loads(line) for line in f][-1]
    assert row["step"] == 1 and 0 <= row["reward_mean"] <= 1
    assert row["router/load_min"] <= 1.0 <= row["router/load_max"]
    assert row["router/max_violation"] >= 0 and 0 <= row["router/dropped"] < 0.5
