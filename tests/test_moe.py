"""The mixture-of-experts layer: routing against a loop-by-loop reference, both dispatches against
a dense per-token reference, capacity and padding, router statistics, aux-loss-free balancing,
expert parallelism on 8 fake devices, and the published parameter counts of the presets."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from r1jax import models
from r1jax import sharding as sh
from r1jax.models import dispatch
from r1jax.models import moe as moe_lib
from r1jax.models.config import MoEConfig

DEEPSEEK_ROUTING = MoEConfig(num_experts=8, experts_per_token=2, expert_mlp_dim=4,
                             scoring="sigmoid", score_bias=True, num_groups=4, topk_groups=2,
                             norm_topk_prob=True, routed_scaling_factor=2.5)


def reference_route(logits: np.ndarray, bias: np.ndarray, moe: MoEConfig):
    """DeepSeek-V3's routing written token by token (sigmoid, groups by their top-2 sum)."""
    weights, experts = [], []
    per_group = moe.num_experts // moe.num_groups
    for row in logits:
        scores = 1 / (1 + np.exp(-row))
        choice = scores + bias
        groups = [sorted(choice[g * per_group:(g + 1) * per_group])[-2:] for g in
                  range(moe.num_groups)]
        best_groups = np.argsort([-sum(g) for g in groups])[:moe.topk_groups]
        allowed = [e for e in range(moe.num_experts) if e // per_group in best_groups]
        chosen = sorted(allowed, key=lambda e: -choice[e])[:moe.experts_per_token]
        w = scores[chosen] / scores[chosen].sum() * moe.routed_scaling_factor
        weights.append(w)
        experts.append(chosen)
    return np.array(weights), np.array(experts)


def test_group_limited_sigmoid_routing_matches_reference():
    rng = np.random.default_rng(0)
    logits, bias = rng.normal(size=(64, 8)).astype(np.float32), rng.normal(size=8) * 0.3
    weights, experts = moe_lib.route(jnp.asarray(logits), jnp.asarray(bias, jnp.float32),
                                     DEEPSEEK_ROUTING)
    ref_weights, ref_experts = reference_route(logits, bias, DEEPSEEK_ROUTING)
    np.testing.assert_array_equal(experts, ref_experts)
    np.testing.assert_allclose(weights, ref_weights, rtol=1e-5)
    # The bias steers the choice but never enters the weights: they are the chosen raw scores.
    scores = 1 / (1 + np.exp(-logits))
    chosen = np.take_along_axis(scores, np.asarray(experts), 1)
    np.testing.assert_allclose(weights, chosen / chosen.sum(1, keepdims=True) * 2.5, rtol=1e-5)


def test_softmax_routing_is_qwen3_moe():
    moe = MoEConfig(num_experts=6, experts_per_token=3, expert_mlp_dim=4, norm_topk_prob=False)
    logits = np.random.default_rng(1).normal(size=(16, 6)).astype(np.float32)
    weights, experts = moe_lib.route(jnp.asarray(logits), None, moe)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_array_equal(experts, np.argsort(-probs, 1)[:, :3])
    np.testing.assert_allclose(weights, -np.sort(-probs, 1)[:, :3], rtol=1e-5)


def _expert_weights(x=8, e=16, f=8, seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(keys[0], (x, e, f)) / 4, jax.random.normal(keys[1], (x, e, f)) / 4,
            jax.random.normal(keys[2], (x, f, e)) / 3)


def dense_reference(tokens, experts, weights, gate, up, down):
    """sum_k w_k * expert_k(token), one token and one expert at a time."""
    out = np.zeros(tokens.shape, np.float32)
    for n, token in enumerate(np.asarray(tokens)):
        for e, w in zip(np.asarray(experts[n]), np.asarray(weights[n])):
            h = jax.nn.silu(token @ gate[e]) * (token @ up[e])
            out[n] += w * np.asarray(h @ down[e])
    return out


@pytest.fixture(scope="module")
def routed_tokens():
    tokens = jax.random.normal(jax.random.key(3), (24, 16))
    logits = jax.random.normal(jax.random.key(4), (24, 8))
    weights, experts = moe_lib.route(logits, None, MoEConfig(num_experts=8, experts_per_token=2,
                                                             expert_mlp_dim=8))
    return tokens, experts, weights, _expert_weights()


def test_dropless_and_ample_capacity_equal_the_dense_reference(routed_tokens):
    tokens, experts, weights, (gate, up, down) = routed_tokens
    expected = dense_reference(tokens, experts, weights, gate, up, down)
    dropless, kept = dispatch.dropless_dispatch(tokens, experts, weights, gate, up, down)
    np.testing.assert_allclose(dropless, expected, rtol=1e-5, atol=1e-5)
    assert kept.all()
    valid = jnp.ones((24,), bool)
    capacity, kept = dispatch.capacity_dispatch(tokens, experts, weights, gate, up, down, valid,
                                                capacity=24)
    np.testing.assert_allclose(capacity, expected, rtol=1e-5, atol=1e-5)
    assert kept.all()


def test_capacity_drops_late_assignments_and_never_gives_padding_a_slot(routed_tokens):
    tokens, experts, weights, (gate, up, down) = routed_tokens
    experts = experts.at[:, 0].set(0)  # Every token's first choice is expert 0.
    valid = jnp.arange(24) >= 8        # The first 8 tokens are padding.
    out, computed = dispatch.capacity_dispatch(tokens, experts, weights, gate, up, down, valid,
                                               capacity=5)
    # Expert 0 keeps the first 5 real tokens' first choices; 11 of the 32 real assignments
    # beyond them are dropped (second choices of expert 0 included, if any).
    kept = np.zeros((24, 2), bool)
    counts = np.zeros(8, int)
    for k in range(2):
        for n in range(8, 24):
            e = int(experts[n, k])
            if counts[e] < 5:
                kept[n, k], counts[e] = True, counts[e] + 1
    expected = dense_reference(tokens, experts, weights * kept, gate, up, down)
    np.testing.assert_allclose(out[8:], expected[8:], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(computed[8:], kept[8:])
    assert not np.asarray(computed[:8]).any()  # Padding takes no slot.
    stats = moe_lib.router_stats(experts, valid, 8, computed)
    np.testing.assert_allclose(stats.dropped, (~kept[8:]).sum() / 32, rtol=1e-6)


def test_router_stats_leave_padding_out():
    config = models.preset("tiny_deepseek_v3")
    params = models.init_params(config, jax.random.key(0))
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, (2, 12), np.int32)
    positions = np.broadcast_to(np.arange(12, dtype=np.int32), (2, 12))
    segments = np.ones((2, 12), np.int32)
    forward = jax.jit(functools.partial(models.forward_with_router_stats, config))
    _, stats = forward(params, tokens[:, :8], positions[:, :8], segments[:, :8])
    segments[:, 8:] = 0  # Four padding tokens at the end of each row.
    _, padded = forward(params, tokens, positions, segments)
    moe_layers = config.num_layers - config.moe.first_dense_layers
    assert stats.load.shape == (moe_layers, 8) and stats.max_violation.shape == (moe_layers,)
    np.testing.assert_allclose(padded.load, stats.load, rtol=1e-6)
    np.testing.assert_allclose(stats.load.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(stats.max_violation, stats.load.max(-1) * 8 - 1, rtol=1e-6)
    assert float(stats.dropped.max()) == 0.0  # Dropless.
    dense = models.preset("tiny_llama")
    assert models.forward_with_router_stats(
        dense, models.init_params(dense, jax.random.key(0)), tokens, positions)[1] is None


def test_aux_loss_free_bias_moves_loads_toward_balance():
    """A router that sends most tokens to experts 0 and 1: 50 bias updates bring the load's
    max violation from > 2 to under 0.5, while the routing weights stay bias-free."""
    moe = MoEConfig(num_experts=8, experts_per_token=2, expert_mlp_dim=4, scoring="sigmoid",
                    score_bias=True)
    logits = jax.random.normal(jax.random.key(0), (512, 8)) + jnp.array([2.0, 1.5] + [0.0] * 6)
    valid = jnp.ones((512,), bool)

    def stats(bias):
        _, experts = moe_lib.route(logits, bias, moe)
        return moe_lib.router_stats(experts, valid, 8, jnp.ones(experts.shape, bool))

    bias = jnp.zeros((8,))
    before = stats(bias).max_violation
    for _ in range(50):
        bias = moe_lib.update_score_bias(bias, stats(bias).load, rate=0.02)
    after = stats(bias).max_violation
    print(f"max violation {float(before):.2f} -> {float(after):.2f}")
    assert before > 2.0 and after < 0.5
    assert float(bias[0]) < 0 < float(bias[7])


def test_update_score_bias_is_a_signed_step():
    bias = jnp.zeros((2, 4))
    load = jnp.array([[0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(moe_lib.update_score_bias(bias, load, 0.1),
                               [[-0.1, -0.1, 0.1, 0.1], [0, 0, 0, 0]])


@pytest.mark.parametrize("field, value, message", [
        ("scoring", "sparsemax", r"Unsupported MoE scoring function 'sparsemax'; supported: "
                                 r"sigmoid, softmax"),
        ("dispatch", "sinkhorn", r"Unsupported MoE dispatch 'sinkhorn'; supported: dropless, "
                                 r"capacity"),
        ("topk_groups", 5, r"topk_groups=5"),
])
def test_unsupported_moe_settings_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        MoEConfig(**{"num_experts": 8, "experts_per_token": 2, "expert_mlp_dim": 4,
                     "num_groups": 4, field: value})


def test_architecture_needs_its_parts():
    with pytest.raises(ValueError, match="architecture='deepseek_v3' needs `mla`"):
        models.preset("tiny_deepseek_v3").replace(mla=None)
    with pytest.raises(ValueError, match="architecture='llama' cannot have `moe`"):
        models.preset("tiny_llama").replace(moe=DEEPSEEK_ROUTING)


# ----------------------------------------------------------------------------- presets

# name: (published total, published active parameters)
PUBLISHED = {"deepseek_v3_671b": (671e9, 37e9), "moonlight_16b_a3b": (16e9, 3e9),
             "deepseek_v2_lite": (15.7e9, 2.4e9), "qwen3_30b_a3b": (30.5e9, 3.3e9)}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_counts_match_published(name):
    config = models.preset(name)
    shapes = nn.meta.unbox(models.abstract_params(config))
    total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    assert total == config.num_params
    published_total, published_active = PUBLISHED[name]
    print(f"{name}: {total / 1e9:.2f}B total, {config.num_active_params / 1e9:.2f}B active")
    assert abs(total / published_total - 1) < 0.005
    # Published active counts are rounded and sometimes leave the embeddings out.
    embedding = config.vocab_size * config.embed_dim
    assert (config.num_active_params - embedding) * 0.95 < published_active \
        < config.num_active_params * 1.05


# ----------------------------------------------------------------------------- expert parallelism


def next_token_loss(config, params, tokens):
    logits = models.logits(config, params, tokens)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:])
    return losses.mean(), logits


def _with_dispatch(config, dispatch_name: str, **moe_fields):
    return config.replace(moe=MoEConfig(**{**config.moe.__dict__, "dispatch": dispatch_name,
                                           **moe_fields}))


@pytest.mark.parametrize("dispatch_name, mesh_shape", [
        ("capacity", {"expert": 8}), ("dropless", {"expert": 4, "fsdp": 2}),
        ("all_to_all", {"expert": 8}), ("all_to_all", {"expert": 2, "fsdp": 2, "tensor": 2})])
def test_expert_parallel_mesh_matches_one_device(dispatch_name, mesh_shape):
    """The all-to-all exchange (capacity 4x the even share: nothing dropped) against one device's
    dropless MoE; the GSPMD dispatches against their own one-device run."""
    base = models.preset("tiny_deepseek_v3")
    exchange = dispatch_name == "all_to_all"
    config = _with_dispatch(base, dispatch_name, capacity_factor=4.0 if exchange else 1.25)
    reference = _with_dispatch(base, "dropless") if exchange else config
    params = models.init_params(config, jax.random.key(0))
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, (8, 16), np.int32)
    step = jax.value_and_grad(functools.partial(next_token_loss, reference), has_aux=True)
    (loss, logits), grads = jax.jit(step)(params, tokens)

    mesh = sh.make_mesh(mesh_shape)
    shardings = sh.param_shardings(config, mesh)
    sharded_step = sh.sharded_jit(
        jax.value_and_grad(functools.partial(next_token_loss, config), has_aux=True), mesh,
        sh.DEFAULT_RULES, in_shardings=(shardings, sh.batch_sharding(mesh)),
        out_shardings=((sh.replicated(mesh), sh.batch_sharding(mesh, 3)), shardings))
    sharded_params = sh.shard_params(config, params, mesh)
    batch = sh.global_batch(tokens, mesh)
    (sharded_loss, sharded_logits), sharded_grads = sharded_step(sharded_params, batch)
    tol = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sharded_loss, loss, **tol)
    np.testing.assert_allclose(sharded_logits, logits, **tol)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), sharded_grads, grads)
    # Every device holds 1/8 of each expert weight (experts over `expert`, the rest over
    # fsdp / tensor).
    for name in ("gate", "up", "down"):
        weight = sharded_params["layers"]["mlp"][name]
        assert weight.sharding.spec[1] == "expert"
        assert {s.data.nbytes for s in weight.addressable_shards} == {weight.nbytes // 8}
    # Only the exchange moves tokens by an explicit all-to-all (GSPMD may add its own to reshard).
    jaxpr = str(sharded_step.trace(sharded_params, batch).jaxpr)
    assert ("all_to_all" in jaxpr) == exchange


def test_all_to_all_capacity_applies_per_sending_device():
    """With drops, the exchange on 8 devices computes what "capacity" computes on each device's
    own tokens (capacity from its own count), and reports the same assignments kept."""
    moe = MoEConfig(num_experts=8, experts_per_token=2, expert_mlp_dim=8, capacity_factor=1.0,
                    dispatch="all_to_all")
    gate, up, down = _expert_weights()
    tokens = jax.random.normal(jax.random.key(5), (64, 16))
    logits = jax.random.normal(jax.random.key(6), (64, 8)) + jnp.arange(8) * 0.3  # Skewed.
    weights, experts = moe_lib.route(logits, None, moe)
    valid = jnp.arange(64) % 7 != 3
    mesh = sh.make_mesh({"expert": 8})
    rows, split = sh.batch_sharding(mesh), NamedSharding(mesh, PartitionSpec("expert"))
    exchange = sh.sharded_jit(functools.partial(dispatch.all_to_all_dispatch, moe=moe), mesh,
                              sh.DEFAULT_RULES, in_shardings=(rows, rows, rows, split, split,
                                                              split, sh.batch_sharding(mesh, 1)),
                              out_shardings=(rows, rows))
    out, kept = exchange(tokens, experts, weights, gate, up, down, valid)
    capacity = dispatch.expert_capacity(8, moe)
    for block in range(8):
        part = slice(block * 8, (block + 1) * 8)
        expected, expected_kept = dispatch.capacity_dispatch(
            tokens[part], experts[part], weights[part], gate, up, down, valid[part], capacity)
        np.testing.assert_allclose(out[part], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(kept[part], expected_kept)
    assert 0 < (~np.asarray(kept)).sum() < 128 - 16  # Some dropped, most kept.


def test_training_hooks_keep_the_bias_out_of_the_optimizer_and_update_it_from_loads():
    config = models.preset("tiny_qwen3_moe").replace(moe=DEEPSEEK_ROUTING.__class__(
        **{**models.preset("tiny_qwen3_moe").moe.__dict__, "score_bias": True,
           "scoring": "sigmoid"}))
    params = models.init_params(config, jax.random.key(0))
    params["layers"]["mlp"]["score_bias"] = jnp.full((3, 8), 0.5)
    optimizer = optax.multi_transform(
        {"trainable": optax.adamw(1e-2, weight_decay=0.1), "frozen": optax.set_to_zero()},
        moe_lib.optimizer_labels(params))
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    updated = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(updated["layers"]["mlp"]["score_bias"], 0.5)
    assert not np.allclose(updated["layers"]["mlp"]["gate"], params["layers"]["mlp"]["gate"])

    load = jnp.tile(jnp.array([0.3, 0.2] + [0.5 / 6] * 6), (3, 1))
    stats = moe_lib.RouterStats(load=load, max_violation=load.max(-1) * 8 - 1,
                                dropped=jnp.zeros(3))
    moved = moe_lib.update_params_score_bias(params, stats, 0.01)["layers"]["mlp"]["score_bias"]
    np.testing.assert_allclose(moved[:, :2], 0.49)
    np.testing.assert_allclose(moved[:, 2:], 0.51)
    metrics = moe_lib.router_metrics(stats)
    np.testing.assert_allclose(metrics["router/load_max"], 2.4, rtol=1e-6)
    np.testing.assert_allclose(metrics["router/max_violation"], 1.4, rtol=1e-6)
