"""PPO in the GRPO trainer (rl.algorithm = "ppo"): the update's loss against a numpy
transcription, named config errors, and a tiny run that keeps the value head beside the policy,
checkpoints and resumes it, and hands the sampler the policy's params alone."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import r1_zero
from r1jax import checkpoint, models
from r1jax.losses import grpo as grpo_lib
from r1jax.models import transformer, value_head
from r1jax.train import grpo, held_out, run as run_lib
from tests.test_grpo_train import CONFIG, _rollout_batch


def _rl(**value):
    return ml_collections.ConfigDict(dict(
        algorithm="ppo", num_micro_batches=1, aggregation="sequence_mean", beta=0.1,
        eps_low=0.2, eps_high=0.2, sampling=dict(temperature=1.0), importance_level="token",
        is_correction="none", is_bound=2.0,
        value={**dict(head="shared", gamma=0.9, lam=0.8, clip=0.05, coef=0.5,
                      whiten_advantages=True, kl_mode="reward"), **value}))


def _numpy_reference(params, kernel_old, kernel, batch, rl):
    """One forward pass over the rows laid out from position 0 (prompt then completion, right
    padding, which a causal model's earlier positions never see), then token rewards, GAE (a
    loop), whitening, the clipped surrogate and the clipped value loss, all in numpy."""
    n, c = batch.mask.shape
    rows = [np.concatenate([batch.prompt_tokens[i, -batch.prompt_lengths[i]:],
                            batch.completions[i, :int(batch.mask[i].sum())]]) for i in range(n)]
    seqs = np.zeros((n, max(len(r) for r in rows)), np.int32)
    for i, r in enumerate(rows):
        seqs[i, :len(r)] = r
    hidden, _ = jax.jit(lambda p, t: transformer.forward(
        CONFIG, p, t, jnp.broadcast_to(jnp.arange(t.shape[1]), t.shape), return_hidden=True))(
        params, jnp.asarray(seqs))
    hidden = np.asarray(hidden, np.float64)
    logits = hidden @ np.asarray(transformer.output_head(CONFIG, params), np.float64)
    logits = logits - logits.max(-1, keepdims=True)
    logsm = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    logp, v_old, v_new = (np.zeros((n, c)) for _ in range(3))
    for i in range(n):
        prompt_length = int(batch.prompt_lengths[i])
        for j in range(int(batch.mask[i].sum())):
            pos = prompt_length - 1 + j
            logp[i, j] = logsm[i, pos, seqs[i, pos + 1]]
            v_old[i, j] = hidden[i, pos] @ kernel_old[:, 0]
            v_new[i, j] = hidden[i, pos] @ kernel[:, 0]
    m, g, lam, beta = batch.mask, rl.value.gamma, rl.value.lam, rl.beta
    adv, ret = np.zeros((n, c)), np.zeros((n, c))
    for i in range(n):
        length = int(m[i].sum())
        r = -beta * (batch.logprobs[i, :length] - batch.ref_logprobs[i, :length])
        r[length - 1] += batch.rewards[i]
        running, next_v = 0.0, 0.0
        for t in reversed(range(length)):
            delta = r[t] + g * next_v - v_old[i, t]
            running = delta + g * lam * running
            adv[i, t], ret[i, t], next_v = running, running + v_old[i, t], v_old[i, t]
    counted = m > 0
    whitened = np.where(counted, (adv - adv[counted].mean()) / np.sqrt(adv[counted].var() + 1e-8), 0)
    ratio = np.exp(np.where(counted, logp - batch.logprobs, 0.0))
    surrogate = np.minimum(ratio * whitened, np.clip(ratio, 0.8, 1.2) * whitened)

    def seq_mean(x):
        return ((x * m).sum(1) / m.sum(1)).mean()

    v_clipped = v_old + np.clip(v_new - v_old, -rl.value.clip, rl.value.clip)
    v_loss = 0.5 * seq_mean(np.maximum((v_new - ret) ** 2, (v_clipped - ret) ** 2))
    return dict(policy_loss=-seq_mean(surrogate), value_loss=v_loss, advantages=whitened,
                returns=ret, values=v_old * m)


def test_ppo_update_loss_equals_a_numpy_transcription():
    rng = np.random.default_rng(0)
    batch = _rollout_batch(rng, n=4)
    batch = batch.replace(rewards=rng.normal(size=batch.mask.shape[0]).astype(np.float32))
    policy = models.init_params(CONFIG, jax.random.key(0))
    kernel_old = rng.normal(0, 0.05, (CONFIG.embed_dim, 1)).astype(np.float32)
    kernel = kernel_old + rng.normal(0, 0.05, kernel_old.shape).astype(np.float32)
    rl = _rl()
    params_old = value_head.with_value(policy, {"head": {"kernel": jnp.asarray(kernel_old)}})
    params = value_head.with_value(policy, {"head": {"kernel": jnp.asarray(kernel)}})
    device_batch = jax.tree.map(jnp.asarray, batch.arrays())
    targets = jax.jit(functools.partial(grpo.ppo_targets, model_config=CONFIG, rl=rl))(
        params_old, device_batch)
    device_batch = grpo.with_ppo_targets(device_batch, targets)
    expected = _numpy_reference(policy, kernel_old, kernel, batch, rl)
    for name in ("values", "advantages", "returns"):
        np.testing.assert_allclose(getattr(device_batch, name), expected[name], atol=2e-4,
                                   err_msg=name)

    optimizer = optax.sgd(0.0)
    state = run_lib.TrainState(params=params, opt_state=optimizer.init(params), reference=None,
                               updates=jnp.zeros((), jnp.int32))
    _, metrics = jax.jit(functools.partial(grpo.grpo_update, model_config=CONFIG,
                                           optimizer=optimizer, rl=rl, nan_policy="stop"))(
        state, device_batch)
    assert 0 < metrics["value_clipfrac"] < 1  # both branches of the value clip are exercised
    np.testing.assert_allclose(metrics["policy_loss"], expected["policy_loss"], rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(metrics["value_loss"], expected["value_loss"], rtol=1e-4)
    np.testing.assert_allclose(
        metrics["loss"], expected["policy_loss"] + 0.5 * expected["value_loss"], rtol=1e-4,
        atol=1e-5)


def test_per_token_advantages_equal_per_sequence_ones_when_constant_over_tokens():
    rng = np.random.default_rng(1)
    b = jax.tree.map(jnp.asarray, _rollout_batch(rng))
    logprobs = b.logprobs + jnp.asarray(rng.normal(0, 0.3, b.logprobs.shape), jnp.float32)
    args = dict(eps_low=0.2, eps_high=0.28, beta=0.0, aggregation="token_mean")
    per_sequence = grpo_lib.grpo_loss(logprobs, b.logprobs, None, b.advantages, b.mask, **args)
    per_token = grpo_lib.grpo_loss(logprobs, b.logprobs, None,
                                   jnp.repeat(b.advantages[:, None], b.mask.shape[1], 1),
                                   b.mask, **args)
    for key in per_sequence[1]:
        np.testing.assert_allclose(per_token[1][key], per_sequence[1][key], rtol=1e-6)
    np.testing.assert_allclose(per_token[0], per_sequence[0], rtol=1e-6)


@pytest.mark.parametrize("key,value,message", [
    ("algorithm", "reinforce", "rl.algorithm='reinforce'"),
    ("value.head", "mlp", "rl.value.head='mlp'"),
    ("value.gamma", 0.0, "rl.value.gamma=0.0"),
    ("value.lam", 1.5, "rl.value.lam=1.5"),
    ("value.clip", 0.0, "rl.value.clip=0.0"),
    ("value.coef", 0.0, "rl.value.coef=0.0"),
    ("value.whiten_advantages", 1, "rl.value.whiten_advantages=1"),
    ("value.kl_mode", "both", "rl.value.kl_mode='both'"),
    ("importance_level", "sequence", "rl.importance_level='sequence'"),
])
def test_bad_ppo_config_values_are_named(key, value, message):
    config = r1_zero.get_config("tiny")
    config.rl.algorithm = "ppo"
    grpo.validate_config(config, mesh_batch=1)  # the defaults pass
    section = config.rl
    *parents, name = key.split(".")
    for parent in parents:
        section = section[parent]
    with section.ignore_type():
        section[name] = value
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("'", "'")):
        grpo.validate_config(config, mesh_batch=1)


def test_a_separate_value_model_with_lora_is_refused_naming_both_keys():
    config = r1_zero.get_config("tiny")
    config.rl.algorithm, config.rl.value.head = "ppo", "separate"
    grpo.validate_config(config, mesh_batch=1)  # without LoRA it passes
    config.model.lora.rank = 4
    with pytest.raises(ValueError, match=r"rl\.value\.head='separate'.*model\.lora\.rank=4"):
        grpo.validate_config(config, mesh_batch=1)


def test_ppo_variants_differ_from_the_default_only_in_algorithm_lambda_and_head():
    base, lam1, lam095, separate = (r1_zero.get_config(v) for v in
                                    ("", "ppo", "ppo_lambda095", "ppo_separate"))
    assert (lam1.rl.algorithm, lam1.rl.value.lam) == ("ppo", 1.0)
    assert (lam095.rl.algorithm, lam095.rl.value.lam) == ("ppo", 0.95)
    assert (separate.rl.algorithm, separate.rl.value.lam, separate.rl.value.head) == (
        "ppo", 1.0, "separate")
    for config in (lam1, lam095, separate):
        config.rl.algorithm, config.rl.value.lam = "grpo", base.rl.value.lam
        config.rl.value.head = base.rl.value.head
        config.variant = base.variant
        assert config.to_dict() == base.to_dict()


@pytest.mark.parametrize("head", grpo.VALUE_HEADS)
def test_tiny_ppo_run_checkpoints_and_resumes_the_value_head(tmp_path, monkeypatch, head):
    config = r1_zero.get_config("tiny")  # β = 0.04 with kl_mode "reward"
    config.rl.algorithm = "ppo"
    config.rl.value.head = head
    config.data.data_dir = str(tmp_path / "data")
    config.train.update(num_steps=2, checkpoint_every=1, eval_every=0)
    config.eval.max_problems = 0
    policy_keys = set(models.init_params(CONFIG, jax.random.key(0)))

    seen = []  # the tree of every params the sampler and evaluation got
    for module, name in ((grpo, "collect"), (held_out, "evaluate")):
        original = getattr(module, name)

        def spy(run, params, *args, _original=original, **kwargs):
            seen.append(set(params))
            return _original(run, params, *args, **kwargs)
        monkeypatch.setattr(module, name, spy)
    saved, restored, shardings = {}, [], {}
    save, restore = run_lib.save, run_lib.restore

    def save_spy(run, state, step, iterator, **kwargs):
        shardings[step] = run_lib.state_shardings(state).params
        saved[step] = jax.device_get(state.params)
        return save(run, state, step, iterator, **kwargs)

    def restore_spy(*args):
        state, step = restore(*args)
        restored.append((step, jax.device_get(state.params)))
        return state, step
    monkeypatch.setattr(run_lib, "save", save_spy)
    monkeypatch.setattr(run_lib, "restore", restore_spy)

    workdir = str(tmp_path / "w")
    metrics = grpo.train(config, workdir)
    for key in ("value_loss", "value_mean", "value_clipfrac", "explained_variance",
                "advantage_mean", "advantage_std", "policy_loss", "kl_k1"):
        assert np.isfinite(metrics[key]), key
    assert seen and all(keys == policy_keys for keys in seen), seen
    assert set(saved[2]) == {"policy", "value"}
    if head == "separate":  # a whole model beside the policy, on its shards, trained apart
        assert set(saved[2]["value"]) == {"backbone", "head"}
        assert shardings[2]["value"]["backbone"] == shardings[2]["policy"]
        assert any(np.any(v != p) for v, p in zip(
            jax.tree.leaves(saved[2]["value"]["backbone"]), jax.tree.leaves(saved[2]["policy"])))
    else:
        assert set(saved[2]["value"]) == {"head"}
    assert np.any(saved[2]["value"]["head"]["kernel"] != 0)  # the head trained from zero
    assert np.any(saved[2]["value"]["head"]["kernel"] != saved[1]["value"]["head"]["kernel"])

    config.train.num_steps = 3
    grpo.train(config, workdir)
    step, params = restored[-1]
    assert step == 2
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(saved[2]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.any(saved[3]["value"]["head"]["kernel"] != saved[2]["value"]["head"]["kernel"])

    # Evaluation and exports read the policy's params alone from the workdir.
    _, policy = checkpoint.restore_params(workdir)
    for a, b in zip(jax.tree.leaves(policy), jax.tree.leaves(saved[3]["policy"]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_with_lora_the_value_head_trains_beside_the_policys_adapters():
    from r1jax.models import lora
    from r1jax.models.config import LoraConfig
    config = CONFIG.replace(lora=LoraConfig(rank=2, alpha=4.0))
    policy = models.init_params(config, jax.random.key(0))
    head = {"head": {"kernel": jnp.zeros((config.embed_dim, 1))}}
    trainable, frozen = lora.split(value_head.with_value(policy, head))
    assert trainable["value"] is head
    assert trainable["policy"] == lora.adapters(policy) and frozen == {"policy": lora.base(policy)}


def _ppo_targets(params, batch, rl):
    """The batch with `ppo_targets`' (V_old, GAE advantages, returns) under `params`."""
    return grpo.with_ppo_targets(batch, jax.jit(functools.partial(
        grpo.ppo_targets, model_config=CONFIG, rl=rl))(params, batch))


def _jit_update(rl, optimizer):
    """params, batch -> (params after one `grpo_update` of the PPO loss, its metrics)."""
    update = jax.jit(functools.partial(grpo.grpo_update, model_config=CONFIG,
                                       optimizer=optimizer, rl=rl, nan_policy="stop"))

    def apply(params, batch):
        state = run_lib.TrainState(params=params, opt_state=optimizer.init(params),
                                   reference=None, updates=jnp.zeros((), jnp.int32))
        state, metrics = update(state, batch)
        return state.params, metrics
    return apply


def _ppo_update(params, batch, rl, optimizer):
    """(params after one update from `params` with the targets computed from them, metrics)."""
    return _jit_update(rl, optimizer)(params, _ppo_targets(params, batch, rl))


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _trees_differ(a, b):
    return any(np.any(x != y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _batch(seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(jnp.asarray, _rollout_batch(rng, n=4).replace(
        rewards=rng.normal(size=4).astype(np.float32)).arrays())


def test_with_a_separate_value_model_each_loss_reaches_only_its_own_params():
    # With SGD(1) an update moves each param by minus its gradient. Other returns change the
    # value loss alone, other advantages the policy loss alone: the other model's update must
    # stay bit for bit the same (its gradient from the changed loss is exactly zero).
    rl = _rl(head="separate")
    kernel = jnp.asarray(np.random.default_rng(2).normal(0, 0.5, (CONFIG.embed_dim, 1)),
                         jnp.float32)
    params = value_head.with_value(models.init_params(CONFIG, jax.random.key(0)), {
        "backbone": models.init_params(CONFIG, jax.random.key(1)), "head": {"kernel": kernel}})
    batch = _ppo_targets(params, _batch(2), rl)
    update = _jit_update(rl, optax.sgd(1.0))
    base, metrics = update(params, batch)
    assert np.isfinite(metrics["value_loss"]) and metrics["value_loss"] > 0

    other_returns, _ = update(params, batch.replace(returns=batch.returns + 1.0))
    _assert_trees_equal(other_returns["policy"], base["policy"])  # d value_loss / d policy = 0
    assert _trees_differ(other_returns["value"]["backbone"], base["value"]["backbone"])

    other_advantages, _ = update(params, batch.replace(advantages=-batch.advantages))
    _assert_trees_equal(other_advantages["value"], base["value"])  # d policy_loss / d value = 0
    assert _trees_differ(other_advantages["policy"], base["policy"])


def test_a_fresh_separate_value_model_gives_the_shared_heads_first_update():
    # Both start with a zero kernel on the same hidden states (the value model is the policy's
    # copy): V_old = 0, the same targets, and the value loss sends no gradient into either
    # backbone (d V / d hidden = kernel = 0), so the policy and the head move alike.
    batch = _batch(3)
    policy = models.init_params(CONFIG, jax.random.key(0))
    zero = {"kernel": jnp.zeros((CONFIG.embed_dim, 1), jnp.float32)}
    shared, shared_metrics = _ppo_update(value_head.with_value(policy, {"head": zero}), batch,
                                         _rl(), optax.sgd(0.1))
    separate, separate_metrics = _ppo_update(
        value_head.with_value(policy, {"backbone": policy, "head": zero}), batch,
        _rl(head="separate"), grpo.ppo_optimizer(optax.sgd(0.1), _rl(head="separate")))
    assert separate_metrics["value_mean"] == 0 and shared_metrics["value_mean"] == 0
    for key in ("loss", "policy_loss", "value_loss"):
        np.testing.assert_array_equal(separate_metrics[key], shared_metrics[key], err_msg=key)
    _assert_trees_equal(separate["policy"], shared["policy"])
    _assert_trees_equal(separate["value"]["head"], shared["value"]["head"])
    _assert_trees_equal(separate["value"]["backbone"], policy)  # zero kernel: no gradient yet


def test_a_separate_value_model_is_a_copy_of_the_policy_on_the_policys_shards():
    from r1jax import sharding
    mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
    policy = sharding.init_params_sharded(CONFIG, jax.random.key(0), mesh, sharding.DEFAULT_RULES)
    value = value_head.init_params(CONFIG, mesh, sharding.DEFAULT_RULES, backbone=policy)
    expected = sharding.param_shardings(CONFIG, mesh)
    assert jax.tree.map(lambda x: x.sharding, value["backbone"]) == expected
    assert any(len(s.device_set) > 1 and not s.is_fully_replicated
               for s in jax.tree.leaves(expected))  # the test can see a wrong sharding
    _assert_trees_equal(value["backbone"], policy)
    assert all(a is not b for a, b in zip(jax.tree.leaves(value["backbone"]),
                                          jax.tree.leaves(policy)))
