"""Continuous batching gives every sample exactly what static batching, or sampling it alone, gives.

A sample's draws depend on (seed, prompt id, sample index, token index) only, so slots, batch
sizes and orders must not change a single token. Logprobs agree to float32 rounding: padded
widths and attention windows change the order of a few sums.
"""
import jax
import numpy as np
import pytest

from r1jax import models, sampling, sharding

LOGPROB_TOLERANCE = 1e-5
# Prompts of 1 to 29 tokens with budgets of 1 to 24 new tokens, and stop tokens common enough
# (about 1 draw in 10 on this random model) that completions end at every length.
RANDOM = np.random.default_rng(0)
PROMPTS = [RANDOM.integers(1, 256, length).tolist() for length in (5, 29, 1, 12, 3, 20, 8)]
BUDGETS = [24, 7, 18, 1, 24, 12, 20]
STOPS = tuple(range(100, 126))
SAMPLED = dict(max_new_tokens=BUDGETS, temperature=1.0, top_k=200, n=3, stop_tokens=STOPS,
               seed=5)


@pytest.fixture(scope="module")
def llama():
    config = models.preset("tiny_llama")
    return config, models.init_params(config, jax.random.key(1))


@pytest.fixture(scope="module")
def static(llama):
    return sampling.generate(*llama, PROMPTS, batch_size=8, **SAMPLED)


def _assert_same(a, b):
    assert a.tokens == b.tokens
    assert a.finish_reasons == b.finish_reasons
    for x, y in zip(a.logprobs, b.logprobs):
        np.testing.assert_allclose(x, y, atol=LOGPROB_TOLERANCE)


def test_continuous_matches_static_with_more_samples_than_slots(llama, static):
    lengths = [len(t) for t in static.tokens]
    assert len(set(lengths)) > 5 and set(static.finish_reasons) == {"stop", "length"}
    continuous = sampling.generate(*llama, PROMPTS, batch_size=4, batching="continuous",
                                   **SAMPLED)
    _assert_same(continuous, static)


@pytest.mark.parametrize("preset", ["tiny_deepseek_v3", "tiny_qwen3_moe"])
def test_continuous_matches_static_for_other_caches_and_layer_stacks(preset):
    """DeepSeek-V3: an MLA cache (a latent and a RoPE key instead of k and v) and two layer
    stacks (dense, then MoE); Qwen3-MoE: k and v beside MoE layers."""
    config = models.preset(preset)
    params = models.init_params(config, jax.random.key(2))
    settings = dict(SAMPLED, max_new_tokens=BUDGETS[:4], n=2)
    static = sampling.generate(config, params, PROMPTS[:4], batch_size=8, **settings)
    continuous = sampling.generate(config, params, PROMPTS[:4], batch_size=3,
                                   batching="continuous", **settings)
    assert len({len(t) for t in static.tokens}) > 2
    _assert_same(continuous, static)


def test_a_sample_drawn_alone_is_the_same(llama, static):
    """sample_batch on one prompt, with its id, gives what both batchings gave for it."""
    config, params = llama
    n = SAMPLED["n"]
    for i in (1, 4):
        tokens, lengths = sampling.pad_prompts([PROMPTS[i]], 32)
        out = sampling.sample_batch(
            config, params, tokens, lengths, jax.random.key(SAMPLED["seed"]),
            max_new_tokens=max(BUDGETS), n=n, temperature=1.0, top_k=200, stop_tokens=STOPS,
            token_limits=np.array([BUDGETS[i]]), prompt_ids=np.array([i]))
        for j in range(n):
            length = int(out.lengths[j])
            assert np.asarray(out.tokens[j, :length]).tolist() == static.tokens[i * n + j]
            np.testing.assert_allclose(out.logprobs[j, :length], static.logprobs[i * n + j],
                                       atol=LOGPROB_TOLERANCE)


def test_sample_continuous_matches_sample_batch_greedy(llama):
    """The drop-in for sample_batch (GRPO's rollouts): the same SampleOutput."""
    config, params = llama
    tokens, lengths = sampling.pad_prompts(PROMPTS, 32)
    args = (config, params, tokens, lengths, jax.random.key(0))
    settings = dict(max_new_tokens=24, n=2, stop_tokens=STOPS,
                    token_limits=np.array(BUDGETS, np.int32))
    static = jax.device_get(sampling.sample_batch(*args, **settings))
    continuous = sampling.sample_continuous(*args, num_slots=3, **settings)
    for field in ("tokens", "mask", "lengths", "finished_by_stop"):
        np.testing.assert_array_equal(getattr(continuous, field), getattr(static, field))
    np.testing.assert_allclose(continuous.logprobs, static.logprobs, atol=LOGPROB_TOLERANCE)


@pytest.mark.parametrize("shape", [{"data": 2, "fsdp": 2, "tensor": 2}, {"fsdp": 4, "tensor": 2}])
def test_continuous_on_a_mesh_matches_static_on_one_device(llama, static, shape):
    """Slots split over the batch axes, the model over tensor: the same samples as one device.

    8 slots over 4 batch shards, so refills land in every shard and rows change hands."""
    mesh = sharding.make_mesh(shape)
    config, params = llama
    sharded = sharding.shard_params(config, params, mesh, sharding.DEFAULT_RULES)
    out = sampling.generate(config, sharded, PROMPTS, batch_size=8, batching="continuous",
                            mesh=mesh, **SAMPLED)
    _assert_same(out, static)


def test_sample_continuous_on_a_mesh_matches_sample_batch(llama):
    """GRPO's drop-in on the trainer's mesh: whole host arrays on every process, as
    sample_batch's gathered output."""
    config, params = llama
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    tokens, lengths = sampling.pad_prompts(PROMPTS[:4], 32)
    settings = dict(max_new_tokens=16, n=3, temperature=1.0, stop_tokens=STOPS)
    sharded = sharding.shard_params(config, params, mesh, sharding.DEFAULT_RULES)
    static = sharding.all_rows(sampling.sample_batch(config, sharded, tokens, lengths,
                                                     jax.random.key(2), mesh=mesh, **settings))
    continuous = sampling.sample_continuous(config, sharded, tokens, lengths, jax.random.key(2),
                                            num_slots=4, mesh=mesh, **settings)
    for field in ("tokens", "mask", "lengths", "finished_by_stop"):
        np.testing.assert_array_equal(getattr(continuous, field), getattr(static, field))
    np.testing.assert_allclose(continuous.logprobs, static.logprobs, atol=LOGPROB_TOLERANCE)


def test_the_draining_tail_moves_to_fewer_slots(llama, static, monkeypatch):
    """Once no sample waits, the busy slots move to half as many rows whenever at most half are
    busy (4 -> 2 here), and the samples do not change."""
    from r1jax.sampling import continuous
    sizes = []
    programs = continuous._programs
    monkeypatch.setattr(continuous, "_programs",
                        lambda *args: sizes.append(args[6]) or programs(*args))
    out = sampling.generate(*llama, PROMPTS, batch_size=4, batching="continuous", **SAMPLED)
    assert sizes[:2] == [4, 2] and all(b == a // 2 for a, b in zip(sizes, sizes[1:]))
    _assert_same(out, static)


@pytest.mark.parametrize("shape", [None, {"data": 2, "fsdp": 2, "tensor": 2}])
def test_slots_widen_their_cache_as_samples_grow(llama, shape, monkeypatch):
    """Completions past the first attention window (prompt + 128 columns): the CPU slots keep a
    per-layer cache that window wide and widen it, on one device and on a mesh, drawing what
    static batching draws."""
    from r1jax.sampling import continuous
    widened = []
    widen = continuous.widen
    monkeypatch.setattr(continuous, "widen",
                        lambda slots, width: widened.append(width) or widen(slots, width))
    config, params = llama
    mesh = None if shape is None else sharding.make_mesh(shape)
    settings = dict(max_new_tokens=[220, 150, 40], temperature=1.0, top_k=200, n=2,
                    stop_tokens=(7,), seed=3)  # A rare stop: most samples run to their budget.
    static = sampling.generate(config, params, PROMPTS[:3], batch_size=8, **settings)
    if mesh is not None:
        params = sharding.shard_params(config, params, mesh, sharding.DEFAULT_RULES)
    out = sampling.generate(config, params, PROMPTS[:3], batch_size=2 if mesh is None else 4,
                            batching="continuous", mesh=mesh, **settings)
    assert max(len(t) for t in static.tokens) > 128 and len(widened) == 1
    _assert_same(out, static)


@pytest.mark.parametrize("kwargs,message", [
    (dict(batching="dynamic"), "batching must be one of"),
    (dict(batching="continuous", batch_size=6, mesh=sharding.make_mesh({"data": 4, "tensor": 2})),
     r"decode slots \(6\) must divide evenly over the mesh's batch axes"),
    (dict(batching="continuous", batch_size=0), "batch_size must be an int >= 1"),
])
def test_bad_batching_settings(llama, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sampling.generate(*llama, PROMPTS, max_new_tokens=4, **kwargs)


def test_a_prompt_is_prefilled_once_for_all_its_samples():
    """The prompt store: samples start at different times (here 3 samples of each prompt, 4
    slots freeing one or two at a time), yet each prompt is prefilled once, and a row that a
    starting sample still needs is never overwritten."""
    from r1jax.sampling import continuous
    prompts = [[1, 2], [3], [4, 5, 6], [7]]
    prefilled, rows_of = [], {}

    def store_fn(params, store, logits, tokens, lengths, store_rows):
        for row, length, prompt_row in zip(tokens.tolist(), lengths.tolist(), store_rows):
            if prompt_row < 4:  # Not padding.
                prefilled.append(row[len(row) - length:])
                rows_of[int(prompt_row)] = row[len(row) - length:]
        return store, logits

    stored = {}
    for starting in ([0, 0, 0, 1], [1], [1, 2], [2], [2, 3], [3, 3]):
        _, stored = continuous._store(store_fn, None, (None, None), prompts, starting, stored, 4, 4)
        assert all(rows_of[stored[p]] == prompts[p] for p in starting)
    assert prefilled == prompts
