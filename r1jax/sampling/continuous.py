"""Continuous batching: a fixed number of decode slots, each refilled as soon as its sample ends.

A static batch decodes until its longest completion ends, so with lengths that vary widely most
rows idle once the short answers finish. Here samples (prompt i, sample j) wait in a queue and
a short host loop drives jitted programs of static shapes:

    store    the next waiting samples' prompts that are not stored yet are prefilled (U rows,
             U a power of two, all at the longest prompt's bucket width) into a prompt store:
             a prompt's n samples start at different times, and share one prefill
    refill   the free slots' rows of the cache take their samples' prompts from the store
             (R rows, a power of two), moved to the row's first columns, and their first
             token is drawn
    decode   one while_loop over all slots, which stops after `chunk` steps or as soon as
             `refill_at` slots are done (a stop token, or the sample's own token limit)
    collect  the finished slots' tokens and logprobs go back to the host; the slots are free
    halve    once no sample waits and at most half the slots are busy, the busy ones move to
             half as many slots (`take_rows`): a decode step costs what its rows cost, busy or
             not, and a few long samples otherwise drain at the full batch's price

Layout: slot s's cache row holds its prompt (of p tokens) in columns [0, p) and its t-th new
token in column p + t, so rows sit at different points of their sequences and the cache has one
write index per row (`models.forward` with cache["index"] int32[S]). Decode attends to a window
of the cache that covers every slot's tokens for the chunk (`_windows`' sizes), as the static
sampler's segments attend to theirs.

With the CPU's per-layer decode weights (`sampler.decode_params`) the slots keep their cache in
the per-layer decode layout (`models.transformer.per_layer_cache`) exactly the current window
wide, widened (`widen`) when a slot's tokens outgrow it: converting the stacked cache at every
call, as the static sampler does once per segment, copied the whole cache twice per call (12% of
continuous batching's time at 16 slots, with a call each time a slot frees).

Samples do not depend on the batching: sample j of prompt i draws token t with the key
`step_keys(sample_keys(rng, [i], n)[j], t)`, as `sampler.sample_batch` does, so the same seed,
prompt id and sample index give the same tokens whichever slot, batch or order the sample gets
(logprobs agree to float32 rounding: padded widths and attention windows change the order of
a few sums).

The cache and the other slot arrays are donated to each call, so they are updated in place.

On a mesh the slots are split over its batch axes and the cache and model as the rules say (as
`sampler.sample_batch` shards its batch); the store's prompts and the refill's row choices
come from the host replicated.
Every process runs the same host loop on the same values (the slots' state is gathered whole
to every process), so a mesh over several processes makes the same refill decisions everywhere.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from r1jax import models, sharding
from r1jax.sampling import sampler, strategies
from r1jax.sampling.prompts import bucket_width, pad_prompts
from r1jax.sampling.strategies import Strategy

DEFAULT_CHUNK = 64  # Decode steps per call at most: windows can grow between calls.
MAX_WINDOWS = 8  # Attention windows of the slots' cache (`_windows`): each one more compile.
MIN_WINDOW_STEP = 128  # Columns between two of those windows at least.


@flax.struct.dataclass
class Slots:
    """The device state of S decode slots (M = max_new_tokens, C = cache slots per row).

    Attributes:
      cache: models cache with per-layer entries [L, S, C, ...] ("k", "v" [L, S, C, K, D], or
        MLA's "latent", "k_rope"), or tuples of L arrays [S, C, K * D] in the per-layer decode
        layout (C then the current window), "valid" bool[S, C], "index" int32[S].
      keys: key[S] the slot's sample key (`strategies.sample_keys`).
      start: int32[S] cache column of the slot's first new token (its prompt's length).
      prompt_length: int32[S] real prompt tokens (the first new token's position).
      step: int32[S] tokens generated so far.
      limit: int32[S] the sample's token budget.
      last_token: int32[S] the token to feed next.
      tokens: int32[S, M]; logprobs, sampled_logprobs: float32[S, M] the slot's completion so
        far (0 after it; see `sampler.SampleOutput`).
      done: bool[S] finished, or empty; stopped: bool[S] finished by a stop token.
      prompts: the prompt store, S rows of P = the prompts' padded width: per-layer entries
        [L, S, P, ...] and "valid" bool[S, P] of prefilled prompts whose samples are starting.
      prompt_logits: float32[S, V] the next-token logits of each stored prompt.
    """

    cache: dict
    keys: jax.Array
    start: jax.Array
    prompt_length: jax.Array
    step: jax.Array
    limit: jax.Array
    last_token: jax.Array
    tokens: jax.Array
    logprobs: jax.Array
    sampled_logprobs: jax.Array
    done: jax.Array
    stopped: jax.Array
    prompts: dict
    prompt_logits: jax.Array


def empty_slots(config: models.ModelConfig, num_slots: int, cache_len: int,
                max_new_tokens: int, prompt_width: int, per_layer: bool) -> Slots:
    """S empty (done) slots with a cache of cache_len columns per row (per_layer: in the
    per-layer decode layout), and an empty prompt store of prompt_width columns."""
    cache = models.init_cache(config, num_slots, cache_len)
    if per_layer:
        cache = models.transformer.per_layer_cache(cache, cache_len)
    store = models.init_cache(config, num_slots, prompt_width)
    zeros = jnp.zeros((num_slots,), jnp.int32)
    return Slots(cache={**cache, "index": zeros},
                 keys=jax.random.split(jax.random.key(0), num_slots), start=zeros,
                 prompt_length=zeros, step=zeros, limit=zeros, last_token=zeros,
                 tokens=jnp.zeros((num_slots, max_new_tokens), jnp.int32),
                 logprobs=jnp.zeros((num_slots, max_new_tokens), jnp.float32),
                 sampled_logprobs=jnp.zeros((num_slots, max_new_tokens), jnp.float32),
                 done=jnp.ones((num_slots,), bool), stopped=jnp.zeros((num_slots,), bool),
                 prompts=_store_layout(store),
                 prompt_logits=jnp.zeros((num_slots, config.vocab_size), jnp.float32))


def _store_layout(cache: dict) -> dict:
    """The prompt store's entries from a cache's (or its shardings'): all but the write index,
    which the store has no use for (prompts are prefilled whole)."""
    return {name: value for name, value in cache.items() if name != "index"}


def slot_shardings(config: models.ModelConfig, mesh, rules, num_slots: int,
                   cache_len: int, prompt_width: int, per_layer: bool) -> Slots:
    """NamedShardings of `empty_slots`' fields on a mesh: rows over the batch axes, the cache
    and the prompt store as `sharding.cache_shardings` lays them out (the cache's per-row write
    index with the rows)."""
    rows, table = sharding.batch_sharding(mesh, 1), sharding.batch_sharding(mesh, 2)
    cache = sharding.cache_shardings(config, mesh, rules, num_slots, cache_len)
    if per_layer:
        cache = sharding.per_layer_cache_shardings(cache, config.num_layers)
    store = sharding.cache_shardings(config, mesh, rules, num_slots, prompt_width)
    return Slots(cache={**cache, "index": rows}, keys=rows, start=rows, prompt_length=rows,
                 step=rows, limit=rows, last_token=rows, tokens=table, logprobs=table,
                 sampled_logprobs=table, done=rows, stopped=rows,
                 prompts=_store_layout(store), prompt_logits=table)


def _put(old: jax.Array, new: jax.Array, rows: jax.Array, axis: int = 0) -> jax.Array:
    """old with rows `rows` of axis `axis` set to new; out-of-range rows (padding) dropped."""
    return old.at[(slice(None),) * axis + (rows,)].set(new, mode="drop")


def store_prompts(params, store: dict, store_logits: jax.Array, prompts: jax.Array,
                  lengths: jax.Array, store_rows: jax.Array, *,
                  config: models.ModelConfig) -> tuple[dict, jax.Array]:
    """Prefills U prompts into rows store_rows of the prompt store (`Slots.prompts` and
    `Slots.prompt_logits`, returned updated: not the whole slots, whose cache changes shape
    as it widens, so one compiled store serves every width).

    prompts: int32[U, P] left-padded to the store's width; lengths: int32[U]; store_rows:
    int32[U], S (out of range) for padding rows, which change nothing.
    """
    logits, cache = sampler.prefill(config, params, prompts, lengths, prompts.shape[1])
    entries = {name: _put(store[name], new, store_rows, 1)
               for name, new in models.transformer.layer_entries(cache).items()}
    return ({**entries, "valid": _put(store["valid"], cache["valid"], store_rows)},
            _put(store_logits, logits, store_rows))


def refill(slots: Slots, store_rows: jax.Array, lengths: jax.Array, limits: jax.Array,
           key_data: jax.Array, slot_ids: jax.Array, *, strategy: Strategy,
           stop_tokens: tuple[int, ...]) -> Slots:
    """Starts R new samples in slots slot_ids from their prompts in the store, drawing their
    first tokens.

    store_rows: int32[R] each sample's prompt in the store; lengths, limits: int32[R];
    key_data: uint32[R, 2] the samples' keys (`jax.random.key_data`: plain host arrays, placed
    like the other inputs); slot_ids: int32[R], S (out of range) for padding rows, which change
    nothing. A slot's columns past its prompt keep stale values, marked invalid.

    A prompt moves from the store's left padding to its slot's first columns: its completion
    then starts right after it, and the attention window, which follows the furthest slot,
    covers real tokens rather than the widest prompt's padding.
    """
    keys = jax.random.wrap_key_data(key_data)
    rows = store_rows.shape[0]
    width = slots.prompts["valid"].shape[1]
    token, logprob, sampled, stopped = sampler.choose(
        slots.prompt_logits[store_rows], keys, 0, jnp.ones((rows,), bool), strategy,
        sampler.stop_array(stop_tokens))
    put = functools.partial(_put, rows=slot_ids)
    # Store column (c + P - length) mod P goes to column c: the prompt first, its padding after.
    columns = (jnp.arange(width)[None, :] + (width - lengths)[:, None]) % width  # [R, P]
    cache = {name: _refill_entry(value, _shifted(slots.prompts[name][:, store_rows], columns, 2),
                                 slot_ids)
             for name, value in models.transformer.layer_entries(slots.cache).items()}
    valid = jnp.zeros((rows, slots.cache["valid"].shape[1]), bool)
    valid = valid.at[:, :width].set(_shifted(slots.prompts["valid"][store_rows], columns, 1))
    max_new = slots.tokens.shape[1]
    return slots.replace(
        cache={**cache, "valid": put(slots.cache["valid"], valid),
               "index": put(slots.cache["index"], lengths)},
        keys=put(slots.keys, keys), start=put(slots.start, lengths),
        prompt_length=put(slots.prompt_length, lengths),
        step=put(slots.step, jnp.ones((rows,), jnp.int32)), limit=put(slots.limit, limits),
        last_token=put(slots.last_token, token),
        tokens=put(slots.tokens, jnp.zeros((rows, max_new), jnp.int32).at[:, 0].set(token)),
        logprobs=put(slots.logprobs,
                     jnp.zeros((rows, max_new), jnp.float32).at[:, 0].set(logprob)),
        sampled_logprobs=put(slots.sampled_logprobs,
                             jnp.zeros((rows, max_new), jnp.float32).at[:, 0].set(sampled)),
        done=put(slots.done, stopped | (limits <= 1)), stopped=put(slots.stopped, stopped))


def _shifted(x: jax.Array, columns: jax.Array, axis: int) -> jax.Array:
    """x [..., R, P, ...] (rows on axis - 1) with row r's columns reordered as columns[r]."""
    index = columns.reshape((1,) * (axis - 1) + columns.shape + (1,) * (x.ndim - axis - 1))
    return jnp.take_along_axis(x, index, axis=axis)


def _refill_entry(cache, prompts: jax.Array, slot_ids: jax.Array):
    """One per-layer cache entry with rows slot_ids' first P columns set to prompts [L, R, P,
    ...] (a stacked entry [L, S, C, ...], or the per-layer layout's tuple of [S, C, K * D])."""
    width = prompts.shape[2]
    if not isinstance(cache, tuple):
        return cache.at[:, slot_ids, :width].set(prompts, mode="drop")
    return tuple(layer.at[slot_ids, :width].set(new.reshape(new.shape[:2] + (-1,)), mode="drop")
                 for layer, new in zip(cache, prompts))


def widen(slots: Slots, width: int) -> Slots:
    """Slots whose per-layer cache is `width` columns wide (the new columns empty)."""
    return slots.replace(cache=models.transformer.per_layer_cache(slots.cache, width))


def take_rows(slots: Slots, rows: jax.Array) -> Slots:
    """The slots `rows` (int32[S']) of slots, in that order: every field's rows, the cache's
    and the prompt store's included."""
    take = lambda x: x[rows]

    def cache_rows(cache: dict) -> dict:
        entries = models.transformer.layer_entries(cache)
        return {name: take(value) if name not in entries
                else tuple(map(take, value)) if isinstance(value, tuple) else value[:, rows]
                for name, value in cache.items()}

    return Slots(cache=cache_rows(slots.cache), prompts=cache_rows(slots.prompts),
                 **{field.name: take(getattr(slots, field.name))
                    for field in dataclasses.fields(slots)
                    if field.name not in ("cache", "prompts")})


def decode(params, slots: Slots, refill_at: jax.Array, *, config: models.ModelConfig,
           strategy: Strategy, stop_tokens: tuple[int, ...], chunk: int,
           window: int | None) -> Slots:
    """Decodes every unfinished slot for up to `chunk` steps, or until `refill_at` are done.

    window: static; attend to the cache's first `window` columns (None: all), which must hold
    every active slot's tokens for the whole chunk (start + step + chunk - 1 <= window). A cache
    in the per-layer layout is read whole: it is the window.
    """
    num_slots, max_new = slots.tokens.shape
    cache_len = slots.cache["valid"].shape[1]
    stops = sampler.stop_array(stop_tokens)
    rows = jnp.arange(num_slots)
    if models.transformer.is_per_layer(slots.cache):
        window = None

    def unfinished(carry):
        i, slots = carry
        return (i < chunk) & (jnp.sum(slots.done) < refill_at) & ~jnp.all(slots.done)

    def step(carry):
        i, slots = carry
        active = ~slots.done
        # The token drawn at step - 1 sits at position prompt_length + step - 1 of its sequence
        # and in column start + step - 1 of its row; finished rows write harmlessly in place.
        index = jnp.minimum(slots.start + slots.step - 1, cache_len - 1)
        logits, cache = sampler.decode_step(
            config, params, slots.last_token, slots.prompt_length + slots.step - 1,
            {**slots.cache, "index": index}, window)
        token, logprob, sampled, stopped = sampler.choose(logits, slots.keys, slots.step,
                                                          active, strategy, stops)
        column = jnp.where(active, slots.step, max_new)  # Out of range: dropped.
        step = slots.step + active.astype(jnp.int32)
        return i + 1, slots.replace(
            cache=cache, step=step, last_token=jnp.where(active, token, slots.last_token),
            tokens=slots.tokens.at[rows, column].set(token, mode="drop"),
            logprobs=slots.logprobs.at[rows, column].set(logprob, mode="drop"),
            sampled_logprobs=slots.sampled_logprobs.at[rows, column].set(sampled, mode="drop"),
            done=slots.done | stopped | (step >= slots.limit), stopped=slots.stopped | stopped)

    return jax.lax.while_loop(unfinished, step, (jnp.zeros((), jnp.int32), slots))[1]


class _Programs(NamedTuple):
    """The jitted programs of one static setting (`_programs`); those that take the slots are
    made per cache width (the per-layer cache widens)."""
    empty: Callable[[int], Callable[[], Slots]]
    store: Callable[..., tuple[dict, jax.Array]]
    refill: Callable[[int], Callable[..., Slots]]
    widen: Callable[[int, int], Callable[[Slots], Slots]]  # (from, to) widths.
    take: Callable[[int], Callable[..., Slots]]  # These slots from twice as many (`take_rows`).
    decode: Callable[[int, int | None], Callable[..., Slots]]  # (width, attention window).
    decode_params: Callable


@functools.cache
def _programs(config, strategy, stop_tokens, chunk, mesh, rules, num_slots, max_new_tokens,
              prompt_width, per_layer) -> _Programs:
    """The jitted programs for one static setting; the slots (and the store) are donated so
    the cache is updated in place. Decode reads `sampler.decode_params` (per-layer weights on
    CPU), made once per `sample_prompts` call rather than at every return to the host. With a
    mesh every input and output has a declared sharding: the slots' (`slot_shardings`), the
    params', and the host inputs replicated."""
    choice = dict(strategy=strategy, stop_tokens=stop_tokens)
    options = sampler.compiler_options(mesh)
    if mesh is None:
        params = host = unstacked = store = table = None
        slots_at = lambda width: None
    else:
        params, host = sharding.param_shardings(config, mesh, rules), sharding.replicated(mesh)
        unstacked = sampler.decode_params_shardings(config, params)
        slots_at = functools.cache(lambda width: slot_shardings(
            config, mesh, rules, num_slots, width, prompt_width, per_layer))
        store, table = slots_at(prompt_width).prompts, sharding.batch_sharding(mesh, 2)

    def compile_(fn, inputs, outputs, donate=()):
        if mesh is None:
            return jax.jit(fn, donate_argnums=donate, compiler_options=options)
        return sharding.sharded_jit(fn, mesh, rules, in_shardings=inputs, out_shardings=outputs,
                                    donate_argnums=donate, compiler_options=options)

    def empty(width):
        return compile_(functools.partial(empty_slots, config, num_slots, width, max_new_tokens,
                                          prompt_width, per_layer), (), slots_at(width))

    def refill_(width):
        return compile_(functools.partial(refill, **choice), (slots_at(width),) + (host,) * 5,
                        slots_at(width), donate=0)

    def widen_(width, to):  # Not donated: no buffer of the wider cache could reuse one.
        return compile_(functools.partial(widen, width=to), (slots_at(width),), slots_at(to))

    def take_(width):  # Twice the rows in, laid out alike.
        return compile_(take_rows, (slots_at(width), host), slots_at(width))

    def decode_(width, window):
        return compile_(functools.partial(decode, chunk=chunk, window=window, config=config,
                                          **choice),
                        (unstacked, slots_at(width), host), slots_at(width), donate=1)

    return _Programs(
        functools.cache(empty),
        compile_(functools.partial(store_prompts, config=config),
                 (params, store, table) + (host,) * 3, (store, table), donate=(1, 2)),
        functools.cache(refill_), functools.cache(widen_), functools.cache(take_),
        functools.cache(decode_),
        compile_(functools.partial(sampler.decode_params, config), (params,), unstacked))


def _rows(count: int, num_slots: int) -> int:
    """Rows of a refill call for `count` samples: a power of two, at most num_slots."""
    return min(1 << (count - 1).bit_length(), num_slots)


def _windows(prompt_width: int, cache_len: int) -> list[int]:
    """The attention windows (cache widths) of the slots: the widest prompt plus equal steps of
    at least MIN_WINDOW_STEP columns, at most MAX_WINDOWS of them, the last the whole
    cache. Not the static sampler's doubling: the furthest slot sets every row's window, so a
    window far past it costs every step until the next sample of that length ends."""
    step = max(MIN_WINDOW_STEP, -(-(cache_len - prompt_width) // MAX_WINDOWS))
    return [*range(prompt_width + step, cache_len, step), cache_len]


def _window(windows: Sequence[int], needed: int) -> int:
    """The smallest window of `windows` holding `needed` columns; the last (the whole cache) if
    none does."""
    return next((w for w in windows if w >= needed), windows[-1])


def _store(store_fn, params, store: tuple, prompts, needed: Sequence[int], stored: dict,
           width: int, num_slots: int) -> tuple[tuple, dict]:
    """Prefills the prompts of `needed` (prompt indices of the samples about to start) that
    the store (`Slots.prompts`, `Slots.prompt_logits`) lacks; returns the new store and the new
    prompt -> store row map.

    Samples wait prompt-major, so a prompt the next samples do not need never is again: its row
    is free. The store has num_slots rows, at least the samples starting at once.
    """
    needed = list(dict.fromkeys(needed))
    kept = {p: row for p, row in stored.items() if p in needed}
    missing = [p for p in needed if p not in kept]
    if not missing:
        return store, kept
    spare = [row for row in range(num_slots) if row not in kept.values()]
    stored = {**kept, **dict(zip(missing, spare))}
    rows = _rows(len(missing), num_slots)
    # One width for every prefill: one compiled store per row count, for some prefill spent on
    # padding.
    tokens, lengths = pad_prompts([prompts[p] for p in missing], width, rows)
    store_rows = np.full((rows,), num_slots, np.int32)
    store_rows[:len(missing)] = [stored[p] for p in missing]
    return store_fn(params, *store, tokens, lengths, store_rows), stored


def mesh_rules(mesh, rules, num_slots: int):
    """The rules to shard with on `mesh` (validated; None: `sharding.DEFAULT_RULES`), after
    checking that num_slots divides over its batch axes; None without a mesh."""
    if mesh is None:
        return None
    shards = sharding.batch_shards(mesh.shape)
    if num_slots % shards:
        raise ValueError(f"The decode slots ({num_slots}) must divide evenly over the mesh's "
                         f"batch axes {sharding.BATCH_AXES} ({shards} shards).")
    return sharding.validate_rules(sharding.DEFAULT_RULES if rules is None else rules, mesh)


def sample_prompts(config: models.ModelConfig, params, prompts: Sequence[Sequence[int]],
                   rng: jax.Array, *, max_new_tokens: int, budgets: Sequence[int],
                   prompt_ids: Sequence[int], n: int, strategy: Strategy,
                   stop_tokens: tuple[int, ...], num_slots: int, chunk: int = DEFAULT_CHUNK,
                   refill_at: int = 1, on_done=None, mesh=None,
                   rules=None) -> sampler.SampleOutput:
    """Samples n completions of each prompt through num_slots continuously refilled slots.

    Settings are validated by the callers (`sample_continuous`, `generate`).

    Args:
      prompts: token-id lists, each non-empty; budgets: each one's token limit (<= M);
        prompt_ids: each one's id for the key derivation (see `strategies.sample_keys`).
      max_new_tokens: M, the output width.
      num_slots: S, the samples decoded together.
      chunk: most decode steps per call.
      refill_at: while samples wait, decoding returns to the host once this many slots are
        free (1: at once; larger amortises a refill call over more rows).
      on_done: called with the number of samples finished at each return to the host.
      mesh, rules: run sharded (num_slots divides over the mesh's batch axes; rules validated).
    Returns:
      SampleOutput (numpy) of len(prompts) * n rows, prompt-major, on every process.
    """
    widest = bucket_width(max(len(p) for p in prompts), config.max_seq_len)
    cache_len = widest + max_new_tokens - 1  # The last drawn token is never fed back.
    windows = _windows(widest, cache_len)
    # The cache's layout follows the decode weights': per layer with per-layer weights (CPU).
    per_layer = models.transformer.is_unstacked(config, jax.eval_shape(
        functools.partial(sampler.decode_params, config), params))
    programs = _programs(config, strategy, stop_tokens, chunk, mesh, rules, num_slots,
                         max_new_tokens, widest, per_layer)
    decode_params = programs.decode_params(params)
    keys = np.asarray(jax.random.key_data(
        strategies.sample_keys(rng, np.asarray(prompt_ids, np.int32), n)))
    shards = 1 if mesh is None else sharding.batch_shards(mesh.shape)
    total = len(prompts) * n
    out_tokens = np.zeros((total, max_new_tokens), np.int32)
    out_logprobs = np.zeros((total, max_new_tokens), np.float32)
    out_sampled = np.zeros((total, max_new_tokens), np.float32)
    out_lengths = np.zeros((total,), np.int32)
    out_stopped = np.zeros((total,), bool)

    width = windows[0] if per_layer else cache_len  # The cache's columns.
    slots = programs.empty(width)()
    owner = [None] * num_slots  # The sample each slot decodes.
    waiting = list(range(total))[::-1]  # Popped from the end: sample 0 first.
    stored = {}  # Prompt index -> its row in the prompt store.
    progress = np.zeros((num_slots,), np.int32)  # start + step of each slot, as last seen.
    while waiting or any(o is not None for o in owner):
        free = [s for s in range(num_slots) if owner[s] is None]
        if waiting and free:
            new = [waiting.pop() for _ in range(min(len(free), len(waiting)))]
            store, stored = _store(programs.store, params, (slots.prompts, slots.prompt_logits),
                                   prompts, [i // n for i in new], stored, widest, num_slots)
            slots = slots.replace(prompts=store[0], prompt_logits=store[1])
            rows = _rows(len(new), num_slots)
            padded = new + [new[0]] * (rows - len(new))
            slot_ids = np.full((rows,), num_slots, np.int32)
            slot_ids[:len(new)] = free[:len(new)]
            slots = programs.refill(width)(
                slots, np.array([stored[i // n] for i in padded], np.int32),
                np.array([len(prompts[i // n]) for i in padded], np.int32),
                np.array([budgets[i // n] for i in padded], np.int32),
                keys[np.array(padded)], slot_ids)
            for s, i in zip(free, new):
                owner[s] = i
                progress[s] = len(prompts[i // n]) + 1
        needed = int(max(progress[s] for s in range(num_slots) if owner[s] is not None)) + chunk
        halves = num_slots > 1 and (num_slots // 2) % shards == 0
        # Once nothing waits, return when half the slots are free, to decode the rest in half
        # as many rows.
        threshold = (min(refill_at, len(waiting)) if waiting
                     else num_slots - num_slots // 2 if halves else num_slots)
        window = _window(windows, needed)
        if per_layer and window > width:
            slots, width = programs.widen(width, window)(slots), window
        slots = programs.decode(width, None if per_layer else window)(
            decode_params, slots, np.int32(threshold))
        done, step, start = sharding.all_rows((slots.done, slots.step, slots.start))
        progress = start + step
        finished = [s for s in range(num_slots) if owner[s] is not None and done[s]]
        if finished:
            tokens, logprobs, sampled, stopped = sharding.all_rows(
                (slots.tokens, slots.logprobs, slots.sampled_logprobs, slots.stopped))
            for s in finished:
                i, length = owner[s], step[s]
                out_tokens[i, :length] = tokens[s, :length]
                out_logprobs[i, :length] = logprobs[s, :length]
                out_sampled[i, :length] = sampled[s, :length]
                out_lengths[i], out_stopped[i] = length, stopped[s]
                owner[s] = None
            if on_done is not None:
                on_done(len(finished))
        active = [s for s in range(num_slots) if owner[s] is not None]
        if not waiting and halves and active and len(active) <= num_slots // 2:
            # The draining tail: a step's cost follows the rows decoded, active or not.
            num_slots //= 2
            kept = active + [s for s in range(2 * num_slots) if owner[s] is None]
            kept = np.array(kept[:num_slots], np.int32)
            programs = _programs(config, strategy, stop_tokens, chunk, mesh, rules, num_slots,
                                 max_new_tokens, widest, per_layer)
            slots = programs.take(width)(slots, kept)
            owner, progress = [owner[s] for s in kept], progress[kept]
    mask = np.arange(max_new_tokens)[None, :] < out_lengths[:, None]
    return sampler.SampleOutput(tokens=out_tokens, logprobs=out_logprobs,
                                sampled_logprobs=out_sampled, mask=mask,
                                lengths=out_lengths, finished_by_stop=out_stopped)


def sample_continuous(config: models.ModelConfig, params, prompt_tokens, prompt_lengths,
                      rng: jax.Array, *, max_new_tokens: int, n: int = 1,
                      temperature: float = 0.0, top_k: int | None = None,
                      top_p: float | None = None, stop_tokens: Sequence[int] = (),
                      token_limits=None, prompt_ids=None,
                      num_slots: int = 64, chunk: int = DEFAULT_CHUNK,
                      refill_at: int = 1, mesh=None, rules=None) -> sampler.SampleOutput:
    """`sampler.sample_batch`'s inputs and outputs, sampled with continuous batching.

    The same arguments give the same tokens as `sample_batch` (logprobs to float32 rounding),
    so a caller switches by calling this instead. Inputs are host arrays (numpy), the whole
    batch on every process: the host loop reads the prompts.

    Args:
      prompt_tokens, prompt_lengths, rng, max_new_tokens, n, temperature, top_k, top_p,
        stop_tokens, token_limits, prompt_ids: as in `sampler.sample_batch` (left-padded
        int32[B, P] prompts).
      num_slots: samples decoded together (the decode batch).
      chunk, refill_at: see `sample_prompts`.
      mesh, rules: shard the slots over the mesh's batch axes (num_slots must divide over
        them), the model and cache as `rules` say (default `sharding.DEFAULT_RULES`).
    Returns:
      SampleOutput (numpy arrays) with B * n rows, the n completions of prompt 0 first, whole
      on every process.
    """
    for name, value in (("num_slots", num_slots), ("chunk", chunk), ("refill_at", refill_at)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
    rules = mesh_rules(mesh, rules, num_slots)
    strategy = Strategy(float(temperature), top_k, top_p)
    stop_tokens = sampler.validate_settings(config, max_new_tokens, n, strategy, stop_tokens)
    sampler.validate_batch(config, prompt_tokens, prompt_lengths, token_limits, prompt_ids,
                           max_new_tokens, None)
    tokens, lengths = np.asarray(prompt_tokens), np.asarray(prompt_lengths)
    width = tokens.shape[1]
    prompts = [row[width - length:] for row, length in zip(tokens.tolist(), lengths.tolist())]
    budgets = (np.full((len(prompts),), max_new_tokens) if token_limits is None
               else np.asarray(token_limits)).tolist()
    ids = np.arange(len(prompts)) if prompt_ids is None else np.asarray(prompt_ids)
    return sample_prompts(config, params, prompts, rng, max_new_tokens=int(max_new_tokens),
                          budgets=budgets, prompt_ids=ids.tolist(), n=int(n), strategy=strategy,
                          stop_tokens=stop_tokens, num_slots=int(num_slots), chunk=int(chunk),
                          refill_at=int(refill_at), mesh=mesh, rules=rules)
