"""Sharding on 8 fake CPU devices: results equal the single-device ones, memory really splits."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from r1jax import models
from r1jax import sharding as sh

MESHES = {"8,1,1": {"data": 8}, "1,8,1": {"fsdp": 8}, "2,2,2": {"data": 2, "fsdp": 2, "tensor": 2},
          "1,2,4": {"fsdp": 2, "tensor": 4}}
TOL = dict(rtol=1e-5, atol=1e-5)


def next_token_loss(config, params, tokens):
    """Mean next-token cross-entropy of int32[B, T] tokens; also returns the logits [B, T, V]."""
    logits = models.logits(config, params, tokens)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:])
    return losses.mean(), logits


def loss_logits_and_grads(config, params, tokens):
    (loss, logits), grads = jax.value_and_grad(
        functools.partial(next_token_loss, config), has_aux=True)(params, tokens)
    return loss, logits, grads


def tokens_for(config, batch=8, length=16):
    return np.random.default_rng(0).integers(0, config.vocab_size, (batch, length), dtype=np.int32)


@functools.lru_cache(maxsize=None)
def single_device_reference(preset):
    """(params, tokens, (loss, logits, grads)) computed on one device."""
    config = models.preset(preset)
    params = jax.jit(functools.partial(models.init_params, config))(jax.random.key(0))
    tokens = tokens_for(config)
    out = jax.jit(functools.partial(loss_logits_and_grads, config))(params, tokens)
    return params, tokens, jax.device_get(out)


def assert_trees_close(actual, expected):
    jax.tree.map(lambda a, e: np.testing.assert_allclose(np.asarray(a), e, **TOL), actual, expected)


@pytest.mark.parametrize("preset", ["tiny_llama", "tiny_qwen3"])
@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_loss_logits_and_grads_match_single_device(preset, mesh_name):
    config = models.preset(preset)
    params, tokens, expected = single_device_reference(preset)
    mesh = sh.make_mesh(MESHES[mesh_name])
    shardings = sh.param_shardings(config, mesh)
    step = sh.sharded_jit(
        functools.partial(loss_logits_and_grads, config), mesh, sh.DEFAULT_RULES,
        in_shardings=(shardings, sh.batch_sharding(mesh)),
        out_shardings=(sh.replicated(mesh), sh.batch_sharding(mesh, 3), shardings))
    loss, logits, grads = step(sh.shard_params(config, params, mesh),
                               sh.global_batch(tokens, mesh))
    assert_trees_close((loss, logits, grads), expected)
    assert jax.tree.map(lambda g: g.sharding, grads) == shardings


def test_sharded_jit_traces_under_activation_rules():
    config = models.preset("tiny_llama")
    mesh = sh.make_mesh({"fsdp": 2, "tensor": 4})
    shardings = sh.param_shardings(config, mesh)
    fn = functools.partial(models.logits, config)
    args = (sh.init_params_sharded(config, jax.random.key(0), mesh),
            sh.global_batch(tokens_for(config), mesh))
    plain = jax.jit(fn, in_shardings=(shardings, sh.batch_sharding(mesh))).lower(*args).as_text()
    ruled = sh.sharded_jit(fn, mesh, sh.DEFAULT_RULES, (shardings, sh.batch_sharding(mesh)),
                           sh.batch_sharding(mesh, 3)).lower(*args).as_text()
    assert "sharding_constraint" not in plain
    assert "sharding_constraint" in ruled


def test_logits_on_sharded_params_inside_and_outside_mesh_context():
    params, tokens, (_, expected_logits, _) = single_device_reference("tiny_llama")
    config = models.preset("tiny_llama")
    mesh = sh.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sharded = sh.shard_params(config, params, mesh)
    np.testing.assert_allclose(models.logits(config, sharded, tokens), expected_logits, **TOL)
    with sh.activation_rules(mesh):
        logits = jax.jit(functools.partial(models.logits, config))(sharded, tokens)
    np.testing.assert_allclose(logits, expected_logits, **TOL)


def test_sharded_init_equals_unsharded_init():
    config = models.preset("tiny_qwen3")
    mesh = sh.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sharded = sh.init_params_sharded(config, jax.random.key(3), mesh)
    assert jax.tree.map(lambda x: x.sharding, sharded) == sh.param_shardings(config, mesh)
    unsharded = jax.jit(functools.partial(models.init_params, config))(jax.random.key(3))
    jax.tree.map(np.testing.assert_array_equal, sharded, unsharded)


def test_shard_params_places_numpy_leaves_on_their_shards():
    config = models.preset("tiny_llama")
    mesh = sh.make_mesh({"fsdp": 2, "tensor": 4})
    host = jax.device_get(jax.jit(functools.partial(models.init_params, config))(jax.random.key(1)))
    placed = sh.shard_params(config, host, mesh)
    assert jax.tree.map(lambda x: x.sharding, placed) == sh.param_shardings(config, mesh)
    jax.tree.map(np.testing.assert_array_equal, placed, host)
    host["embedding"] = host["embedding"][:, :32]
    with pytest.raises(ValueError, match=r"\['embedding'\] has shape \(256, 32\).*\(256, 64\)"):
        sh.shard_params(config, host, mesh)


def test_mesh_axis_that_does_not_divide_is_dropped_and_never_reused():
    config = models.preset("tiny_llama")  # 2 kv heads, 4 q heads.
    mesh = sh.make_mesh({"fsdp": 2, "tensor": 4})
    specs = jax.tree.map(lambda s: s.spec, sh.param_shardings(config, mesh))
    assert specs["layers"]["attn"]["k_kernel"] == P(None, "fsdp", None, None)
    assert specs["layers"]["attn"]["q_kernel"] == P(None, "fsdp", "tensor", None)
    for spec in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P)):
        axes = [a for entry in spec if entry
                for a in ((entry,) if isinstance(entry, str) else entry)]
        assert len(axes) == len(set(axes))
    # Batch 2 over data=2 x fsdp=2 (x expert=1) keeps `data` (and the size-1 `expert`).
    rules = sh.DEFAULT_RULES
    assert sh.logical_to_mesh_spec(("batch", "length"), (2, 8),
                                   {"data": 2, "fsdp": 2, "expert": 1},
                                   rules) == P(("data", "expert"), None)


def test_cache_and_optimizer_state_shardings():
    config = models.preset("tiny_llama")
    mesh = sh.make_mesh({"fsdp": 2, "tensor": 4})
    cache = sh.cache_shardings(config, mesh, sh.DEFAULT_RULES, batch_size=4, max_len=32)
    batch = ("data", "fsdp", "expert")
    assert cache["k"].spec == P(None, batch, None, None, None)  # kv_heads=2 < tensor.
    assert cache["valid"].spec == P(batch, None) and cache["index"].spec == P()
    latent = sh.cache_shardings(models.preset("tiny_deepseek_v3"), mesh, sh.DEFAULT_RULES,
                                batch_size=4, max_len=32)
    assert set(latent) == {"latent", "k_rope", "valid", "index"}
    assert latent["latent"].spec == P(None, batch, None, None, None)

    # The CPU decode layout: each layer [B, S, K * D], heads and head dims on the flattened
    # axis, heads outermost (here kv_heads=2 on tensor=2; head_dim sharded by a custom rule).
    decode_mesh = sh.make_mesh({"fsdp": 4, "tensor": 2})
    rules = tuple(r for r in sh.DEFAULT_RULES if r[0] != "head_dim") + (("head_dim", "fsdp"),)
    stacked = sh.cache_shardings(config, decode_mesh, rules, batch_size=3, max_len=32)
    layers = sh.per_layer_cache_shardings(stacked, config.num_layers)
    assert len(layers["k"]) == config.num_layers and layers["valid"] == stacked["valid"]
    assert tuple(stacked["k"].spec)[3:] == ("tensor", "fsdp")  # 3 rows: not over fsdp.
    assert layers["k"][0].spec == P(*tuple(stacked["k"].spec)[1:3], ("tensor", "fsdp"))

    shardings = sh.param_shardings(config, mesh)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    state_shapes = jax.eval_shape(optimizer.init, nn.meta.unbox(models.abstract_params(config)))
    state = sh.shardings_like(state_shapes, shardings)
    adam = state[1][0]
    assert adam.mu == shardings and adam.nu == shardings
    assert adam.count.spec == P()


def test_global_batch_on_one_process_is_the_batch():
    mesh = sh.make_mesh({"data": 2, "fsdp": 4})
    batch = {"tokens": np.arange(32, dtype=np.int32).reshape(8, 4), "mask": np.ones((8,), bool)}
    out = sh.global_batch(batch, mesh)
    assert out["tokens"].sharding.spec == P(("data", "fsdp", "expert"), None)
    assert out["mask"].sharding.spec == P(("data", "fsdp", "expert"))
    np.testing.assert_array_equal(out["tokens"], batch["tokens"])


# ----------------------------------------------------------------------------- memory

MEMORY_CONFIG = models.preset("tiny_llama", embed_dim=256, mlp_dim=1024, num_layers=4,
                              vocab_size=2048, num_heads=8, num_kv_heads=8, head_dim=32)


def per_device_bytes(tree) -> dict:
    counts = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            counts[shard.device] = counts.get(shard.device, 0) + shard.data.nbytes
    return counts


def test_fsdp_splits_parameter_bytes():
    mesh = sh.make_mesh({"fsdp": 8})
    params = sh.init_params_sharded(MEMORY_CONFIG, jax.random.key(0), mesh)
    total = sum(x.nbytes for x in jax.tree.leaves(params))
    counts = per_device_bytes(params)
    assert len(counts) == 8
    assert max(counts.values()) <= total / 8 + 4096, (total, counts)


def compiled_train_step(mesh):
    """The AdamW train step of MEMORY_CONFIG compiled (not run) for `mesh`, state donated."""
    config, optimizer = MEMORY_CONFIG, optax.adamw(1e-3)

    def train_step(state, tokens):
        params, opt_state = state
        (loss, _), grads = jax.value_and_grad(
            functools.partial(next_token_loss, config), has_aux=True)(params, tokens)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    params_shardings = sh.param_shardings(config, mesh)
    params_shapes = nn.meta.unbox(models.abstract_params(config))
    opt_shapes = jax.eval_shape(optimizer.init, params_shapes)
    state_shardings = (params_shardings, sh.shardings_like(opt_shapes, params_shardings))
    state_shapes = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                (params_shapes, opt_shapes), state_shardings)
    tokens = jax.ShapeDtypeStruct((8, 32), jnp.int32, sharding=sh.batch_sharding(mesh))
    step = sh.sharded_jit(train_step, mesh, sh.DEFAULT_RULES,
                          in_shardings=(state_shardings, sh.batch_sharding(mesh)),
                          out_shardings=(state_shardings, sh.replicated(mesh)), donate_argnums=0)
    return step.lower(state_shapes, tokens).compile()


def test_train_step_memory_shrinks_with_fsdp():
    replicated = compiled_train_step(sh.make_mesh({"data": 8})).memory_analysis()
    split = compiled_train_step(sh.make_mesh({"fsdp": 8})).memory_analysis()
    state_bytes = 3 * 4 * MEMORY_CONFIG.num_params  # params + adam mu, nu in float32.
    assert replicated.argument_size_in_bytes >= state_bytes
    assert split.argument_size_in_bytes <= state_bytes / 8 + 64 * 1024
    assert split.alias_size_in_bytes >= state_bytes / 8  # The donated state is updated in place.
    # Temporaries shrink less than 8x (each layer's weights are gathered for compute): ~4x here.
    peak = lambda m: m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes \
        + m.temp_size_in_bytes
    assert peak(split) < peak(replicated) / 3, (peak(split), peak(replicated))


# ----------------------------------------------------------------------------- errors


def test_mesh_shape_must_match_device_count():
    with pytest.raises(ValueError,
                       match=r"\{'data': 2, 'fsdp': 2, 'expert': 1, 'tensor': 1\}.*4 devices.*8 devices"):
        sh.make_mesh({"data": 2, "fsdp": 2})


def test_unknown_mesh_axis_in_shape():
    with pytest.raises(ValueError, match=r"\['model'\].*allowed axes: data, fsdp, expert, tensor"):
        sh.make_mesh({"model": 8})


def test_rule_naming_unknown_mesh_axis():
    mesh = sh.make_mesh({"fsdp": 8})
    rules = list(sh.DEFAULT_RULES) + [["mlp", ["tensor", "model"]]]
    with pytest.raises(ValueError, match=r"'mlp'.*mesh axis 'model'.*data, fsdp, expert, tensor"):
        sh.validate_rules(rules, mesh)
    with pytest.raises(ValueError, match="mesh axis 'model'"):
        sh.param_shardings(models.preset("tiny_llama"), mesh, rules)
