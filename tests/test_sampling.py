"""The sampler on tiny random models: cache correctness, logprobs, strategies, groups, errors.

Parity with `transformers` generate lives in test_sampling_parity.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import models, sampling, sharding
from r1jax.sampling import sampler, strategies

LOGIT_TOLERANCE = 1e-4  # float32 cached decoding vs one forward pass over the whole sequence.
# Prompts of different lengths in one left-padded batch (token 0 is padding's filler only).
PROMPTS = [[5, 17, 3], list(range(20, 41)), [9], [100, 101, 102, 103, 104, 105, 106]]
# A statistical tolerance: each sampled frequency within 5 standard errors of its target
# (a false alarm about once in 3 million per token; the seeds are fixed anyway).
SIGMAS = 5.0


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_qwen2", "tiny_qwen3"])
def model(request):
    config = models.preset(request.param)
    return config, models.init_params(config, jax.random.key(1))


@pytest.fixture(scope="module")
def llama():
    config = models.preset("tiny_llama")
    return config, models.init_params(config, jax.random.key(1))


REFERENCE_WIDTH = 64


_forward_pass = jax.jit(models.logits, static_argnums=0)


def _full_logits(config, params, sequences):
    """float32[T_i, V] logits of each unpadded sequence by one forward pass without a cache.

    The sequences are right-padded into one batch: attention is causal, so padding after a
    sequence cannot change its logits, and one compilation serves every test.
    """
    tokens = np.zeros((len(sequences), REFERENCE_WIDTH), np.int32)
    for row, ids in enumerate(sequences):
        tokens[row, :len(ids)] = ids
    logits = np.asarray(_forward_pass(config, params, tokens))
    return [logits[row, :len(ids)] for row, ids in enumerate(sequences)]


# ----------------------------------------------------------------------------- cache correctness


def test_cached_decoding_matches_full_forward(model):
    config, params = model
    steps = 6
    tokens, lengths = sampling.pad_prompts(PROMPTS, 24)
    logits, cache = jax.jit(sampler.prefill, static_argnums=(0, 4))(
        config, params, tokens, lengths, 24 + steps)
    fed = np.random.default_rng(0).integers(0, config.vocab_size, (len(PROMPTS), steps), np.int32)
    step = jax.jit(sampler.decode_step, static_argnums=0)
    cached = [np.asarray(logits)]
    for t in range(steps):
        logits, cache = step(config, params, fed[:, t], lengths + t, cache)
        cached.append(np.asarray(logits))
    cached = np.stack(cached, axis=1)  # [B, steps + 1, V]
    full = _full_logits(config, params, [p + f.tolist() for p, f in zip(PROMPTS, fed)])
    for row, prompt in enumerate(PROMPTS):
        np.testing.assert_allclose(cached[row], full[row][len(prompt) - 1:],
                                   atol=LOGIT_TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_deepseek_v3", "tiny_qwen3_moe"])
def test_unstacked_layers_compute_the_same_model(name):
    """The decode loop's per-layer params (`unstack_layers`) are the same model as the stacks:
    dense, MLA with dense-then-MoE stacks, and MoE; without a cache, and through one."""
    config = models.preset(name)
    params = models.init_params(config, jax.random.key(2))
    unstacked = models.unstack_layers(config, params)
    stacks = [stack for stack, _, _ in models.transformer.layer_stacks(config)]
    assert not set(stacks) & set(unstacked)
    assert sum(name.rsplit("_", 1)[0] in stacks for name in unstacked) == config.num_layers
    tokens, lengths = sampling.pad_prompts(PROMPTS, 24)
    positions, segment_ids = sampler.prompt_positions(jnp.asarray(lengths), 24)
    forward = jax.jit(models.forward, static_argnums=0)
    np.testing.assert_allclose(forward(config, unstacked, tokens, positions, segment_ids)[0],
                               forward(config, params, tokens, positions, segment_ids)[0],
                               atol=1e-5, rtol=0)
    prefill = jax.jit(sampler.prefill, static_argnums=(0, 4))
    step = jax.jit(sampler.decode_step, static_argnums=0)
    fed = np.arange(len(PROMPTS), dtype=np.int32) + 7
    outs = [step(config, p, fed, lengths, prefill(config, p, tokens, lengths, 26)[1])
            for p in (params, unstacked)]
    for a, b in zip(*(jax.tree.leaves(out) for out in outs)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_deepseek_v3", "tiny_qwen3_moe"])
def test_per_layer_cache_decodes_the_same_model(name):
    """The CPU decode layout (per-layer weights, a per-layer cache exactly a window wide, and
    `single_query_attention`) gives the stacked path's logits, and writes into its layers what the
    stacked path wrote into the stack: dense, MLA and MoE."""
    config = models.preset(name)
    params = models.init_params(config, jax.random.key(3))
    unstacked = models.unstack_layers(config, params)
    tokens, lengths = sampling.pad_prompts(PROMPTS, 24)
    _, cache = jax.jit(sampler.prefill, static_argnums=(0, 4))(config, params, tokens, lengths, 40)
    width = 28  # Room for the 4 steps below, narrower than the cache's 40 columns.
    per_layer = models.transformer.per_layer_cache(cache, width)
    assert all(len(entry) == config.num_layers and entry[0].shape[:2] == (len(PROMPTS), width)
               for entry in models.transformer.layer_entries(per_layer).values())
    step = jax.jit(sampler.decode_step, static_argnums=(0, 5))
    stacked = cache
    for t in range(4):
        fed = np.arange(len(PROMPTS), dtype=np.int32) + 7 * t
        expected, stacked = step(config, params, fed, lengths + t, stacked, width)
        logits, per_layer = step(config, unstacked, fed, lengths + t, per_layer, None)
        np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)
    written = models.transformer.per_layer_cache(stacked, width)
    # The two paths fuse differently, so later layers' entries differ in float32 rounding (1.3e-6
    # for the MoE model on an AVX-512 CPU): the logits' tolerance, not a tighter one.
    for a, b in zip(jax.tree.leaves(per_layer), jax.tree.leaves(written)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_per_layer_cache_widens_with_empty_columns():
    config = models.preset("tiny_llama")
    cache = {**models.init_cache(config, 2, 6), "valid": jnp.ones((2, 6), bool)}
    cache["k"] = cache["k"] + 1.0
    wide = models.transformer.per_layer_cache(models.transformer.per_layer_cache(cache, 4), 9)
    assert wide["valid"].shape == (2, 9)
    assert bool(wide["valid"][:, :4].all()) and not bool(wide["valid"][:, 4:].any())
    assert float(wide["k"][0][:, :4].min()) == 1.0 and float(abs(wide["k"][0][:, 4:]).max()) == 0


GREEDY = dict(max_new_tokens=8)
# Several tests share these settings, so their sampler compiles once.
SAMPLED = dict(max_new_tokens=8, temperature=0.7, top_k=20, top_p=0.95, n=4)
WIDTH = 32


@pytest.fixture(scope="module")
def greedy(llama):
    return sampling.generate(*llama, PROMPTS, **GREEDY)


@pytest.fixture(scope="module")
def sampled(llama):
    tokens, lengths = sampling.pad_prompts(PROMPTS, WIDTH)
    return sampling.sample_batch(*llama, tokens, lengths, jax.random.key(7), **SAMPLED)


def test_greedy_tokens_and_logprobs_match_a_forward_pass(model):
    config, params = model
    out = sampling.generate(config, params, PROMPTS, **GREEDY)
    fulls = _full_logits(config, params, [p + c for p, c in zip(PROMPTS, out.tokens)])
    for prompt, completion, logprobs, full in zip(PROMPTS, out.tokens, out.logprobs, fulls):
        full = full[len(prompt) - 1:-1]
        assert completion == full.argmax(-1).tolist()
        expected = jax.nn.log_softmax(full)[np.arange(len(completion)), completion]
        np.testing.assert_allclose(logprobs, expected, atol=LOGIT_TOLERANCE, rtol=0)


def test_sampled_logprobs_are_the_tempered_model_distribution(llama, sampled):
    """Sampled at temperature 0.7 with top-k and top-p, logprobs are those of the tempered,
    untruncated model (log softmax of logits / 0.7); rows are prompt-major."""
    config, params = llama
    n = SAMPLED["n"]
    prompts = [p for p in PROMPTS for _ in range(n)]
    completions = np.asarray(sampled.tokens).tolist()
    fulls = _full_logits(config, params, [p + c for p, c in zip(prompts, completions)])
    for prompt, completion, logprobs, full in zip(prompts, completions, sampled.logprobs, fulls):
        full = full[len(prompt) - 1:-1] / SAMPLED["temperature"]
        expected = jax.nn.log_softmax(full)[np.arange(len(completion)), completion]
        np.testing.assert_allclose(logprobs, expected, atol=LOGIT_TOLERANCE, rtol=0)


def test_padding_width_does_not_change_results(llama, greedy, sampled):
    config, params = llama
    wider, lengths = sampling.pad_prompts(PROMPTS, WIDTH + 8)
    out = sampling.sample_batch(config, params, wider, lengths, jax.random.key(7), **SAMPLED)
    np.testing.assert_array_equal(out.tokens, sampled.tokens)
    np.testing.assert_allclose(out.logprobs, sampled.logprobs, atol=1e-5)
    # A prompt alone, in a narrower bucket, decodes to the same greedy tokens as in the batch.
    alone = sampling.generate(config, params, [PROMPTS[0]], **GREEDY)
    assert alone.tokens[0] == greedy.tokens[0]
    np.testing.assert_allclose(alone.logprobs[0], greedy.logprobs[0], atol=1e-5)


def test_growing_attention_windows_change_nothing(llama, sampled):
    """Decoding in segments whose attention windows grow (here from 2 slots past the prompt:
    windows of 34 and 36 slots, then the whole cache, 39) samples what attending to the whole
    cache at every step does."""
    assert sampler.decode_windows(WIDTH, 8, 2) == ((2, 34), (4, 36), (7, 39))
    tokens, lengths = sampling.pad_prompts(PROMPTS, WIDTH)
    for window in (2, None):
        out = sampling.sample_batch(*llama, tokens, lengths, jax.random.key(7),
                                    decode_window=window, **SAMPLED)
        np.testing.assert_array_equal(out.tokens, sampled.tokens)
        np.testing.assert_allclose(out.logprobs, sampled.logprobs, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="decode_window"):
        sampling.sample_batch(*llama, tokens, lengths, jax.random.key(7), decode_window=0,
                              **SAMPLED)


# ----------------------------------------------------------------------------- outputs


def test_outputs_stop_tokens_and_budgets(llama, greedy):
    config, params = llama
    stop = greedy.tokens[0][2]  # The third greedy token of prompt 0 becomes a stop token.
    budgets = [8, 8, 3, 5]
    tokens, lengths = sampling.pad_prompts(PROMPTS, WIDTH)
    out = sampling.sample_batch(config, params, tokens, lengths, jax.random.key(0),
                                stop_tokens=[stop], token_limits=np.array(budgets, np.int32),
                                **GREEDY)
    mask = np.asarray(out.mask)
    for row, (full, budget) in enumerate(zip(greedy.tokens, budgets)):
        end = next((i + 1 for i, t in enumerate(full[:budget]) if t == stop), None)
        assert out.lengths[row] == (end or budget)
        assert np.asarray(out.tokens)[row, :out.lengths[row]].tolist() == full[:end or budget]
        assert bool(out.finished_by_stop[row]) == (end is not None)
    assert out.finished_by_stop[0] and out.lengths[0] <= 3
    assert out.tokens.shape == out.logprobs.shape == mask.shape == (4, 8)
    np.testing.assert_array_equal(mask.sum(-1), out.lengths)
    assert (np.asarray(out.tokens)[~mask] == 0).all()
    assert (np.asarray(out.logprobs)[~mask] == 0).all()
    assert (np.asarray(out.logprobs)[mask] < 0).all()


def test_generate_per_prompt_budgets_and_finish_reasons(llama, greedy):
    config, params = llama
    stop = greedy.tokens[0][2]
    out = sampling.generate(config, params, PROMPTS, max_new_tokens=[8, 8, 3, 5],
                            stop_tokens=[stop])
    for full, tokens, reason, budget in zip(greedy.tokens, out.tokens, out.finish_reasons,
                                            [8, 8, 3, 5]):
        end = next((i + 1 for i, t in enumerate(full[:budget]) if t == stop), None)
        assert tokens == full[:end or budget]
        assert reason == ("stop" if end else "length")
    assert [len(l) for l in out.logprobs] == [len(t) for t in out.tokens]


def test_group_samples_are_independent(sampled):
    """The n completions of a prompt share its prefill but not their random draws."""
    n = SAMPLED["n"]
    completions = [tuple(t) for t in np.asarray(sampled.tokens).tolist()]
    for group in range(len(PROMPTS)):
        assert len(set(completions[group * n:(group + 1) * n])) == n


def test_same_seed_same_samples(llama, sampled):
    config, params = llama
    tokens, lengths = sampling.pad_prompts(PROMPTS, WIDTH)
    again = sampling.sample_batch(config, params, tokens, lengths, jax.random.key(7), **SAMPLED)
    other = sampling.sample_batch(config, params, tokens, lengths, jax.random.key(8), **SAMPLED)
    np.testing.assert_array_equal(again.tokens, sampled.tokens)
    np.testing.assert_array_equal(again.logprobs, sampled.logprobs)
    assert not np.array_equal(other.tokens, sampled.tokens)
    a = sampling.generate(config, params, PROMPTS, seed=3, **SAMPLED)
    b = sampling.generate(config, params, PROMPTS, seed=3, **SAMPLED)
    assert a == b


# ----------------------------------------------------------------------------- strategies


def _target(logits, temperature, top_k=None, top_p=None):
    """The distribution a strategy should sample, computed independently in numpy."""
    z = np.asarray(logits, np.float64) / temperature
    order = np.argsort(-z)
    keep = np.zeros(z.shape, bool)
    keep[order[:top_k or len(z)]] = True
    if top_p is not None:
        probs = np.where(keep, np.exp(z - z.max()), 0.0)
        probs /= probs.sum()
        mass_above = np.cumsum(probs[order]) - probs[order]
        keep[order[mass_above >= top_p]] = False
    probs = np.where(keep, np.exp(z - z.max()), 0.0)
    return probs / probs.sum()


def _frequencies(logits, strategy, draws=40_000, seed=0):
    rows = jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (draws, len(logits)))
    keys = jax.random.split(jax.random.key(seed), draws)
    tokens = np.asarray(strategies.sample(rows, keys, strategy))
    return np.bincount(tokens, minlength=len(logits)) / draws


def test_argmax_matches_jnp_argmax_and_categorical():
    logits = jax.random.normal(jax.random.key(0), (64, 1000))
    logits = logits.at[3, [10, 20]].set(9.0)  # A tie: the first index wins, as in jnp.argmax.
    np.testing.assert_array_equal(strategies.argmax(logits), jnp.argmax(logits, axis=-1))
    strategy = strategies.Strategy(temperature=1.0)
    keys = jax.random.split(jax.random.key(1), len(logits))  # Row i draws with keys[i].
    np.testing.assert_array_equal(strategies.sample(logits, keys, strategy),
                                  jax.vmap(jax.random.categorical)(keys, logits))


def _kept_by_sorting(row, k, p):
    """bool[V]: the tokens top-k then top-p keep, by sorting (ties with the last kept are kept)."""
    kept = np.isfinite(row)
    ranked = -np.sort(-row)
    if k is not None:
        kept &= row >= ranked[k - 1]
    if p is not None:
        ranked = -np.sort(-np.where(kept, row, -np.inf))
        probs = np.exp(ranked - ranked[0])
        probs /= probs.sum()
        mass_above = np.cumsum(probs) - probs
        kept &= row >= ranked[mass_above < p].min()
    return kept


@pytest.mark.parametrize("k,p", [(1, None), (7, None), (300, None), (None, 0.3), (None, 0.9),
                                 (None, 0.999), (50, 0.8)])
def test_top_k_top_p_keep_what_sorting_keeps(k, p):
    """The threshold searches keep exactly the tokens a full sort would (ties and -inf included)."""
    logits = np.array(jax.random.normal(jax.random.key(3), (8, 1000)) * 3)
    logits[0, :5] = 9.0  # Ties at the top.
    logits[1, 100:] = -np.inf  # Only 100 candidates.
    ours = strategies.sampling_logits(jnp.asarray(logits), strategies.Strategy(1.0, k, p))
    for row, kept in zip(logits, np.isfinite(np.asarray(ours))):
        np.testing.assert_array_equal(kept, _kept_by_sorting(row, k, p))


FIXED_LOGITS = [2.0, 1.5, 1.0, 0.8, 0.0, -0.5, -1.0, -3.0]


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, None, None), (0.5, None, None), (2.0, None, None), (1.0, 3, None), (1.0, None, 0.8),
    (0.7, 5, 0.9), (1.0, 1, None), (1.0, None, 0.01)])
def test_sampled_frequencies_match_target(temperature, top_k, top_p):
    draws = 40_000
    target = _target(FIXED_LOGITS, temperature, top_k, top_p)
    freq = _frequencies(FIXED_LOGITS, strategies.Strategy(temperature, top_k, top_p), draws)
    assert (freq[target == 0] == 0).all()  # Truncated tokens are never drawn.
    tolerance = SIGMAS * np.sqrt(target * (1 - target) / draws)
    assert (np.abs(freq - target) <= tolerance).all(), (freq, target)


def test_sampled_first_tokens_follow_the_model(llama):
    """End to end: 4000 samples of one prompt's first token vs the model's own distribution."""
    config, params = llama
    draws, temperature, top_k = 4000, 0.8, 12
    out = sampling.sample_batch(config, params, np.array([PROMPTS[1]], np.int32),
                                np.array([len(PROMPTS[1])], np.int32), jax.random.key(5),
                                max_new_tokens=1, n=draws, temperature=temperature, top_k=top_k)
    logits = _full_logits(config, params, [PROMPTS[1]])[0][-1]
    target = _target(logits, temperature, top_k)
    freq = np.bincount(np.asarray(out.tokens)[:, 0], minlength=config.vocab_size) / draws
    assert (freq[target == 0] == 0).all()
    assert (np.abs(freq - target) <= SIGMAS * np.sqrt(target * (1 - target) / draws)).all()


# ----------------------------------------------------------------------------- sharding


def test_sharded_sampling_matches_single_device(llama, sampled):
    """Batch over data×fsdp, heads/vocab over tensor, cache sharded: same samples."""
    config, params = llama
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    tokens, lengths = sampling.pad_prompts(PROMPTS, WIDTH)
    out = sampling.sample_batch(config, sharding.shard_params(config, params, mesh), tokens,
                                lengths, jax.random.key(7), mesh=mesh,
                                rules=sharding.DEFAULT_RULES, **SAMPLED)
    np.testing.assert_array_equal(out.tokens, sampled.tokens)
    np.testing.assert_allclose(out.logprobs, sampled.logprobs, atol=1e-5)
    np.testing.assert_array_equal(out.lengths, sampled.lengths)
    assert out.tokens.sharding.is_equivalent_to(sharding.batch_sharding(mesh, 2), 2)


def test_sharded_batch_must_divide_the_mesh(llama):
    config, params = llama
    mesh = sharding.make_mesh({"data": 4, "fsdp": 1, "tensor": 2})
    tokens, lengths = sampling.pad_prompts(PROMPTS[:3], 24)
    with pytest.raises(ValueError, match="divide evenly"):
        sampling.sample_batch(config, params, tokens, lengths, jax.random.key(0),
                              max_new_tokens=4, mesh=mesh)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("prompts,kwargs,message", [
    ([[1, 2], []], {}, "prompts\\[1\\] is empty"),
    ([[1] * 250], {}, "more than the model's context"),
    ([[1, 2]], dict(n=0), "n \\(completions per prompt\\) must be an int >= 1"),
    ([[1, 2]], dict(stop_tokens=[2, 256]), "Stop tokens \\[256\\] lie outside the vocabulary"),
    ([[1, 2]], dict(stop_tokens=[-1]), "outside the vocabulary"),
    ([[1, 300]], {}, "outside the vocabulary \\[0, 256\\)"),
    ([1, 2, 3], {}, "list of token-id lists"),
    ("hello", {}, "list of token-id lists"),
    ([], {}, "non-empty list"),
    ([[1, 2]], dict(max_new_tokens=0), "max_new_tokens must be ints >= 1"),
    ([[1, 2]], dict(temperature=-1.0), "temperature must be >= 0"),
    ([[1, 2]], dict(temperature=1.0, top_k=0), "top_k must be in"),
    ([[1, 2]], dict(temperature=1.0, top_p=0.0), "top_p must be in"),
])
def test_bad_input_gets_a_clear_error(llama, prompts, kwargs, message):
    config, params = llama
    kwargs = {"max_new_tokens": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        sampling.generate(config, params, prompts, **kwargs)


def test_sample_batch_bad_input(llama):
    config, params = llama
    tokens, lengths = sampling.pad_prompts(PROMPTS, 24)
    rng = jax.random.key(0)
    with pytest.raises(ValueError, match="an empty prompt"):
        sampling.sample_batch(config, params, tokens, np.array([3, 0, 1, 7]), rng,
                              max_new_tokens=4)
    with pytest.raises(ValueError, match="context"):
        sampling.sample_batch(config, params, tokens, lengths, rng, max_new_tokens=250)
    with pytest.raises(ValueError, match="int32\\[B, P\\]"):
        sampling.sample_batch(config, params, tokens[0], lengths, rng, max_new_tokens=4)
    with pytest.raises(ValueError, match="token_limits"):
        sampling.sample_batch(config, params, tokens, lengths, rng, max_new_tokens=4,
                              token_limits=np.array([1, 2, 5, 4]))
