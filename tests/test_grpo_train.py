"""The GRPO trainer's pieces: micro-batching is exact, logprobs are the model's, config errors
are named. (End-to-end runs and resume: tests/test_train_runs.py.)"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import r1_zero
from r1jax import models, sampling
from r1jax.losses import grpo as grpo_lib
from r1jax.train import grpo, rollouts, run
from r1jax.train.rollouts import Rollouts

CONFIG = models.preset("tiny_llama")


def _rollout_batch(rng, n=8, p=5, c=6):
    lengths = rng.integers(2, p + 1, n)
    prompt = np.zeros((n, p), np.int32)
    for i, length in enumerate(lengths):
        prompt[i, p - length:] = rng.integers(1, CONFIG.vocab_size, length)
    mask = (np.arange(c)[None] < rng.integers(1, c + 1, n)[:, None]).astype(np.float32)
    return Rollouts(
        prompt_tokens=prompt, prompt_lengths=lengths.astype(np.int32),
        completions=(rng.integers(1, CONFIG.vocab_size, (n, c)) * mask).astype(np.int32),
        mask=mask, logprobs=rng.normal(-3, 0.1, (n, c)).astype(np.float32),
        sampler_logprobs=rng.normal(-3, 0.1, (n, c)).astype(np.float32),
        ref_logprobs=rng.normal(-3, 0.1, (n, c)).astype(np.float32),
        advantages=rng.normal(size=n).astype(np.float32), rewards=np.zeros(n, np.float32),
        reward_failed=np.zeros(n, bool), reward_components={},
        lengths=mask.sum(1).astype(np.int32),
        finished_by_stop=np.ones(n, bool))


@pytest.mark.parametrize("aggregation", grpo_lib.AGGREGATIONS)
def test_micro_batches_give_the_full_batch_gradient(aggregation):
    batch = jax.tree.map(jnp.asarray, _rollout_batch(np.random.default_rng(0)))
    params = models.init_params(CONFIG, jax.random.key(0))
    results = []
    for micro in (1, 4):
        rl = ml_collections.ConfigDict(dict(algorithm="grpo",
            num_micro_batches=micro, aggregation=aggregation, beta=0.04, eps_low=0.2,
            eps_high=0.28, sampling=dict(temperature=1.0), importance_level="token",
            is_correction="none", is_bound=2.0))
        state = run.TrainState(params=params, opt_state=optax.sgd(1.0).init(params),
                               reference=None, updates=jnp.zeros((), jnp.int32))
        new_state, metrics = grpo.grpo_update(state, batch, model_config=CONFIG,
                                              optimizer=optax.sgd(1.0), rl=rl, nan_policy="stop")
        results.append((new_state.params, metrics["loss"]))
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(results[1][0])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_completion_logprobs_match_a_plain_forward_pass(temperature):
    rng = np.random.default_rng(1)
    batch = _rollout_batch(rng, n=3)
    params = models.init_params(CONFIG, jax.random.key(1))
    logprobs, _ = grpo.completion_logprobs(CONFIG, params, jax.tree.map(jnp.asarray, batch),
                                           temperature)
    for i in range(3):
        prompt = batch.prompt_tokens[i, -batch.prompt_lengths[i]:]
        length = int(batch.mask[i].sum())
        seq = np.concatenate([prompt, batch.completions[i, :length]])[None]
        logits = models.logits(CONFIG, params, jnp.asarray(seq))[0]
        logp = jax.nn.log_softmax(logits / temperature)
        expected = [logp[len(prompt) - 1 + j, seq[0, len(prompt) + j]] for j in range(length)]
        np.testing.assert_allclose(logprobs[i, :length], expected, atol=1e-5)


def sampled_rollouts(temperature: float, top_k=None, top_p=None):
    """(params, SampleOutput, Rollouts of those samples) for 4 prompts × 2 samples of the tiny
    model; the Rollouts carry the sampler's truncated-distribution log-probs."""
    params = models.init_params(CONFIG, jax.random.key(2))
    prompts = [[5, 17, 3], list(range(20, 30)), [9], [40, 41, 42, 43]]
    tokens = np.zeros((4, 12), np.int32)
    for row, ids in enumerate(prompts):
        tokens[row, 12 - len(ids):] = ids
    lengths = np.array([len(p) for p in prompts], np.int32)
    out = sampling.sample_batch(CONFIG, params, tokens, lengths, jax.random.key(0),
                                max_new_tokens=6, n=2, temperature=temperature, top_k=top_k,
                                top_p=top_p)
    batch = _rollout_batch(np.random.default_rng(0), n=8).replace(
        prompt_tokens=np.repeat(tokens, 2, axis=0), prompt_lengths=np.repeat(lengths, 2),
        completions=np.asarray(out.tokens), mask=np.asarray(out.mask, np.float32),
        sampler_logprobs=np.asarray(out.sampled_logprobs))
    return params, out, batch


def test_sampler_logprobs_are_the_trainers_at_the_sampling_temperature():
    """π_old from the sampler equals the trainer's π_θ before any update, at T != 1 and with
    top-k/top-p: the first update's importance ratio is exactly 1."""
    params, out, batch = sampled_rollouts(0.6, top_k=50, top_p=0.9)
    logprobs, _ = grpo.completion_logprobs(CONFIG, params,
                                           jax.tree.map(jnp.asarray, batch.arrays()), 0.6)
    mask = np.asarray(out.mask)
    np.testing.assert_allclose(np.asarray(logprobs)[mask], np.asarray(out.logprobs)[mask],
                               atol=1e-5, rtol=0)


def test_select_groups_keeps_groups_with_a_signal():
    rewards = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0.5, 1, 0.5, 0.5], np.float32)
    np.testing.assert_array_equal(rollouts.informative_groups(rewards, 3),
                                  [False, False, True, True])


@pytest.mark.parametrize("key,value,message", [
    ("rl.num_generations", 1, "rl.num_generations=1"),
    ("rl.beta", -0.1, "rl.beta=-0.1"),
    ("rl.aggregation", "mean", "sequence_mean"),
    ("rl.prompts_per_step", 3, "rl.prompts_per_step=3"),
    ("rl.prompts_per_step", 4, "multiple of the mesh"),
    ("train.nan_policy", "ignore", "stop"),
    ("train.profile_steps", -1, "train.profile_steps=-1"),
    ("train.profile_start", 0, "train.profile_start=0"),
    ("rl.batching", "dynamic", "rl.batching='dynamic'"),
    ("rl.num_slots", -1, "rl.num_slots=-1"),
])
def test_bad_config_values_are_named(key, value, message):
    config = r1_zero.get_config("tiny")
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        grpo.validate_config(config, mesh_batch=8)



def test_continuous_slots_must_divide_over_the_mesh():
    config = r1_zero.get_config("tiny")
    config.rl.update(batching="continuous", num_slots=12)
    with pytest.raises(ValueError, match=r"rl\.num_slots=12.*multiple of the mesh's batch size"):
        grpo.validate_config(config, mesh_batch=8)


def test_rollouts_are_the_same_with_continuous_batching_on_the_trainers_mesh():
    """rollouts.sample, as GRPO calls it: 4 slots for 16 rollouts of varied lengths on a
    (data 4, tensor 2) mesh give static batching's tokens (logprobs to float32 rounding)."""
    import types

    from r1jax import sharding
    config = r1_zero.get_config("tiny")
    config.rl.update(num_generations=4, max_new_tokens=12, num_slots=4)
    mesh = sharding.make_mesh({"data": 4, "tensor": 2})
    params = sharding.init_params_sharded(CONFIG, jax.random.key(5), mesh, sharding.DEFAULT_RULES)
    run_ = types.SimpleNamespace(config=config, model_config=CONFIG, mesh=mesh,
                                 rules=sharding.DEFAULT_RULES, stop_tokens=tuple(range(100, 130)))
    rng = np.random.default_rng(6)
    tokens, lengths = sampling.pad_prompts(
        [rng.integers(1, 256, n).tolist() for n in (3, 9, 5, 12)], 16)
    static = rollouts.sample(run_, params, tokens, lengths, jax.random.key(7))
    config.rl.batching = "continuous"
    continuous = rollouts.sample(run_, params, tokens, lengths, jax.random.key(7))
    assert len(set(static.lengths.tolist())) > 3  # lengths vary, so slots are refilled
    for field in ("tokens", "mask", "lengths", "finished_by_stop"):
        np.testing.assert_array_equal(getattr(continuous, field), getattr(static, field))
    np.testing.assert_allclose(continuous.logprobs, static.logprobs, atol=1e-5)
    np.testing.assert_allclose(continuous.sampled_logprobs, static.sampled_logprobs, atol=1e-5)


def test_the_update_makes_no_implicit_host_device_transfer():
    """With the state and batch on device, a jitted GRPO update copies nothing implicitly."""
    params = models.init_params(CONFIG, jax.random.key(3))
    optimizer = optax.adam(1e-3)
    state = jax.device_put(run.TrainState(params=params, opt_state=optimizer.init(params),
                                          reference=None, updates=jnp.zeros((), jnp.int32)))
    batch = jax.device_put(_rollout_batch(np.random.default_rng(3)).arrays())
    rl = ml_collections.ConfigDict(dict(algorithm="grpo",
        num_micro_batches=2, aggregation="token_mean", beta=0.04, eps_low=0.2, eps_high=0.28,
        sampling=dict(temperature=1.0),
        importance_level="token", is_correction="none", is_bound=2.0))
    update = jax.jit(lambda s, b: grpo.grpo_update(s, b, model_config=CONFIG, optimizer=optimizer,
                                                   rl=rl, nan_policy="skip"))
    update(state, batch)  # compile outside the guard: tracing may place constants
    with jax.transfer_guard("disallow"):
        new_state, metrics = update(state, batch)
    assert int(jax.device_get(new_state.updates)) == 1


def test_rollouts_concatenate_take_and_split_keep_texts_with_their_rows():
    rng = np.random.default_rng(4)
    a = _rollout_batch(rng, n=4).replace(texts={0: "a0", 2: "a2"}, prompts={0: "p", 2: "p"},
                                          reward_components={"r": np.arange(4.0)})
    b = _rollout_batch(rng, n=4).replace(texts={1: "b1"}, prompts={1: "q"},
                                          reward_components={"r": np.arange(4.0, 8.0)})
    joined = Rollouts.concatenate([a, b])
    assert joined.num_rows == 8 and joined.texts == {0: "a0", 2: "a2", 5: "b1"}
    np.testing.assert_array_equal(joined.completions[4:], b.completions)
    np.testing.assert_array_equal(joined.reward_components["r"], np.arange(8.0))
    taken = joined.take(np.array([5, 0]))
    assert taken.texts == {0: "b1", 1: "a0"} and taken.prompts == {0: "q", 1: "p"}
    np.testing.assert_array_equal(taken.completions, joined.completions[[5, 0]])
    halves = joined.split(2)
    assert [h.texts for h in halves] == [{0: "a0", 2: "a2"}, {1: "b1"}]
