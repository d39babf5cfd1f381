"""One process of tests/test_multihost.py: feeds its half of a global batch, prints its loss.

Run with R1JAX_COORDINATOR / R1JAX_NUM_PROCESSES / R1JAX_PROCESS_ID and XLA_FLAGS giving each
process 2 fake CPU devices; all processes together form one mesh {"fsdp": 2, "tensor": 2}.
"""
import functools
import json

import jax
import numpy as np
import optax

from r1jax import distributed, models
from r1jax import sharding as sh

GLOBAL_BATCH, LENGTH, PRESET = 8, 16, "tiny_llama"


def global_tokens(config) -> np.ndarray:
    """The whole batch int32[GLOBAL_BATCH, LENGTH]; every process can make it, each feeds a part."""
    return np.random.default_rng(0).integers(0, config.vocab_size, (GLOBAL_BATCH, LENGTH),
                                             dtype=np.int32)


def next_token_loss(config, params, tokens):
    """Mean next-token cross-entropy of int32[B, T] tokens."""
    logits = models.logits(config, params, tokens)
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).mean()


def main():
    distributed.maybe_initialize()  # Before any JAX computation (importing jax is fine).
    config = models.preset(PRESET)
    mesh = sh.make_mesh({"fsdp": 2, "tensor": 2})
    params = sh.init_params_sharded(config, jax.random.key(0), mesh)
    rows = GLOBAL_BATCH // jax.process_count()
    local = global_tokens(config)[jax.process_index() * rows:(jax.process_index() + 1) * rows]
    in_shardings = (sh.param_shardings(config, mesh), sh.batch_sharding(mesh))
    loss_fn = sh.sharded_jit(functools.partial(next_token_loss, config), mesh, sh.DEFAULT_RULES,
                             in_shardings=in_shardings, out_shardings=sh.replicated(mesh))
    tokens = sh.global_batch(local, mesh)
    # Host (numpy) weights, as a checkpoint loader yields them: each process places its shards.
    host_params = jax.device_get(jax.jit(functools.partial(models.init_params, config))(
        jax.random.key(0)))
    loaded = sh.shard_params(config, host_params, mesh)
    print(json.dumps({"process": jax.process_index(), "main": distributed.is_main_process(),
                      "devices": jax.device_count(), "local_devices": jax.local_device_count(),
                      "global_shape": list(tokens.shape), "loss": float(loss_fn(params, tokens)),
                      "loaded_loss": float(loss_fn(loaded, tokens))}),
          flush=True)


if __name__ == "__main__":
    main()
