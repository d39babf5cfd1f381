"""Peak temporary memory of a compiled GRPO train step against sequence length: the full
[B, T, V] float32 logits vs chunked log-probs (r1jax.losses.logprobs.chunked_logprobs).

The step is r1jax's GRPO loss (token log-probs at the sampling temperature, clipped ratio, no
KL) and its gradient, plus an AdamW update, for one sequence of T tokens on a Qwen2.5-1.5B shape
(float32 master weights, bfloat16 compute, model.remat=full so that the layer activations do
not hide the logits). Inputs are abstract (jax.ShapeDtypeStruct): each step is lowered and
compiled, never run, and XLA's memory analysis of the executable gives its temporary bytes
(arguments and outputs, i.e. parameters and optimizer state, excluded).

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


def temp_bytes(config, length: int, chunked: bool, chunk: int) -> tuple[int, float]:
    """(the compiled step's temporary bytes, compile seconds) at sequence length `length`."""
    optimizer = optax.adamw(1e-6)
    params = jax.eval_shape(lambda: models.init_params(config, jax.random.key(0)))
    opt_state = jax.eval_shape(optimizer.init, params)
    spec = jax.ShapeDtypeStruct
    args = (params, opt_state, spec((1, length), jnp.int32), spec((1, length - 1), jnp.float32),
            spec((1,), jnp.float32), spec((1, length - 1), jnp.float32))
    start = time.perf_counter()
    compiled = jax.jit(train_step(config, optimizer, chunked, chunk),
                       donate_argnums=(0, 1)).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes, time.perf_counter() - start


def main(_):
    lengths = [int(x) for x in _LENGTHS.value]
    config = models.preset("qwen2_5_1_5b", num_layers=_LAYERS.value, dtype="bfloat16",
                           remat="full", max_seq_len=max(lengths))
    rows = {"unchunked": [], "chunked": []}
    seconds = []
    for length in lengths:
        for name in rows:
            size, took = temp_bytes(config, length, name == "chunked", _CHUNK.value)
            rows[name].append(size)
            seconds.append(took)
        logits_bytes = length * config.vocab_size * 4
        print(f"T={length}: unchunked {rows['unchunked'][-1] / 2**30:.2f} GiB, chunked "
              f"{rows['chunked'][-1] / 2**30:.2f} GiB (one float32 [T, V] logits array: "
              f"{logits_bytes / 2**30:.2f} GiB)", flush=True)
    backend = jax.default_backend()
    result = {
            "benchmark": "train_memory", "model": "qwen2_5_1_5b shape", "layers": config.num_layers,
            "layers_note": ("all 28 layers" if config.num_layers == 28 else
                            f"{config.num_layers} of 28 layers, to compile on this machine"),
            "dtype": "bfloat16 compute, float32 params and AdamW state", "remat": config.remat,
            "batch": 1, "chunk": _CHUNK.value, "vocab_size": config.vocab_size,
            "step": "GRPO loss (no KL) + grad + AdamW, compiled only (memory_analysis)",
            "device": (f"cpu: {cpu_name()}" if backend == "cpu" else jax.devices()[0].device_kind),
            "lengths": lengths, "unit": "bytes", **rows,
            "saved": [u - c for u, c in zip(rows["unchunked"], rows["chunked"])],
            "logits_float32_bytes": [n * config.vocab_size * 4 for n in lengths],
            "compile_seconds": seconds, "versions": {"jax": jax.__version__},
    }
    write_result(result, _OUTPUT.value or os.path.join(
            os.path.dirname(__file__), "results", f"train_memory_{backend}.json"))
    print(json.dumps({"lengths": lengths, **rows}))


if __name__ == "__main__":
    app.run(main)
