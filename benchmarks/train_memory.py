"""Peak temporary memory of a compiled GRPO train step against sequence length: the full
[B, T, V] float32 logits vs chunked log-probs (r1jax.losses.logprobs.chunked_logprobs).

The step is r1jax's GRPO loss (token log-probs at the sampling temperature, clipped ratio, no
KL) and its gradient, plus an AdamW update, for one sequence of T tokens on a Qwen2.5-1.5B shape
(float32 master weights, bfloat16 compute, model.remat=full so that the layer activations do
not hide the logits). Inputs are abstract (jax.ShapeDtypeStruct): each step is lowered and
compiled, never run, and XLA's memory analysis of the executable gives its temporary bytes
(arguments and outputs, i.e. parameters and optimizer state, excluded).

A step's peak is set by its largest phase. With XLA's attention (the CPU's) the backward pass of
one layer holds [H, T, T] float32 scores and probabilities: from 8k tokens on they outweigh the
logits and the whole step's peak does not move with chunking. The GPU and TPU kernels
(--attention_impl=cudnn / splash) keep attention linear in T, where the logits' share shows in
the whole step. So the script also compiles the loss head alone (final hidden states and output
projection -> log-probs -> GRPO loss, gradients for both): its temporaries are the logits' share.

Compiling a 28-layer model at 16k tokens on a CPU is slow and memory-hungry: --layers keeps
fewer layers (the logits' share is per step, not per layer; the layers' own temporaries are
one layer's worth with remat=full). The result says which was used.

  python benchmarks/train_memory.py [--lengths=1024,2048,4096,8192,16384] [--layers=28]

Prints one line per length and, last, one JSON object: {"lengths": [...], "unchunked": [...],
"chunked": [...], ...} (bytes); writes benchmarks/results/train_memory_<backend>.json.
"""
import json
import os
import time

import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from host import cpu_name, write_result  # benchmarks/host.py, beside this script.

from r1jax import models
from r1jax.losses import grpo, logprobs

_LENGTHS = flags.DEFINE_list("lengths", ["1024", "2048", "4096", "8192", "16384"],
                             "Sequence lengths to compile the step at.")
_LAYERS = flags.DEFINE_integer("layers", 28, "Decoder layers (Qwen2.5-1.5B has 28).")
_CHUNK = flags.DEFINE_integer("chunk", 1024, "Positions per log-prob chunk.")
_ATTENTION = flags.DEFINE_enum("attention_impl", "xla", ["xla", "cudnn", "splash"],
                               "model.attention_impl (cudnn on GPU, splash on TPU).")
_OUTPUT = flags.DEFINE_string("output", None, "Where the JSON result goes (default: "
                              "results/train_memory_<backend>.json).")

TEMPERATURE = 1.0


def token_logprobs(config, params, tokens, chunked: bool, chunk: int):
    """float32[1, T - 1] log-probs of tokens[:, 1:], through full logits or in chunks."""
    positions = jnp.arange(tokens.shape[1], dtype=jnp.int32)[None]
    if not chunked:
        logits, _ = models.forward(config, params, tokens, positions)
        return logprobs.token_logprobs(logits[:, :-1], tokens[:, 1:], TEMPERATURE)
    hidden, _ = models.forward(config, params, tokens, positions, return_hidden=True)
    return logprobs.chunked_logprobs(hidden[:, :-1], models.output_head(config, params),
                                     tokens[:, 1:], TEMPERATURE, chunk)[0]


def train_step(config, optimizer, chunked: bool, chunk: int):
    def step(params, opt_state, tokens, old_logprobs, advantages, mask):
        def loss(params):
            new = token_logprobs(config, params, tokens, chunked, chunk)
            return grpo.grpo_loss(new, old_logprobs, None, advantages, mask, eps_low=0.2,
                                  eps_high=0.2, beta=0.0)[0]

        grads = jax.grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return step


def head_step(config, chunked: bool, chunk: int):
    """The loss head alone: hidden states [1, T, E] and the output projection to the GRPO loss,
    with gradients for both (what the full step adds on top of the layers)."""
    def step(hidden, embedding, tokens, old_logprobs, advantages, mask):
        def loss(hidden, embedding):
            head = embedding.T.astype(config.dtype)
            if chunked:
                new = logprobs.chunked_logprobs(hidden, head, tokens, TEMPERATURE, chunk)[0]
            else:
                new = logprobs.token_logprobs(models.transformer.head_logits(hidden, head), tokens,
                                              TEMPERATURE)
            return grpo.grpo_loss(new, old_logprobs, None, advantages, mask, eps_low=0.2,
                                  eps_high=0.2, beta=0.0)[0]

        return jax.grad(loss, argnums=(0, 1))(hidden, embedding)

    return step


def compiled_temp_bytes(fn, args, donate=()) -> tuple[int, float]:
    """(temporary bytes of fn compiled for abstract args, compile seconds)."""
    start = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes, time.perf_counter() - start


def head_temp_bytes(config, length: int, chunked: bool, chunk: int) -> tuple[int, float]:
    spec = jax.ShapeDtypeStruct
    args = (spec((1, length, config.embed_dim), jnp.dtype(config.dtype)),
            spec((config.vocab_size, config.embed_dim), jnp.float32), spec((1, length), jnp.int32),
            spec((1, length), jnp.float32), spec((1,), jnp.float32), spec((1, length), jnp.float32))
    return compiled_temp_bytes(head_step(config, chunked, chunk), args)


def temp_bytes(config, length: int, chunked: bool, chunk: int) -> tuple[int, float]:
    """(the compiled step's temporary bytes, compile seconds) at sequence length `length`."""
    optimizer = optax.adamw(1e-6)
    params = jax.eval_shape(lambda: models.init_params(config, jax.random.key(0)))
    opt_state = jax.eval_shape(optimizer.init, params)
    spec = jax.ShapeDtypeStruct
    args = (params, opt_state, spec((1, length), jnp.int32), spec((1, length - 1), jnp.float32),
            spec((1,), jnp.float32), spec((1, length - 1), jnp.float32))
    # The train state is donated, as the trainers do: the gradients are then temporaries.
    return compiled_temp_bytes(train_step(config, optimizer, chunked, chunk), args, (0, 1))


def main(_):
    lengths = [int(x) for x in _LENGTHS.value]
    config = models.preset("qwen2_5_1_5b", num_layers=_LAYERS.value, dtype="bfloat16",
                           remat="full", max_seq_len=max(lengths),
                           attention_impl=_ATTENTION.value)
    rows = {"unchunked": [], "chunked": []}
    head = {"unchunked": [], "chunked": []}
    seconds = []
    for length in lengths:
        for name in rows:
            for table, measure in ((rows, temp_bytes), (head, head_temp_bytes)):
                size, took = measure(config, length, name == "chunked", _CHUNK.value)
                table[name].append(size)
                seconds.append(took)
        gib = lambda table, name: table[name][-1] / 2**30
        print(f"T={length}: step unchunked {gib(rows, 'unchunked'):.2f} GiB, chunked "
              f"{gib(rows, 'chunked'):.2f} GiB; loss head unchunked {gib(head, 'unchunked'):.2f} "
              f"GiB, chunked {gib(head, 'chunked'):.2f} GiB (one float32 [T, V] logits array: "
              f"{length * config.vocab_size * 4 / 2**30:.2f} GiB)", flush=True)
    backend = jax.default_backend()
    result = {
            "benchmark": "train_memory", "model": "qwen2_5_1_5b shape", "layers": config.num_layers,
            "layers_note": ("all 28 layers" if config.num_layers == 28 else
                            f"{config.num_layers} of 28 layers, to compile on this machine"),
            "dtype": "bfloat16 compute, float32 params and AdamW state", "remat": config.remat,
            "attention_impl": config.attention_impl,
            "batch": 1, "chunk": _CHUNK.value, "vocab_size": config.vocab_size,
            "step": "GRPO loss (no KL) + grad + AdamW, compiled only (memory_analysis)",
            "device": (f"cpu: {cpu_name()}" if backend == "cpu" else jax.devices()[0].device_kind),
            "lengths": lengths, "unit": "bytes", **rows,
            "saved": [u - c for u, c in zip(rows["unchunked"], rows["chunked"])],
            "loss_head": head,
            "note": ("whole step: temporaries (parameters, optimizer state excluded; gradients "
                     "included) at the step's peak phase; with XLA attention the layers' [H, T, T] "
                     "scores set that peak from 8k tokens on. loss_head: the same for the head "
                     "alone (hidden states + projection -> loss, both gradients)."),
            "logits_float32_bytes": [n * config.vocab_size * 4 for n in lengths],
            "compile_seconds": seconds, "versions": {"jax": jax.__version__},
    }
    write_result(result, _OUTPUT.value or os.path.join(
            os.path.dirname(__file__), "results", f"train_memory_{backend}.json"))
    print(json.dumps({"lengths": lengths, **rows, "loss_head": head}))


if __name__ == "__main__":
    app.run(main)
