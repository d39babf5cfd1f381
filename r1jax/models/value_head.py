"""PPO's value head: a scalar per token read from the policy's final (normed) hidden state.

    TrainState.params = {"policy": the policy's params tree, "value": {"head": {"kernel": [E, 1]}}}

The head shares the policy's backbone ("shared" in rl.value.head), so one forward pass gives
both the logits and the values. It starts at zero: the first values are 0 and, while the kernel
is 0, the value loss sends no gradient into the backbone (d V / d hidden = kernel), so the
policy is not disturbed before the head has learned something. The kernel's layout and
sharding are the reward model's head's (models.reward_model.HEAD_AXES).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from r1jax import sharding
from r1jax.models import reward_model as rm
from r1jax.models.config import ModelConfig

POLICY, VALUE = "policy", "value"


def abstract_params(config: ModelConfig) -> dict:
    """jax.ShapeDtypeStruct tree of the value params: {"head": {"kernel": [E, 1]}}."""
    return {"head": rm.head_shapes(config)}


def init_params(config: ModelConfig, mesh, rules) -> dict:
    """{"head": {"kernel": zeros [E, 1]}} on the head's shards."""
    shapes = rm.head_shapes(config)
    shardings = sharding.logical_to_shardings(rm.HEAD_AXES, mesh, rules, shapes)
    return {"head": jax.tree.map(lambda s, sh: jax.device_put(jnp.zeros(s.shape, s.dtype), sh),
                                 shapes, shardings)}


def with_value(policy: dict, value: dict) -> dict:
    """The PPO params tree of a policy's params and its value params."""
    return {POLICY: policy, VALUE: value}


def values(value_params: dict, hidden: Float[Array, "B T E"]) -> Float[Array, "B T"]:
    """float32[B, T] values of final hidden states [B, T, E] (compute dtype)."""
    kernel = value_params["head"]["kernel"].astype(jnp.float32)
    return jnp.dot(hidden.astype(jnp.float32), kernel)[..., 0]
