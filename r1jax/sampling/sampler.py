"""The jitted sampler: one prefill per prompt, then a `while_loop` decode over an explicit KV cache.

    prompts int32[B, P] (left-padded)
      -> prefill: the prompt is run once, into a cache of P + max_new_tokens - 1 slots
      -> the cache and the last-position logits are repeated n times (one prefill per group)
      -> while any sequence is unfinished and the budget is not spent:
             sample a token per row, record its logprob, feed it back through the cache
      -> SampleOutput, rows prompt-major: the n completions of prompt 0 first.

Attention reads only the part of the cache decoding has reached: the while_loop runs in a few
segments whose attention windows double (P + 32, P + 64, ... slots, up to the whole cache), so
a step early in a long budget does not pay for the empty slots after it (see `decode_windows`).

Left padding lets the whole batch share one cache write index (see `models.init_cache`): every
row's last prompt token sits in column P - 1 and every row's t-th new token in slot P + t. Padding
slots are marked invalid, so nothing attends to them, and positions count real tokens only, so a
padded prompt is computed exactly as an unpadded one.

Everything from prefill to the last token is one XLA program, so the cache never leaves the device
and the loop updates it in place (a while_loop's carry is aliased from one iteration to the next,
which is what donating it between separately jitted steps would buy). Parameters are arguments,
never closed over: the GRPO trainer passes new ones every step without recompiling.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from r1jax import models, sharding
from r1jax.losses import logprobs as logprobs_lib
from r1jax.sampling import strategies
from r1jax.sampling.strategies import Strategy


# Slots past the prompt the first decode segment attends to. Small, because a CPU decode step's
# attention costs in proportion to its window (README, Sampling); each window is one more
# compiled copy of the step.
DECODE_WINDOW = 32


@flax.struct.dataclass
class SampleOutput:
    """Completions, N = B * n rows, prompt-major.

    Attributes:
      tokens: int32[N, M] sampled tokens, 0 after the end of each completion.
      logprobs: float32[N, M] log-probability of each sampled token under the model at the
        sampling temperature (greedy: temperature 1), not truncated by top-k/top-p: the
        policy GRPO's ratio compares with, the trainer's. 0 where `mask` is False.
      sampled_logprobs: float32[N, M] log-probability of each sampled token under the
        distribution it was actually drawn from: the tempered softmax cut to top-k / top-p and
        renormalised (equal to `logprobs` without truncation; 0 for greedy, a point mass). What
        importance-sampling correction (`losses.importance`) divides by. 0 where `mask` is False.
      mask: bool[N, M] True for generated tokens, the stop token included.
      lengths: int32[N] number of generated tokens (mask.sum(-1)).
      finished_by_stop: bool[N] True when the completion ended with a stop token, False when it
        ran out of budget.
    """

    tokens: jax.Array
    logprobs: jax.Array
    sampled_logprobs: jax.Array
    mask: jax.Array
    lengths: jax.Array
    finished_by_stop: jax.Array


class _DecodeState(NamedTuple):
    """The while_loop carry: kept small, the [N, V] logits are recomputed, never carried."""

    step: jax.Array          # int32[]: index of the token being sampled
    last_token: jax.Array    # int32[N]: token sampled at step - 1
    tokens: jax.Array        # int32[N, M]
    logprobs: jax.Array      # float32[N, M]
    sampled_logprobs: jax.Array  # float32[N, M]
    lengths: jax.Array       # int32[N]
    done: jax.Array          # bool[N]
    stopped: jax.Array       # bool[N]
    cache: dict


def prompt_positions(lengths: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
    """Positions and segment ids of left-padded prompts of int32[B] lengths in `width` columns.

    Returns (positions int32[B, width]: 0..len-1 over the real tokens, 0 on padding;
    segment_ids int32[B, width]: 1 on real tokens, 0 on padding).
    """
    columns = jnp.arange(width)[None, :]
    offsets = (width - lengths)[:, None]
    positions = jnp.maximum(columns - offsets, 0).astype(jnp.int32)
    return positions, (columns >= offsets).astype(jnp.int32)


def prefill(config: models.ModelConfig, params, tokens: jax.Array, lengths: jax.Array,
            cache_len: int, cache_sharding=None) -> tuple[jax.Array, dict]:
    """Runs left-padded prompts through a fresh cache.

    tokens: int32[B, P]; lengths: int32[B] (>= 1). Returns (float32[B, V] logits of the token
    after each prompt, cache with P slots filled and `index` = P).

    Only the last column, a real token in every row, is projected onto the vocabulary: the
    [B, P, V] projection would be most of a prefill's work.
    """
    b, p = tokens.shape
    positions, segment_ids = prompt_positions(lengths, p)
    cache = models.init_cache(config, b, cache_len)
    if cache_sharding is not None:
        cache = jax.lax.with_sharding_constraint(cache, cache_sharding)
    logits, cache = models.forward(config, params, tokens, positions, segment_ids, cache,
                                   logits_start=p - 1)
    return logits[:, 0], cache


def decode_step(config: models.ModelConfig, params, tokens: jax.Array, positions: jax.Array,
                cache: dict, window: Optional[int] = None) -> tuple[jax.Array, dict]:
    """Feeds one token per row through the cache, attending to its first `window` slots.

    tokens, positions: int32[N]. Returns (float32[N, V] logits of the next token, new cache).
    """
    logits, cache = models.forward(config, params, tokens[:, None], positions[:, None], None, cache,
                                   cache_window=window)
    return logits[:, 0], cache


def decode_params(config: models.ModelConfig, params):
    """The params the decode loop reads: per-layer trees on CPU (`models.unstack_layers`),
    the stacks elsewhere.

    XLA:CPU copies each layer's weights out of the stack at every decoding step (13% of a
    SmolLM2 decoding step, batch 16, on a 2-core EPYC); splitting the stacks once per call
    costs one copy. Accelerators fuse the slice into the matmul, and a second copy of the
    weights would only cost them memory.
    """
    if jax.default_backend() != "cpu" or models.transformer.is_unstacked(config, params):
        return params
    return models.unstack_layers(config, params)


def decode_cache(config: models.ModelConfig, params, cache: dict,
                 window: int) -> tuple[dict, Optional[int]]:
    """The cache a decode loop over `window` columns reads, and the window to pass
    `decode_step`: with `decode_params`' per-layer weights (CPU) a per-layer cache exactly
    `window` wide (`models.transformer.per_layer_cache`: no copies per step) and no window;
    with the stacks, the cache as it is and the window."""
    if not models.transformer.is_unstacked(config, params):
        return cache, window
    return models.transformer.per_layer_cache(cache, window), None


def decode_params_shardings(config: models.ModelConfig, param_shardings):
    """The shardings of `decode_params`' tree, from the stacked params' NamedShardings: each
    layer keeps its stack's sharding without the layer axis."""
    if jax.default_backend() != "cpu":
        return param_shardings
    drop_layer_axis = lambda s, _: jax.sharding.NamedSharding(
        s.mesh, jax.sharding.PartitionSpec(*s.spec[1:]))
    return models.unstack_layers(config, param_shardings, take=drop_layer_axis)


def compiler_options(mesh: Optional[jax.sharding.Mesh]) -> Optional[dict]:
    """XLA options of the sampling programs: on CPU, no YNNPACK fusions. Decoding multiplies a
    few rows by each weight matrix, where XLA's other matmul path ran 20% faster (SmolLM2-135M,
    batch 16, 2-core EPYC); large matmuls (the train steps', `train.run`) are YNNPACK's."""
    platform = jax.default_backend() if mesh is None else mesh.devices.flat[0].platform
    return {"xla_cpu_experimental_ynn_fusion_type": ""} if platform == "cpu" else None


def decode_windows(prompt_width: int, max_new_tokens: int,
                   first: Optional[int]) -> tuple[tuple[int, int], ...]:
    """The decode loop's static segments: ((last step, attention window), ...).

    Step s feeds the token sampled at step s - 1 into slot P + s - 1, so it needs a window of
    P + s slots; steps run up to max_new_tokens - 1, the whole cache. Windows grow from P + first
    by doubling, so the attention work is at most twice what the tokens so far need, and each
    window is one more compiled copy of the step. first=None: one segment over the whole cache.
    """
    cache_len = prompt_width + max_new_tokens - 1
    segments, grow = [], first
    while first is not None and prompt_width + grow < cache_len:
        segments.append((grow, prompt_width + grow))
        grow *= 2
    return (*segments, (max_new_tokens - 1, cache_len))


def repeat_rows(tree, n: int):
    """Repeats every row of a cache or batch n times, prompt-major (copies, no recompute)."""
    if n == 1:
        return tree

    def repeat(x):
        if x.ndim == 0:  # The shared write index.
            return x
        axis = 1 if x.ndim == 5 else 0  # k/v are [L, B, ...]; everything else is batch-major.
        return jnp.repeat(x, n, axis=axis)

    return jax.tree.map(repeat, tree)


def choose(logits: jax.Array, keys: jax.Array, steps: jax.Array, active: jax.Array,
           strategy: Strategy, stop_tokens: jax.Array):
    """Token number `steps` of each sample from float32[N, V] logits, with its logprobs.

    keys: key[N] the samples' keys (`strategies.sample_keys`); steps: int32[] or int32[N];
    active: bool[N], rows not active get token 0 and logprobs 0. Returns (int32[N] tokens,
    float32[N] logprobs at the temperature, float32[N] logprobs under the truncated distribution
    drawn from (`SampleOutput`), bool[N] stopped: an active row that drew a stop token).
    """
    token, sampled = strategies.sample_with_logprobs(logits, strategies.step_keys(keys, steps),
                                                     strategy)
    logprob = logprobs_lib.token_logprobs(logits, token, strategy.temperature)
    token = jnp.where(active, token, 0)
    logprob = jnp.where(active, logprob, 0.0)
    sampled = jnp.where(active, sampled, 0.0)
    stopped = active & jnp.any(token[:, None] == stop_tokens[None, :], axis=-1)
    return token, logprob, sampled, stopped


def stop_array(stop_tokens: tuple[int, ...]) -> jax.Array:
    """int32[max(1, len)] of the stop token ids; -1, which no token equals, when there are none."""
    return jnp.asarray(stop_tokens if stop_tokens else (-1,), jnp.int32)


def _record(state: _DecodeState, logits: jax.Array, keys: jax.Array, strategy: Strategy,
            stop_tokens: jax.Array, limits: jax.Array) -> _DecodeState:
    """Samples step `state.step`'s token from float32[N, V] logits and books it."""
    active = ~state.done
    token, logprob, sampled, stopped = choose(logits, keys, state.step, active, strategy,
                                              stop_tokens)
    lengths = state.lengths + active.astype(jnp.int32)
    return state._replace(
        step=state.step + 1,
        last_token=token,
        tokens=jax.lax.dynamic_update_slice_in_dim(state.tokens, token[:, None], state.step, 1),
        logprobs=jax.lax.dynamic_update_slice_in_dim(state.logprobs, logprob[:, None], state.step,
                                                     1),
        sampled_logprobs=jax.lax.dynamic_update_slice_in_dim(
            state.sampled_logprobs, sampled[:, None], state.step, 1),
        lengths=lengths,
        done=state.done | stopped | (lengths >= limits),
        stopped=state.stopped | stopped)


def _sample_batch(params, prompt_tokens, prompt_lengths, token_limits, prompt_ids, rng, *, config,
                  max_new_tokens, n, strategy, stop_tokens, cache_shardings,
                  decode_window):
    """The traced body of `sample_batch` (see there); static settings are keywords.

    cache_shardings: None, or (batch, cache_len) -> the cache's shardings on the mesh.
    """
    b, p = prompt_tokens.shape
    cache_len = p + max_new_tokens - 1  # The last sampled token is never fed back.
    logits, cache = prefill(config, params, prompt_tokens, prompt_lengths, cache_len,
                            None if cache_shardings is None else cache_shardings(b, cache_len))
    logits, cache = repeat_rows((logits, cache), n)
    if cache_shardings is not None:
        cache = jax.lax.with_sharding_constraint(cache, cache_shardings(b * n, cache_len))
    lengths, limits = repeat_rows((prompt_lengths, token_limits), n)
    rows = b * n
    state = _DecodeState(
        step=jnp.zeros((), jnp.int32), last_token=jnp.zeros((rows,), jnp.int32),
        tokens=jnp.zeros((rows, max_new_tokens), jnp.int32),
        logprobs=jnp.zeros((rows, max_new_tokens), jnp.float32),
        sampled_logprobs=jnp.zeros((rows, max_new_tokens), jnp.float32),
        lengths=jnp.zeros((rows,), jnp.int32), done=jnp.zeros((rows,), bool),
        stopped=jnp.zeros((rows,), bool), cache=cache)
    params = decode_params(config, params)
    record = functools.partial(_record, keys=strategies.sample_keys(rng, prompt_ids, n),
                               strategy=strategy, stop_tokens=stop_array(stop_tokens),
                               limits=limits)
    state = record(state, logits)

    def unfinished(state):
        return (state.step < max_new_tokens) & ~jnp.all(state.done)

    def step(state, window):
        # The token sampled at step - 1 sits at position prompt_len + step - 1 of its sequence.
        logits, cache = decode_step(config, params, state.last_token, lengths + state.step - 1,
                                    state.cache, window)
        return record(state._replace(cache=cache), logits)

    for last_step, window in decode_windows(p, max_new_tokens, decode_window):
        cache, window = decode_cache(config, params, state.cache, window)
        state = state._replace(cache=cache)
        state = jax.lax.while_loop(
                lambda state, last=last_step: unfinished(state) & (state.step <= last),
                functools.partial(step, window=window), state)
    mask = jnp.arange(max_new_tokens)[None, :] < state.lengths[:, None]
    return SampleOutput(tokens=state.tokens, logprobs=state.logprobs,
                        sampled_logprobs=state.sampled_logprobs, mask=mask,
                        lengths=state.lengths, finished_by_stop=state.stopped)


@functools.lru_cache(maxsize=None)
def _compiled(config, max_new_tokens, n, strategy, stop_tokens, mesh, rules, decode_window):
    """One jitted sampler per static setting; jax.jit then keeps one executable per shape."""
    body = functools.partial(
        _sample_batch, config=config, max_new_tokens=max_new_tokens, n=n, strategy=strategy,
        stop_tokens=stop_tokens, decode_window=decode_window,
        cache_shardings=None if mesh is None else functools.partial(
            sharding.cache_shardings, config, mesh, rules))
    if mesh is None:
        return jax.jit(body, compiler_options=compiler_options(mesh))
    rows = sharding.batch_sharding(mesh, 1)
    in_shardings = (sharding.param_shardings(config, mesh, rules), sharding.batch_sharding(mesh, 2),
                    rows, rows, rows, sharding.replicated(mesh))
    return sharding.sharded_jit(body, mesh, rules, in_shardings=in_shardings, out_shardings=None,
                                compiler_options=compiler_options(mesh))


def _host_value(x) -> Optional[np.ndarray]:
    """x as a numpy array when it is known on this host (not traced, not split across hosts)."""
    if isinstance(x, jax.core.Tracer):
        return None
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return None
    return np.asarray(x)


def validate_settings(config: models.ModelConfig, max_new_tokens: int, n: int, strategy: Strategy,
                      stop_tokens) -> tuple[int, ...]:
    """Raises ValueError on bad static settings; returns stop_tokens as a sorted tuple of ints."""
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}.")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (completions per prompt) must be an int >= 1, got {n!r}.")
    strategy.validate(config.vocab_size)
    stop_tokens = tuple(sorted({int(t) for t in stop_tokens}))
    outside = [t for t in stop_tokens if not 0 <= t < config.vocab_size]
    if outside:
        raise ValueError(f"Stop tokens {outside} lie outside the vocabulary "
                         f"[0, {config.vocab_size}).")
    return stop_tokens


def validate_batch(config, prompt_tokens, prompt_lengths, token_limits, prompt_ids,
                    max_new_tokens, mesh):
    """Clear errors for bad batch inputs, before they become shape errors deep inside XLA.

    Values are checked when this host knows them; traced or multi-host inputs only get their
    shapes checked.
    """
    shape = np.shape(prompt_tokens)
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"prompt_tokens must be int32[B, P] with B, P >= 1; got shape {shape}.")
    b, p = shape
    for name, value in (("prompt_lengths", prompt_lengths), ("token_limits", token_limits),
                        ("prompt_ids", prompt_ids)):
        if value is not None and np.shape(value) != (b,):
            raise ValueError(f"{name} has shape {np.shape(value)}; expected ({b},), one per "
                             "prompt.")
    if mesh is not None:
        shards = sharding.batch_shards(mesh.shape)
        if b % shards:
            raise ValueError(f"The batch ({b} prompts) must divide evenly over the mesh's batch "
                             f"axes {sharding.BATCH_AXES} ({shards} shards).")
    tokens, lengths = _host_value(prompt_tokens), _host_value(prompt_lengths)
    if tokens is not None and (tokens.min() < 0 or tokens.max() >= config.vocab_size):
        raise ValueError(f"Prompt token ids must lie in [0, {config.vocab_size}) (the "
                         f"vocabulary); got ids from {tokens.min()} to {tokens.max()}.")
    if lengths is not None and (lengths.min() < 1 or lengths.max() > p):
        raise ValueError(f"Every prompt length must lie in [1, {p}] (the prompt width); an empty "
                         f"prompt gives the model nothing to condition on. Got {lengths.tolist()}.")
    limits = np.full((b,), max_new_tokens) if token_limits is None else _host_value(token_limits)
    if limits is not None and (limits.min() < 1 or limits.max() > max_new_tokens):
        raise ValueError(f"token_limits must lie in [1, max_new_tokens={max_new_tokens}]; got "
                         f"{limits.tolist()}.")
    if lengths is not None and limits is not None:
        longest = int((lengths + limits).max())
        if longest > config.max_seq_len:
            raise ValueError(f"A prompt plus its completion budget needs {longest} positions, more "
                             f"than the model's context (config.max_seq_len={config.max_seq_len}).")


def sample_batch(config: models.ModelConfig, params, prompt_tokens: jax.Array,
                 prompt_lengths: jax.Array, rng: jax.Array, *, max_new_tokens: int, n: int = 1,
                 temperature: float = 0.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, stop_tokens: Sequence[int] = (),
                 token_limits: Optional[jax.Array] = None, prompt_ids: Optional[jax.Array] = None,
                 mesh: Optional[jax.sharding.Mesh] = None, rules=None,
                 decode_window: Optional[int] = DECODE_WINDOW) -> SampleOutput:
    """Samples n completions for each prompt of a fixed-shape batch, in one jitted call.

    Compiled once per (static settings, B, P): call it with the same shapes every step.

    Args:
      config, params: the model; params are an argument of the compiled function, so new ones
        (every training step) do not recompile it.
      prompt_tokens: int32[B, P], left-padded (`pad_prompts`). With a
        mesh, host (numpy) inputs are the whole batch, the same on every process; jax.Arrays
        are used as they are.
      prompt_lengths: int32[B], each in [1, P].
      rng: a jax.random key. Sample j of prompt b draws from a key of its own, derived from
        (rng, prompt_ids[b], j) and then the token's index (see `strategies.sample_keys`): the
        same rng, prompt id and sample index give the same completion in any batch.
      max_new_tokens: completion buffer length M, the longest any completion can be.
      n: completions per prompt (GRPO's group size); they share the prompt's prefill.
      temperature, top_k, top_p: see `strategies.Strategy`; temperature 0 is greedy.
      stop_tokens: token ids that end a completion (the stop token is kept and masked in).
      token_limits: int32[B] per-prompt budgets in [1, M] (None: M for all).
      prompt_ids: int32[B] the prompts' ids for the key derivation (None: 0..B-1).
      mesh, rules: shard the batch over the mesh's ("data", "fsdp") axes, the model and the
        cache as `rules` say (default `sharding.DEFAULT_RULES`); no mesh: default placement.
      decode_window: the first attention window past the prompt (see `decode_windows`); None
        attends to the whole cache at every step (one compiled step instead of a few).
    Returns:
      SampleOutput with B * n rows, the n completions of prompt 0 first. Logprobs are under the
      model at the sampling temperature (greedy: 1), not truncated by top-k/top-p;
      sampled_logprobs under the truncated distribution the tokens were drawn from.
    """
    strategy = Strategy(float(temperature), top_k, top_p)
    stop_tokens = validate_settings(config, max_new_tokens, n, strategy, stop_tokens)
    validate_batch(config, prompt_tokens, prompt_lengths, token_limits, prompt_ids,
                    max_new_tokens, mesh)
    if mesh is not None:
        rules = sharding.validate_rules(sharding.DEFAULT_RULES if rules is None else rules, mesh)
    if token_limits is None:
        token_limits = np.full((np.shape(prompt_tokens)[0],), max_new_tokens, np.int32)
    if prompt_ids is None:
        prompt_ids = np.arange(np.shape(prompt_tokens)[0], dtype=np.int32)
    if decode_window is not None and not (isinstance(decode_window, (int, np.integer))
                                          and decode_window >= 1):
        raise ValueError(f"decode_window must be an int >= 1 or None, got {decode_window!r}.")
    fn = _compiled(config, int(max_new_tokens), int(n), strategy, stop_tokens, mesh, rules,
                   decode_window)
    if mesh is not None:  # Host arrays hold the whole batch; each process places its rows.
        prompt_tokens, prompt_lengths, token_limits, prompt_ids = (
            x if isinstance(x, jax.Array) else sharding.global_batch_from_whole(x, mesh)
            for x in (prompt_tokens, prompt_lengths, token_limits, prompt_ids))
    return fn(params, prompt_tokens, prompt_lengths, token_limits, prompt_ids, rng)
