"""Token dispatch: how routed tokens reach their experts and come back (`MoEConfig.dispatch`).

Every dispatch takes the routed tokens x [N, E], their choices experts int32[N, K] and weights
[N, K], and the experts' SwiGLU weights gate, up [X, E, F], down [X, F, E]; it returns
sum_k weights_k * expert_k(x) [N, E] and which assignments it computed.

  * "dropless": the N*K (token, expert) pairs are sorted by expert and run through grouped
    matmuls (`jax.lax.ragged_dot`): no token is ever dropped, no padding is computed. With
    experts split over the mesh's `expert` axis, GSPMD partitions the expert matmuls by expert
    (checked in the compiled HLO of an 8-device mesh: no expert weight is gathered) and moves
    tokens by an all-gather of the routing decisions and an all-reduce of the [N*K, E] outputs.
  * "capacity": each expert gets a buffer of C = ceil(capacity_factor * N * K / X) slots,
    [X, C, E], filled first choices first (then seconds, ...), the rest dropped: static shapes,
    an expert-major buffer constrained onto the `expert` axis (GSPMD moves the tokens).
  * "all_to_all": real expert parallelism. In a `shard_map` over the mesh, each device fills
    capacity buffers [X, C, E] from its own tokens (C from its own token count), sends each
    expert shard its [X / S, C, E] part with `jax.lax.all_to_all` over the `expert` axis (S
    devices), runs only the experts it holds on the S * C rows it received, and sends the
    results back the same way. Capacity therefore applies per sending device: with drops, S
    devices drop differently from one; without drops all dispatches agree. Without an `expert`
    axis of size > 1 (one device, or a mesh that does not split the experts or the tokens), it
    is "capacity" on the whole batch.
"""
from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from r1jax.models.config import MoEConfig

EXPERT_AXIS = "expert"


def _swiglu_grouped(x: jax.Array, gate, up, down, group_sizes) -> jax.Array:
    """Expert MLPs over rows x [M, E] sorted by expert; group_sizes int32[X] rows per expert."""
    hidden = (jax.nn.silu(jax.lax.ragged_dot(x, gate, group_sizes))
              * jax.lax.ragged_dot(x, up, group_sizes))
    return jax.lax.ragged_dot(hidden, down, group_sizes)


def _swiglu_buffers(buffer: jax.Array, gate, up, down) -> jax.Array:
    """Expert MLPs over per-expert buffers [X, C, E] -> [X, C, E]."""
    hidden = (jax.nn.silu(jnp.einsum("xce,xef->xcf", buffer, gate))
              * jnp.einsum("xce,xef->xcf", buffer, up))
    return jnp.einsum("xcf,xfe->xce", hidden, down)


def dropless_dispatch(x, experts, weights, gate, up, down):
    """Every (token, expert) pair computed. Returns ([N, E], bool[N, K] all True)."""
    n, k = experts.shape
    flat = experts.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    token = order // k
    group_sizes = jnp.bincount(flat, length=gate.shape[0]).astype(jnp.int32)
    out = _swiglu_grouped(x[token], gate, up, down, group_sizes)
    out = out * weights.reshape(-1)[order][:, None].astype(out.dtype)
    return jnp.zeros_like(x).at[token].add(out), jnp.ones(experts.shape, bool)


def expert_capacity(tokens: int, moe: MoEConfig) -> int:
    """Slots per expert: capacity_factor times an even share of the tokens' assignments."""
    return max(1, math.ceil(moe.capacity_factor * tokens * moe.experts_per_token / moe.num_experts))


def capacity_slots(experts: jax.Array, valid: jax.Array, num_experts: int, capacity: int):
    """Where each assignment goes in [X * C] buffer rows, in rank-major order (all first
    choices, then all second choices, ...: that order sets the priority, earlier tokens first).

    experts: int32[N, K]; valid: bool[N], False for padding (never given a slot).
    Returns (slot int32[N * K], X * C where dropped; keep bool[N * K]; token int32[N * K]).
    """
    n, k = experts.shape
    flat = experts.T.reshape(-1)
    flat_valid = jnp.tile(valid, k)
    key = jnp.where(flat_valid, flat, num_experts)  # Padding sorts last, into no expert.
    order = jnp.argsort(key, stable=True)
    counts = jnp.bincount(key, length=num_experts + 1)
    starts = jnp.cumsum(counts) - counts
    position = jnp.zeros_like(key).at[order].set(jnp.arange(n * k) - starts[key[order]])
    keep = flat_valid & (position < capacity)
    slot = jnp.where(keep, flat * capacity + position, num_experts * capacity)
    return slot, keep, jnp.tile(jnp.arange(n), k)


def capacity_dispatch(x, experts, weights, gate, up, down, valid, capacity: int,
                      axis_name: Optional[str] = None):
    """Tokens through per-expert buffers of `capacity` slots (see `capacity_slots`).

    axis_name: None: gate/up/down hold all X experts. Otherwise this runs inside a shard_map
    and they hold this device's X / S experts of the S devices along `axis_name`; the buffers
    travel to the devices holding their experts and back by all-to-all.
    Returns ([N, E], bool[N, K] which assignments were computed).
    """
    n, k = experts.shape
    shards = 1 if axis_name is None else jax.lax.axis_size(axis_name)
    local_experts, e = gate.shape[0], x.shape[-1]
    num_experts = local_experts * shards
    slot, keep, token = capacity_slots(experts, valid, num_experts, capacity)
    buffer = jnp.zeros((num_experts * capacity, e), x.dtype).at[slot].set(x[token], mode="drop")
    if axis_name is None:
        buffer = nn.with_logical_constraint(buffer.reshape(num_experts, capacity, e),
                                            ("experts", "expert_capacity", "embed"))
        out = nn.with_logical_constraint(_swiglu_buffers(buffer, gate, up, down),
                                         ("experts", "expert_capacity", "embed"))
    else:
        # [S, X/S, C, E]: part s goes to device s; what arrives is [sender, X/S, C, E].
        parts = buffer.reshape(shards, local_experts, capacity, e)
        received = jax.lax.all_to_all(parts, axis_name, 0, 0)
        rows = received.transpose(1, 0, 2, 3).reshape(local_experts, shards * capacity, e)
        out = _swiglu_buffers(rows, gate, up, down)
        out = out.reshape(local_experts, shards, capacity, e).transpose(1, 0, 2, 3)
        out = jax.lax.all_to_all(out, axis_name, 0, 0)  # Back to the senders: [S, X/S, C, E].
    gathered = out.reshape(num_experts * capacity, e).at[slot].get(mode="fill", fill_value=0)
    scale = (weights.T.reshape(-1) * keep).astype(x.dtype)
    routed = jnp.zeros_like(x).at[token].add(gathered * scale[:, None])
    return routed, keep.reshape(k, n).T


def _token_axes(mesh) -> tuple[str, ...]:
    """Mesh axes the tokens are split over in the exchange: those the logical `batch` axis maps
    to under the current rules, plus `expert` (which must split them for tokens to travel)."""
    spec = nn.logical_to_mesh_axes(("batch",))[0]
    axes = () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)
    axes = tuple(a for a in axes if a in mesh.axis_names and a != EXPERT_AXIS)
    return tuple(a for a in axes if mesh.shape[a] > 1) + (EXPERT_AXIS,)


def all_to_all_dispatch(x, experts, weights, gate, up, down, valid, moe: MoEConfig):
    """The "all_to_all" dispatch over the ambient mesh (set by `sharding.sharded_jit` /
    `activation_rules`). Returns ([N, E], bool[N, K] which assignments were computed)."""
    n = x.shape[0]
    mesh = jax.sharding.get_abstract_mesh()
    shards = 1 if mesh.empty or EXPERT_AXIS not in mesh.axis_names else mesh.shape[EXPERT_AXIS]
    token_axes = _token_axes(mesh) if shards > 1 else ()
    token_shards = math.prod(mesh.shape[a] for a in token_axes)
    if shards == 1 or moe.num_experts % shards or n % token_shards:
        # Nothing to exchange, or shapes the mesh cannot split: one buffer for the whole batch.
        return capacity_dispatch(x, experts, weights, gate, up, down, valid,
                                 expert_capacity(n, moe))
    rows, experts_spec = PartitionSpec(token_axes), PartitionSpec(EXPERT_AXIS)
    local = jax.shard_map(
        lambda *args: capacity_dispatch(*args, capacity=expert_capacity(n // token_shards, moe),
                                        axis_name=EXPERT_AXIS),
        mesh=mesh, in_specs=(rows, rows, rows, experts_spec, experts_spec, experts_spec, rows),
        out_specs=(rows, rows))
    return local(x, experts, weights, gate, up, down, valid)
