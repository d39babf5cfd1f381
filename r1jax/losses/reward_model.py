"""Bradley–Terry loss of a reward model on preference pairs.

With r_c, r_r the rewards of the chosen and rejected responses of a pair, m its margin and c the
centering coefficient,

    loss = mean over pairs of  −log σ(r_c − r_r − m)  +  c · (r_c + r_r)²

The margin asks the chosen response to win by at least m (Llama 2's margin loss); the centering
term pins the rewards' free offset near zero, so rewards of one model are comparable across
runs and can be weighted against rule rewards without a normalisation pass.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Scalar


def bradley_terry_loss(chosen: Float[Array, "P"], rejected: Float[Array, "P"], *,
                       margin: Float[Array, "P"] | float = 0.0,
                       center_coef: float = 0.0) -> tuple[Float[Scalar, ""], dict]:
    """(loss, metrics) of P pairs' rewards; see the module docstring.

    Metrics: pair_accuracy (share of pairs with r_c > r_r), margin (mean r_c − r_r),
    chosen_reward and rejected_reward (means), all float32 scalars.
    """
    diff = chosen - rejected
    nll = -jax.nn.log_sigmoid(diff - margin)
    loss = jnp.mean(nll + center_coef * jnp.square(chosen + rejected))
    return loss, {"pair_accuracy": jnp.mean((diff > 0).astype(jnp.float32)),
                  "margin": jnp.mean(diff), "chosen_reward": jnp.mean(chosen),
                  "rejected_reward": jnp.mean(rejected)}
