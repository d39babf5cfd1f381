"""Trainable parameters and train-state bytes with and without LoRA (model.lora).

For each model shape, three set-ups of the GRPO trainer: every weight trained (rank 0), rank-r
adapters on all seven projections over a float32 base, and the same over a bfloat16 base. For
each it reports the trainable parameters, the train state's bytes as `train.run.init_state`
builds it (params = base + adapters, AdamW state of the trainable part, π_ref's copy of the
trainable part when β > 0), the checkpoint's bytes (params item + optimizer state: the base is
not saved with LoRA), and the temporaries of the compiled GRPO update (`train.grpo.grpo_update`:
gradients, activations) from XLA's memory analysis. Everything is abstract
(jax.ShapeDtypeStruct): nothing is allocated or run.

  python benchmarks/lora_memory.py [--presets=smollm2_135m,qwen2_5_1_5b] [--rank=16]

Prints one line per set-up and, last, one JSON object; writes
benchmarks/results/lora_memory_<backend>.json.
"""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from host import cpu_name, write_result  # benchmarks/host.py, beside this script.

# configs/ is a directory of the repository, not an installed package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import r1_zero
from r1jax import models
from r1jax.models import lora
from r1jax.models.config import LORA_TARGETS, LoraConfig
from r1jax.train import grpo, run
from r1jax.train.rollouts import Rollouts

_PRESETS = flags.DEFINE_list("presets", ["smollm2_135m", "qwen2_5_1_5b"], "Model shapes.")
_RANK = flags.DEFINE_integer("rank", 16, "LoRA rank (alpha does not change memory).")
_BETA = flags.DEFINE_float("beta", 0.0, "GRPO's β: > 0 keeps π_ref in the state.")
_ROWS = flags.DEFINE_integer("rows", 32, "Rollout rows per update (default task: 4 × 8).")
_PROMPT = flags.DEFINE_integer("prompt_len", 64, "Prompt tokens per row.")
_COMPLETION = flags.DEFINE_integer("completion_len", 16, "Completion tokens per row.")
_OUTPUT = flags.DEFINE_string("output", None, "Where the JSON result goes.")


def tree_bytes(tree) -> int:
    return int(sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def abstract_state(model_config, base_dtype: str, optimizer, with_reference: bool):
    """The TrainState `run.init_state` builds, as shapes."""
    def build():
        params = models.init_params(model_config, jax.random.key(0))
        if model_config.lora is not None:
            params = lora.with_base_dtype(params, base_dtype)
        trainable = lora.trainable(params)
        return run.TrainState(params=params, opt_state=optimizer.init(trainable),
                              reference=trainable if with_reference else None,
                              updates=jnp.zeros((), jnp.int32))
    return jax.eval_shape(build)


def abstract_rollouts(rows: int, prompt: int, completion: int) -> Rollouts:
    spec = jax.ShapeDtypeStruct
    f32, i32 = jnp.float32, jnp.int32
    return Rollouts(
        prompt_tokens=spec((rows, prompt), i32), prompt_lengths=spec((rows,), i32),
        completions=spec((rows, completion), i32), mask=spec((rows, completion), f32),
        logprobs=spec((rows, completion), f32), sampler_logprobs=spec((rows, completion), f32),
        ref_logprobs=spec((rows, completion), f32) if _BETA.value > 0 else None,
        advantages=spec((rows,), f32), rewards=spec((rows,), f32),
        reward_failed=spec((rows,), bool), reward_components={}, lengths=spec((rows,), i32),
        finished_by_stop=spec((rows,), bool))


def measure(preset: str, rank: int, base_dtype: str) -> dict:
    config = r1_zero.get_config("cpu" if preset == "smollm2_135m" else "qwen2_5_1_5b")
    config.rl.beta = _BETA.value
    dtype = "float32" if preset == "smollm2_135m" else "bfloat16"  # the variants' compute dtype
    model_config = models.preset(preset, dtype=dtype,
                                 lora=LoraConfig(rank=rank, alpha=32.0) if rank else None)
    optimizer = run.make_optimizer(config.optimizer, lambda _: 1e-5, model_config)
    state = abstract_state(model_config, base_dtype, optimizer, _BETA.value > 0)
    update = jax.jit(lambda s, b: grpo.grpo_update(
        s, b, model_config=model_config, optimizer=optimizer, rl=config.rl,
        nan_policy="stop"), donate_argnums=0)
    compiled = update.lower(state, abstract_rollouts(_ROWS.value, _PROMPT.value,
                                                     _COMPLETION.value)).compile()
    trainable = lora.trainable(state.params)
    return {"preset": preset, "lora_rank": rank, "base_dtype": base_dtype if rank else "float32",
            "compute_dtype": dtype, "params": lora.count(state.params),
            "trainable_params": lora.count(trainable),
            "train_state_bytes": tree_bytes(state), "params_bytes": tree_bytes(state.params),
            "optimizer_state_bytes": tree_bytes(state.opt_state),
            "reference_bytes": tree_bytes(state.reference),
            "checkpoint_bytes": tree_bytes(trainable) + tree_bytes(state.opt_state)
                                + tree_bytes(state.reference),
            "update_temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes)}


def main(_):
    rows = []
    for preset in _PRESETS.value:
        for rank, base_dtype in ((0, "float32"), (_RANK.value, "float32"),
                                 (_RANK.value, "bfloat16")):
            row = measure(preset, rank, base_dtype)
            rows.append(row)
            mib = lambda key: row[key] / 2**20
            print(f"{preset} rank {rank} base {row['base_dtype']}: trainable "
                  f"{row['trainable_params'] / 1e6:.2f}M of {row['params'] / 1e6:.1f}M; state "
                  f"{mib('train_state_bytes'):.0f} MiB (optimizer {mib('optimizer_state_bytes'):.1f}"
                  f"), checkpoint {mib('checkpoint_bytes'):.1f} MiB, update temporaries "
                  f"{mib('update_temp_bytes'):.0f} MiB", flush=True)
    backend = jax.default_backend()
    result = {"benchmark": "lora_memory", "targets": list(LORA_TARGETS),
              "optimizer": "AdamW (+ global-norm clipping), float32 state",
              "beta": _BETA.value,
              "update": f"grpo_update on {_ROWS.value} rows × ({_PROMPT.value} prompt + "
                        f"{_COMPLETION.value} completion) tokens, compiled only",
              "device": (f"cpu: {cpu_name()}" if backend == "cpu" else jax.devices()[0].device_kind),
              "unit": "bytes", "rows": rows, "versions": {"jax": jax.__version__}}
    write_result(result, _OUTPUT.value or os.path.join(
        os.path.dirname(__file__), "results", f"lora_memory_{backend}.json"))
    print(json.dumps(rows))


if __name__ == "__main__":
    app.run(main)
