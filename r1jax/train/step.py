"""The update every train step shares: gradients accumulated over micro-batches, one AdamW step,
and the NaN guard's 'skip' policy, all inside one jitted function."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from r1jax.models import lora, moe


def reduce_metric(name: str, values: jax.Array, weights: jax.Array) -> jax.Array:
    """One metric over micro-batches (values, weights: float32[M]): extremes (`*_max`, `*_min`)
    as max / min, everything else as the weighted mean."""
    if name.endswith("_max"):
        return values.max()
    if name.endswith("_min"):
        return values.min()
    weights = weights.reshape(-1, *[1] * (values.ndim - 1))  # per-layer loads are [M, L, X]
    return (values * weights).sum(axis=0) / weights.sum()


def apply_gradients(loss_fn: Callable, state, batch, weights: jax.Array, *,
                    optimizer: optax.GradientTransformation, num_micro_batches: int,
                    nan_policy: str):
    """One optimizer step on the weighted sum of micro-batch losses.

    Args:
      loss_fn: (params, micro_batch) -> (scalar loss, metrics dict).
      state: a train.run.TrainState (params, opt_state and the update count change). Only
        `lora.trainable(state.params)` is differentiated and updated (the adapters, with LoRA).
      batch: a pytree of arrays [N, ...], split into num_micro_batches consecutive micro-batches.
      weights: float32[num_micro_batches]; the full batch's loss is Σ_m weights[m] · loss_m.
      nan_policy: "skip" keeps the old params and optimizer state when the loss is not finite.
    Returns:
      (state, metrics) with metrics averaged over micro-batches, plus loss and grad_norm.
    """
    (params, frozen), opt_state = lora.split(state.params), state.opt_state
    micro = jax.tree.map(lambda x: x.reshape(num_micro_batches, -1, *x.shape[1:]), batch)

    def accumulate(grads, xs):
        mb, weight = xs

        def weighted_loss(p):
            loss, metrics = loss_fn(lora.combine(frozen, p), mb)
            return loss * weight, (loss, metrics)

        (_, (loss, metrics)), g = jax.value_and_grad(weighted_loss, has_aux=True)(params)
        return jax.tree.map(jnp.add, grads, g), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, (losses, metrics) = jax.lax.scan(accumulate, zeros, (micro, weights))
    metrics = {k: reduce_metric(k, v, weights) for k, v in metrics.items()}
    loss = (losses * weights).sum()
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    if nan_policy == "skip":
        keep = jnp.isfinite(loss)
        new_params, new_opt_state = jax.tree.map(lambda new, old: jnp.where(keep, new, old),
                                                 (new_params, new_opt_state), (params, opt_state))
    metrics.update(loss=loss, grad_norm=optax.global_norm(grads))
    return state.replace(params=lora.combine(frozen, new_params), opt_state=new_opt_state,
                         updates=state.updates + 1), metrics


def router_outputs(stats) -> dict:
    """A loss function's MoE metrics: `moe.router_metrics` scalars and the expert loads
    `balance_experts` reads ({} for a dense model)."""
    if stats is None:
        return {}
    return {**moe.router_metrics(stats), "router/load": stats.load}


def balance_experts(state, metrics: dict, rate: float):
    """DeepSeek-V3's aux-loss-free balancing after an update: each MoE layer's routing bias moves
    by `rate` towards even loads (`moe.update_score_bias`), from the update's mean expert loads
    (metrics["router/load"], float32[L_moe, X], removed from the returned metrics). Dense models
    and rate 0 leave the state as it is."""
    metrics = dict(metrics)
    load = metrics.pop("router/load", None)
    mlp = state.params.get("layers", {}).get("mlp", {})
    if load is None or rate == 0 or "score_bias" not in mlp:  # Qwen3-MoE routes without one
        return state, metrics
    mlp = {**mlp, "score_bias": moe.update_score_bias(mlp["score_bias"], load, rate)}
    params = {**state.params, "layers": {**state.params["layers"], "mlp": mlp}}
    return state.replace(params=params), metrics
