"""PPO's value head: a scalar per token read from a backbone's final (normed) hidden state.

    TrainState.params = {"policy": the policy's params tree,
                         "value": {"head": {"kernel": [E, 1]}}}                  # "shared"
    TrainState.params = {"policy": ..., "value": {"backbone": a transformer params tree,
                                                  "head": {"kernel": [E, 1]}}}   # "separate"

With rl.value.head = "shared" the head reads the policy's backbone, so one forward pass gives
both the logits and the values. With "separate" it reads a value model of its own: a full copy
of the policy's (non-LoRA) transformer params made at initialisation, on the same shards, that
only the value loss trains and the policy loss never reaches (an MoE value model's routing
biases stay as copied: only the policy's are balanced). The head starts at zero: the first
values are 0 and, while the kernel is 0, the value loss sends no gradient into the backbone
(d V / d hidden = kernel), so the policy is not disturbed before the head has learned
something. The kernel's layout and sharding are the reward model's head's
(models.reward_model.HEAD_AXES).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from r1jax import sharding
from r1jax.models import reward_model as rm
from r1jax.models.config import ModelConfig

POLICY, VALUE, BACKBONE = "policy", "value", "backbone"


def abstract_params(config: ModelConfig) -> dict:
    """jax.ShapeDtypeStruct tree of the value head's params: {"head": {"kernel": [E, 1]}} (a
    separate value model's backbone is shaped like the policy's params)."""
    return {"head": rm.head_shapes(config)}


def init_params(config: ModelConfig, mesh, rules, backbone: Optional[dict] = None) -> dict:
    """{"head": {"kernel": zeros [E, 1]}} on the head's shards; with `backbone` (the policy's
    sharded params: a separate value model) also {"backbone": a copy of it on its shards}."""
    shapes = rm.head_shapes(config)
    shardings = sharding.logical_to_shardings(rm.HEAD_AXES, mesh, rules, shapes)
    head = {"head": jax.tree.map(lambda s, sh: jax.device_put(jnp.zeros(s.shape, s.dtype), sh),
                                 shapes, shardings)}
    if backbone is None:
        return head
    # A copy, not the same buffers: the update donates the state, and the two diverge anyway.
    copy = jax.jit(lambda p: jax.tree.map(jnp.copy, p),
                   out_shardings=jax.tree.map(lambda x: x.sharding, backbone))
    return {BACKBONE: copy(backbone), **head}


def is_separate(params: dict) -> bool:
    """Whether a PPO params tree holds a value model of its own ("separate")."""
    return BACKBONE in params[VALUE]


def backbone_params(params: dict) -> dict:
    """The transformer params whose final hidden states the value head reads: the value
    model's own ("separate") or the policy's ("shared")."""
    return params[VALUE][BACKBONE] if is_separate(params) else params[POLICY]


def with_value(policy: dict, value: dict) -> dict:
    """The PPO params tree of a policy's params and its value params."""
    return {POLICY: policy, VALUE: value}


def values(value_params: dict, hidden: Float[Array, "B T E"]) -> Float[Array, "B T"]:
    """float32[B, T] values of final hidden states [B, T, E] (compute dtype)."""
    kernel = value_params["head"]["kernel"].astype(jnp.float32)
    return jnp.dot(hidden.astype(jnp.float32), kernel)[..., 0]
