"""Mixture-of-experts MLP: DeepSeekMoE (DeepSeek-V3) and Qwen3-MoE on one layer.

    scores  = sigmoid(x W_r) or softmax(x W_r)                  [N, X] float32
    choice  = scores + score_bias (selection only; aux-loss-free balancing)
              restricted to the topk_groups best groups when num_groups > 1
    experts = top-k(choice); weights = scores[experts], renormalised if norm_topk_prob,
              times routed_scaling_factor
    out     = sum_k weights_k * expert_k(x) + shared_experts(x)

Tokens reach their experts by one of the dispatches of `dispatch.py` (`MoEConfig.dispatch`):
"dropless" (sorted tokens, grouped matmuls), "capacity" (per-expert buffers, GSPMD moves the
tokens) or "all_to_all" (the same buffers exchanged between the devices of the mesh's `expert`
axis inside a shard_map: expert parallelism with real token exchange).

Router statistics come back with every call (`RouterStats`): the per-expert load, the balance
metric and the fraction of assignments dropped; padding tokens are left out of all three (and
never take a capacity slot from a real token).
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from r1jax.models import dispatch
from r1jax.models.config import ModelConfig, MoEConfig
from r1jax.models.layers import MLP, annotated_param


@flax.struct.dataclass
class RouterStats:
    """What the router did with one batch, per MoE layer (stacked [L_moe, ...] over layers).

    Attributes:
      load: float32[X] fraction of the real tokens' expert assignments each expert received
        (sums to 1; 1/X everywhere is perfect balance).
      max_violation: float32[] max(load) / mean(load) - 1 (the aux-loss-free paper's MaxVio).
      dropped: float32[] fraction of assignments dropped for lack of capacity (0 when dropless).
    """

    load: jax.Array
    max_violation: jax.Array
    dropped: jax.Array


def route(logits: jax.Array, bias: Optional[jax.Array], moe: MoEConfig):
    """Top-k routing of float32[N, X] router logits.

    bias: float32[X] added to the scores to choose experts (None: no bias).
    Returns (weights float32[N, K], experts int32[N, K]).
    """
    scores = jax.nn.sigmoid(logits) if moe.scoring == "sigmoid" else jax.nn.softmax(logits, -1)
    choice = scores if bias is None else scores + bias
    if moe.num_groups > 1:
        n, x = choice.shape
        grouped = choice.reshape(n, moe.num_groups, x // moe.num_groups)
        group_scores = jax.lax.top_k(grouped, 2)[0].sum(-1)                 # [N, G]
        _, groups = jax.lax.top_k(group_scores, moe.topk_groups)
        kept = jax.nn.one_hot(groups, moe.num_groups, dtype=bool).any(-2)  # [N, G]
        choice = jnp.where(kept[:, :, None], grouped, -jnp.inf).reshape(n, x)
    _, experts = jax.lax.top_k(choice, moe.experts_per_token)
    weights = jnp.take_along_axis(scores, experts, axis=-1)
    if moe.norm_topk_prob:
        weights = weights / (weights.sum(-1, keepdims=True) + 1e-20)
    return weights * moe.routed_scaling_factor, experts


def router_stats(experts: jax.Array, valid: jax.Array, num_experts: int,
                 kept: jax.Array) -> RouterStats:
    """RouterStats of int32[N, K] choices over the bool[N] valid tokens; kept: bool[N, K] the
    assignments the dispatch computed (the others were dropped)."""
    counts = jnp.zeros((num_experts,), jnp.float32).at[experts].add(
        jnp.broadcast_to(valid[:, None], experts.shape).astype(jnp.float32))
    load = counts / jnp.maximum(counts.sum(), 1.0)
    real = jnp.broadcast_to(valid[:, None], experts.shape)
    dropped = (real & ~kept).sum() / jnp.maximum(real.sum(), 1)
    return RouterStats(load=load, max_violation=load.max() * num_experts - 1.0,
                       dropped=dropped.astype(jnp.float32))


def update_score_bias(bias: jax.Array, load: jax.Array, rate: float) -> jax.Array:
    """The aux-loss-free balancing step: bias += rate * sign(mean load - load).

    bias, load: float32[..., X] (e.g. [L_moe, X], a layer's score_bias and its RouterStats.load).
    Overloaded experts become less attractive to choose, underloaded ones more; the gradient
    never touches the bias (it only enters the choice of experts).
    """
    return bias + rate * jnp.sign(load.mean(-1, keepdims=True) - load)


class MoE(nn.Module):
    """Routed SwiGLU experts plus shared experts: x [B, T, E] -> ([B, T, E], RouterStats)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, token_valid: jax.Array):
        """token_valid: bool[B, T], False on padding (left out of the stats and the capacity)."""
        cfg, moe = self.config, self.config.moe
        b, t, e = x.shape
        router = annotated_param(self, "router_kernel", (e, moe.num_experts),
                                 ("embed", "router_experts"), cfg.param_dtype)
        bias = None
        if moe.score_bias:
            # float32 whatever param_dtype says: DeepSeek's bias is ~1e-3 and decides selections.
            bias = jax.lax.stop_gradient(annotated_param(
                self, "score_bias", (moe.num_experts,), ("router_experts",), "float32",
                nn.initializers.zeros))
        shape, init = (moe.num_experts, e, moe.expert_mlp_dim), nn.initializers.normal(e ** -0.5)
        gate = annotated_param(self, "gate", shape, ("experts", "embed", "expert_mlp"),
                               cfg.param_dtype, init).astype(cfg.dtype)
        up = annotated_param(self, "up", shape, ("experts", "embed", "expert_mlp"),
                             cfg.param_dtype, init).astype(cfg.dtype)
        down = annotated_param(self, "down", (moe.num_experts, moe.expert_mlp_dim, e),
                               ("experts", "expert_mlp", "embed"), cfg.param_dtype,
                               nn.initializers.normal(stddev=moe.expert_mlp_dim ** -0.5)
                               ).astype(cfg.dtype)

        tokens = x.reshape(b * t, e).astype(cfg.dtype)
        valid = token_valid.reshape(b * t)
        logits = jnp.dot(tokens.astype(jnp.float32), router.astype(jnp.float32))
        weights, experts = route(logits, bias, moe)
        if moe.dispatch == "dropless":
            routed, kept = dispatch.dropless_dispatch(tokens, experts, weights, gate, up, down)
        elif moe.dispatch == "capacity":
            routed, kept = dispatch.capacity_dispatch(tokens, experts, weights, gate, up, down,
                                                      valid, dispatch.expert_capacity(b * t, moe))
        else:
            routed, kept = dispatch.all_to_all_dispatch(tokens, experts, weights, gate, up, down,
                                                        valid, moe)
        out = routed.reshape(b, t, e)
        if moe.num_shared_experts:
            out = out + MLP(e, moe.num_shared_experts * moe.expert_mlp_dim, cfg.dtype,
                            cfg.param_dtype, name="shared_experts")(x)
        return out, router_stats(experts, valid, moe.num_experts, kept)


# ----------------------------------------------------------------------------- training hooks


def _is_score_bias(path) -> bool:
    return getattr(path[-1], "key", None) == "score_bias"


def optimizer_labels(params):
    """A tree like params: "frozen" on the balancing biases, "trainable" elsewhere.

    The biases get no gradient (only the choice of experts sees them) and must not be moved by
    the optimizer (AdamW's weight decay would pull them to 0):
    `optax.multi_transform({"trainable": adamw, "frozen": optax.set_to_zero()},
    optimizer_labels(params))`.
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if _is_score_bias(path) else "trainable", params)


def update_params_score_bias(params, stats: Optional[RouterStats], rate: float):
    """`update_score_bias` applied to the MoE stack's biases (params["layers"]["mlp"]) from the
    [L_moe, X] loads of `forward_with_router_stats`; params unchanged when there is none."""
    if stats is None or "score_bias" not in params.get("layers", {}).get("mlp", {}):
        return params
    mlp = params["layers"]["mlp"]
    mlp = {**mlp, "score_bias": update_score_bias(mlp["score_bias"], stats.load, rate)}
    return {**params, "layers": {**params["layers"], "mlp": mlp}}


def router_metrics(stats: Optional[RouterStats]) -> dict:
    """Scalars for metrics.jsonl / TensorBoard from one batch's RouterStats ({} without MoE):
    the balance metric (mean and worst layer), the dropped fraction, and the least and most
    loaded expert's load relative to a perfectly even 1/X."""
    if stats is None:
        return {}
    relative = stats.load * stats.load.shape[-1]
    return {"router/max_violation": stats.max_violation.mean(),
            "router/max_violation_worst_layer": stats.max_violation.max(),
            "router/dropped": stats.dropped.mean(),
            "router/load_min": relative.min(), "router/load_max": relative.max()}
