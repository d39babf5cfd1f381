r"""Rejection sampling (R1 stage 3): sample n responses per prompt, keep the verified ones that pass
the filters, mix reasoning and general rows, and write chat records for SFT.

    python -m launch.rejection_sample --config=configs/rejection_sampling.py[:VARIANT] --workdir=DIR \
        [--config.model.path=R1_ZERO_WORKDIR] [--config.k=v ...]

The policy (config.model.path) is a Hugging Face directory, a .gguf file, an r1jax training
workdir (its newest checkpoint; tokenizer from WORKDIR/tokenizer or config.model.tokenizer) or
WORKDIR/checkpoints/STEP; empty: a random model of config.model.preset (tests).

DIR gets shards/ (per shard: accepted and rejected rows and stats, each written atomically),
then accepted.jsonl (the mix: {"messages", "provenance"} chat records for
configs/rejection_sft.py), rejected_sample.jsonl and stats.json. Running the same command again
after an interruption finishes the missing shards only; the output is the same as an
uninterrupted run's. Each process (R1JAX_* variables or a pod; see r1jax/distributed.py) samples
its own shards on a mesh of its own devices; process 0 writes the merged view at the end.
"""
import json
import logging
import os

from absl import flags
from ml_collections import config_flags

from launch import cli

FLAGS = flags.FLAGS
CONFIG_FILE = "config.json"


def define_flags():
    """The binary's flags; defined only when it runs, so tests can import this module."""
    config_flags.DEFINE_config_file("config", None, "configs/rejection_sampling.py[:variant].",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Output directory (resumed when it holds shards).")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")
    flags.mark_flags_as_required(["config", "workdir"])


def validate(config):
    """Everything about the config that can fail, before any model loads.

    Returns the prompts. Raises ValueError / FileNotFoundError naming the key at fault.
    """
    from r1jax import sampling
    from r1jax.rejection import judge, select, sources
    select.validate(config.select)
    if config.sampling.batching not in sampling.BATCHING:
        raise ValueError(f"sampling.batching={config.sampling.batching!r}: expected one of "
                         f"{sampling.BATCHING}")
    if config.judge.mode not in judge.MODES:
        raise ValueError(f"judge.mode={config.judge.mode!r}: expected one of {judge.MODES}")
    if not (config.model.path or config.model.preset):
        raise ValueError("model.path is empty: give a HF directory, .gguf file or r1jax workdir "
                         "(or model.preset for a random model)")
    prompts = sources.load_prompts(config)
    kinds = {sources.is_reasoning(s.kind) for s in config.sources.values()}
    if config.select.ratio and kinds != {True, False}:
        raise ValueError(f"select.ratio={config.select.ratio} mixes reasoning (math, code) and general "
                         "(chat) sources, but the sources are all of one group: add one of the other "
                         "or set select.ratio=0 (no mix)")
    if not prompts:
        raise ValueError("the sources hold no prompts (quota 0 of an empty file?)")
    return prompts


def check_workdir(config, workdir: str, is_main: bool):
    """Refuses a workdir that holds another config's run (its shards would be mixed in)."""
    path = os.path.join(workdir, CONFIG_FILE)
    text = config.to_json_best_effort(indent=1, sort_keys=True)
    if os.path.exists(path):
        with open(path) as f:
            if f.read() != text:
                raise ValueError(f"{workdir} holds a run with another config ({path}); use a new "
                                 "--workdir, or the same flags as that run to resume it")
    elif is_main:
        from r1jax.rejection import engine
        os.makedirs(workdir, exist_ok=True)
        engine.write_atomically(path, text)


def load_model(model_config):
    """(ModelConfig, params (numpy or None: initialise), tokenizer, checkpoint step)."""
    from r1jax import models
    if not model_config.path:
        config, params, tokenizer = models.load_policy(model_config)
        return config, params, tokenizer, None
    config, params, tokenizer, step = models.policy.load_model(model_config.path, model_config.tokenizer or None)
    config = config.replace(dtype=model_config.dtype)
    if model_config.max_seq_len:
        config = config.replace(max_seq_len=model_config.max_seq_len)
    return config, params, tokenizer, step


def local_mesh(config):
    """This process's mesh over its own devices, and the sharding rules."""
    import jax

    from r1jax import sharding
    from r1jax.train import run
    shape = run.resolve_mesh_shape(config.mesh.shape, jax.local_device_count())
    rules = tuple(tuple(r) for r in config.mesh.rules) or sharding.DEFAULT_RULES
    return sharding.make_mesh(shape, jax.local_devices()), rules


def _place(model_config, params, mesh, rules, seed: int):
    """Params on the mesh: the loaded ones sharded, or a random init of the preset."""
    import jax

    from r1jax import sharding
    if params is None:
        return sharding.init_params_sharded(model_config, jax.random.key(seed), mesh, rules)
    return sharding.shard_params(model_config, params, mesh, rules)


def build_runner(config, mesh, rules):
    """The engine's ShardRunner: the policy, and the judge when a source asks for one (the
    policy itself unless judge.model names another model)."""
    from r1jax.rejection import engine, judge, policy
    model_config, params, tokenizer, step = load_model(config.model)
    params = _place(model_config, params, mesh, rules, config.sampling.seed)
    model = policy.ModelPolicy(model_config, params, tokenizer, config.sampling, mesh, rules,
                               name=config.model.path or config.model.preset, step=step)
    if not any(s.judge for s in config.sources.values()):
        return engine.ShardRunner(config, model)
    judge_model = (model_config, params, tokenizer)
    if config.judge.model:
        from r1jax.models import policy
        j_config, j_params, j_tokenizer, _ = policy.load_model(config.judge.model,
                                                                 config.judge.tokenizer or None)
        judge_model = (j_config, _place(j_config, j_params, mesh, rules, 0), j_tokenizer)
    complete = judge.model_completer(*judge_model, max_new_tokens=config.judge.max_new_tokens,
                                     batch_size=config.sampling.batch_size,
                                     batching=config.sampling.batching, mesh=mesh, rules=rules)
    return engine.ShardRunner(config, model, judge.Judge(
        complete, template=config.judge.template, mode=config.judge.mode,
        threshold=config.judge.threshold))


def summary_table(stats: dict) -> str:
    """Per source: prompts, samples, accepted, in the mix, and the rejection reasons."""
    lines = [f"{'source':<12} {'prompts':>7} {'samples':>7} {'accepted':>8} {'in mix':>6}  rejected"]
    for name, s in stats["sources"].items():
        lines.append(f"{name:<12} {s['prompts']:>7} {s['samples']:>7} {s['accepted']:>8} "
                     f"{s['in_mix']:>6}  {json.dumps(s['rejected'])}")
    return "\n".join(lines)


def run(config, workdir: str, progress: bool = True) -> dict | None:
    """Runs (or resumes) rejection sampling into workdir; returns the merged stats on process 0
    (None on the others). launch/pipeline.py calls it for its data stages."""
    import jax

    from r1jax import distributed
    from r1jax.rejection import engine, merge
    prompts = validate(config)
    check_workdir(config, workdir, distributed.is_main_process())
    mesh, rules = local_mesh(config)
    runner = build_runner(config, mesh, rules)
    engine.run(config, prompts, runner, workdir, jax.process_index(), jax.process_count(),
               progress=progress)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("rejection_sampling_done")
    if not distributed.is_main_process():
        return None
    return merge.merge(config, workdir, len(prompts))


def main(argv):
    del argv
    logging.getLogger("absl").setLevel(logging.WARNING)
    from r1jax import distributed
    distributed.maybe_initialize()  # Before any other JAX call.
    from r1jax.rejection import merge
    stats = run(FLAGS.config, FLAGS.workdir, FLAGS.progress)
    if stats is not None:
        print(summary_table(stats))
        print(f"wrote {os.path.join(FLAGS.workdir, merge.ACCEPTED)} ({stats['mix']['total']} rows) and stats.json")


if __name__ == "__main__":
    cli.run(main, define_flags)
