r"""The whole R1 recipe as one job: every stage in order, each reading the earlier ones' outputs,
resumable per stage, ending in DIR/report.md (a stage × metric table and plots).

    python -m launch.pipeline --config=configs/pipeline.py[:VARIANT] --workdir=DIR \
        [--config.stages.<stage>.<key>=value] [--config.skip.<stage>=True] \
        [--config.given.<stage>=PATH]

Stages and their wiring: r1jax/pipeline/plan.py. Each runs in DIR/<nn>_<stage>/: training
stages in train/ (checkpoints, metrics.jsonl; the model exported to model/ as a Hugging Face
directory for the stages after it), data stages in rejection/ (launch/rejection_sample.py's
output). A stage is finished when its DONE.json exists: running the same command again skips the
finished stages and resumes an interrupted one from its checkpoint (or its missing shards).
After every stage the models so far are evaluated on the same held-out sets (cached per model)
and the report is rewritten, so DIR/report.md shows how far the recipe got. Multi-host: the same
command on every host, as launch.train.
"""
import copy
import json
import logging
import os
import time

from absl import flags
from ml_collections import config_flags

from launch import cli

FLAGS = flags.FLAGS
log = logging.getLogger("r1jax.pipeline")


def define_flags():
    config_flags.DEFINE_config_file("config", None, "configs/pipeline.py[:variant].",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Where every stage's outputs and the report go.")
    flags.mark_flags_as_required(["config", "workdir"])


def _is_main() -> bool:
    import jax
    return jax.process_index() == 0


def _sync(name: str) -> None:
    import jax
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def _write_json(path: str, value) -> None:
    from r1jax.rejection.engine import write_atomically
    if _is_main():
        write_atomically(path, json.dumps(value, indent=1))


def export_model(source: str, target: str) -> str:
    """`source` (an r1jax workdir) exported as a HF directory at `target` (written under a
    temporary name, then renamed: an interrupted export is redone)."""
    from launch import convert
    if not os.path.isdir(target) and _is_main():
        tmp = target + ".tmp"
        convert.export(source, tmp)
        os.replace(tmp, target)
    _sync(f"export {target}")
    return target


def loadable(path: str, stage_directory: str) -> str:
    """A model path the trainers load (HF directory or .gguf): an r1jax workdir given as a
    model is exported into the stage's directory first."""
    from r1jax.models import policy
    if policy.checkpoint_location(path) is None:
        return path
    return export_model(path, os.path.join(stage_directory, "input_model"))


def wired(section, *, model: str = "", data: str = "", prepared: str = "",
          reward_models: dict | None = None):
    """A copy of a stage's config with the paths the pipeline gives it: the model it starts
    from (its tokenizer from the same place), the chat JSONL it trains on (prepared into
    `prepared`), and the reward models its rewards read."""
    config = copy.deepcopy(section)
    if model:
        config.model.update(path=model, tokenizer="")
    if data:
        config.data.update(input=data, data_dir=prepared)
    for source in (reward_models and config.mixture.values()) or ():
        for reward, params in source.rewards_params.items():
            if reward in reward_models:
                params.path = reward_models[reward]
    return config


def _trainer(stage: str):
    if stage == "grpo":
        from r1jax.train import grpo as trainer
    elif stage == "reward_model":
        from r1jax.train import reward_model as trainer
    else:
        from r1jax.train import sft as trainer
    return trainer


def _train(config, workdir: str) -> list[dict]:
    """Trains (or resumes) `config` in workdir; returns its metrics.jsonl rows."""
    from r1jax.pipeline import report
    _trainer(config.stage).train(config, workdir)
    return report.read_metrics(os.path.join(workdir, "metrics.jsonl"))


def training_stats(rows: list[dict]) -> dict:
    """A training stage's own figures: held-out accuracy / pair accuracy at its first and last
    evaluation, rollout reward and loss over its first and last three steps."""
    out = {}
    for key in ("accuracy", "eval_pair_accuracy"):
        values = [r[key] for r in rows if key in r]
        if values:
            out[f"{key} first"], out[f"{key} last"] = values[0], values[-1]
    for key in ("reward_mean", "loss"):
        values = [r[key] for r in rows if key in r]
        if values:
            head, tail = values[:3], values[-3:]
            out[f"{key} first 3"] = sum(head) / len(head)
            out[f"{key} last 3"] = sum(tail) / len(tail)
    return out


def _rejection(config, workdir: str) -> dict:
    """Rejection sampling into workdir; returns its stats.json."""
    from launch import rejection_sample
    rejection_sample.run(config, workdir, progress=False)
    _sync(f"rejection {workdir}")
    with open(os.path.join(workdir, "stats.json")) as f:
        return json.load(f)


def rejection_stats(stats: dict) -> dict:
    out = {f"{name} accepted/samples": f"{s['accepted']}/{s['samples']}"
           for name, s in stats["sources"].items()}
    out["rows in the mix"] = stats["mix"]["total"]
    return out


def run_stage(config, workdir: str, name: str) -> dict:
    """Runs stage `name` (resuming it); returns its stats for the report."""
    from r1jax.pipeline import cold_start, plan
    stage, directory = plan.STAGES[name], plan.stage_dir(workdir, name)
    inputs = plan.inputs(config, workdir, name)
    model = loadable(inputs["model"], directory) if "model" in inputs else ""
    section = config.stages[name]
    prepared = os.path.join(directory, "prepared")
    if stage.kind in plan.MODEL_KINDS or stage.kind == "reward_model":
        rows = _train(wired(section, model=model, data=inputs.get("data", ""), prepared=prepared,
                            reward_models=inputs.get("reward_models")),
                      plan.train_dir(workdir, name))
        if stage.kind in plan.MODEL_KINDS:
            export_model(plan.train_dir(workdir, name), plan.model_dir(workdir, name))
        return training_stats(rows)
    if stage.kind in plan.DATA_KINDS:
        stats = _rejection(wired(section, model=model), plan.rejection_dir(workdir, name))
        out = rejection_stats(stats)
        if stage.kind == "cold_start":
            from r1jax.rejection import engine
            accepted = engine.read_jsonl(os.path.join(plan.rejection_dir(workdir, name),
                                                      "accepted.jsonl"))
            records, counts = cold_start.cold_start_records(accepted, config.cold_start.system)
            if not records:
                raise ValueError(f"no cold-start record: {counts}; sample more "
                                 f"(stages.{name}.sources) or give one with given.{name}=FILE")
            if _is_main():
                engine.write_atomically(plan.output_path(workdir, name), engine.jsonl(records))
            _sync(f"cold start {name}")
            out.update({"cold-start records": counts["kept"], "dropped": counts["dropped"]})
        return out
    # distill: SFT of every student on the final model's accepted rows.
    out = {}
    for student, path in config.students.items():
        student_model = loadable(path or plan.base_model(config, workdir),
                                 plan.student_dir(workdir, student))
        rows = _train(wired(section, model=student_model, data=inputs["data"],
                            prepared=os.path.join(plan.student_dir(workdir, student), "prepared")),
                      plan.student_train_dir(workdir, student))
        export_model(plan.student_train_dir(workdir, student),
                     os.path.join(plan.student_dir(workdir, student), "model"))
        out.update({f"{student} {k}": v for k, v in training_stats(rows).items()})
    return out


def prune_finished(config, workdir: str, name: str) -> None:
    """Deletes a finished stage's training checkpoints that no later stage reads: a policy's (its
    exported model/ is what the stages after it load), all but a reward model's newest (the
    rewards load it from there). The CPU default leaves 5.5 GB on disk instead of 28 GB."""
    from r1jax import checkpoint
    from r1jax.pipeline import plan
    kind = plan.STAGES[name].kind
    if kind in plan.MODEL_KINDS:
        checkpoint.prune(plan.train_dir(workdir, name), keep=0)
    elif kind == "reward_model":
        checkpoint.prune(plan.train_dir(workdir, name), keep=1)
    elif kind == "distill":
        for student in config.students:
            checkpoint.prune(plan.student_train_dir(workdir, student), keep=0)


def make_base(config, workdir: str) -> None:
    """Writes 00_base/model when the base is a preset (a random model, for tests), so every stage
    that starts from the base starts from the same weights."""
    import jax

    from r1jax import models
    from r1jax.models import convert
    from r1jax.pipeline import plan
    target = plan.base_model(config, workdir)
    if config.base.path or os.path.isdir(target):
        return
    if _is_main():
        model_config, _, tokenizer = models.load_policy(config.base)
        params = jax.device_get(models.init_params(model_config, jax.random.key(0)))
        convert.save_pretrained(model_config, params, target + ".tmp", tokenizer=tokenizer)
        os.replace(target + ".tmp", target)
    _sync("base")


def evaluated_models(config, workdir: str) -> list[tuple[str, str, str]]:
    """(label, model path, directory of its eval.json) of every model to evaluate so far: the
    base, each finished or given policy stage, each distilled student."""
    from r1jax.pipeline import plan
    out = [("base", plan.base_model(config, workdir), plan.stage_dir(workdir, plan.BASE))]
    for name in plan.ORDER:
        kind, directory = plan.STAGES[name].kind, plan.stage_dir(workdir, name)
        finished = config.given[name] or plan.done_record(workdir, name) is not None
        if config.skip[name] or not finished:
            continue
        if kind in plan.MODEL_KINDS:
            out.append((name, plan.model_of(config, workdir, name), directory))
        elif kind == "distill" and not config.given[name]:
            out += [(f"distill/{s}", os.path.join(plan.student_dir(workdir, s), "model"),
                     plan.student_dir(workdir, s)) for s in config.students]
    return out


def reward_models(config, workdir: str) -> dict:
    """{reward name: (path, apply_to)} of the reward models available so far."""
    from r1jax.pipeline import plan
    out = {}
    for reward, name in plan.STAGES["all_scenario_rl"].reward_models:
        if config.given[name] or (not config.skip[name] and plan.done_record(workdir, name)):
            out[reward] = (config.given[name] or plan.output_path(workdir, name),
                           plan.STAGES[name].apply_to)
    return out


def evaluate_all(config, workdir: str) -> list[dict]:
    """Every model's metrics, computing (and caching in its eval.json) what is missing."""
    from r1jax.data import splits
    from r1jax.pipeline import evaluation
    rms = reward_models(config, workdir)
    models_out, held_out = [], {}
    for label, path, directory in evaluated_models(config, workdir):
        cache_path = os.path.join(directory, "eval.json")
        cache = {}
        if os.path.exists(cache_path):
            with open(cache_path) as f:
                cache = json.load(f)
        if missing_groups(cache, rms):
            if not held_out:
                held_out["problems"] = splits.open_split(config.eval.data, "test",
                                                         config.eval.math.max_problems)
                held_out["general"] = evaluation.general_questions(
                    splits.open_split(config.eval.general_data, "test"),
                    config.eval.general_prompts)
            cache = _evaluate_model(config, path, cache, held_out, rms)
            os.makedirs(directory, exist_ok=True)
            _write_json(cache_path, cache)
            log.info("Evaluated %s: %s", label, {k: v for k, v in cache.items()
                                                 if k != "general_responses"})
        metrics = dict(cache.get("math", {}))
        metrics.update({k: v for k, v in cache.items() if k.startswith("rm/")})
        models_out.append({"label": label, "path": path, "metrics": metrics})
    return models_out


def missing_groups(cache: dict, rms: dict) -> set[str]:
    """The metric groups a model's eval.json lacks: "math", "general_responses" (when there are
    reward models to score them) and "rm/<reward>" per reward model."""
    wanted = {"math", *(f"rm/{r}" for r in rms)}
    if rms:
        wanted.add("general_responses")
    return wanted - set(cache)


def _evaluate_model(config, path: str, cache: dict, held_out: dict, rms: dict) -> dict:
    """`cache` with the missing metric groups of the model at `path` added."""
    import jax

    from r1jax import sharding
    from r1jax.models import policy
    from r1jax.pipeline import evaluation
    cache, missing = dict(cache), missing_groups(cache, rms)
    if missing & {"math", "general_responses"}:
        model_config, params, tokenizer, _ = policy.load_model(path)
        mesh = sharding.make_mesh({"fsdp": jax.device_count()}, jax.devices())
        rules = sharding.DEFAULT_RULES
        params = sharding.shard_params(model_config, params, mesh, rules)
        if "math" in missing:
            cache["math"] = evaluation.math_metrics(model_config, params, tokenizer,
                                                    held_out["problems"], config.eval.math,
                                                    mesh, rules)
        if "general_responses" in missing:
            cache["general_responses"] = evaluation.general_responses(
                model_config, params, tokenizer, held_out["general"], config.eval.general,
                mesh, rules)
    for reward, (rm_path, apply_to) in rms.items():
        if f"rm/{reward}" in missing:
            cache[f"rm/{reward}"] = evaluation.reward_model_score(
                rm_path, apply_to, held_out["general"], cache["general_responses"])
    return cache


def stage_rows(config, workdir: str) -> list[dict]:
    """Per stage, for the report: status, seconds, stats, and its metrics.jsonl rows."""
    from r1jax.pipeline import plan
    rows = []
    for name in plan.ORDER:
        record = plan.done_record(workdir, name)
        status = ("skipped" if config.skip[name] else "given" if config.given[name]
                  else "done" if record else "not run")
        rows.append({"name": name, "status": status, **(record or {})})
    return rows


def curves(config, workdir: str) -> list[tuple[str, str, list[dict]]]:
    """(stage, kind, metrics rows) of every training workdir, in pipeline order."""
    from r1jax.pipeline import plan, report
    out = []
    for name in plan.ORDER:
        kind = plan.STAGES[name].kind
        if kind == "distill":
            out += [(f"distill/{s}", kind, report.read_metrics(os.path.join(
                plan.student_train_dir(workdir, s), "metrics.jsonl"))) for s in config.students]
        elif kind in (*plan.MODEL_KINDS, "reward_model"):
            out.append((name, kind, report.read_metrics(
                os.path.join(plan.train_dir(workdir, name), "metrics.jsonl"))))
    return out


def update_report(config, workdir: str) -> str:
    from r1jax.pipeline import report
    models_out = evaluate_all(config, workdir)
    if not _is_main():
        return ""
    return report.write(workdir, stage_rows(config, workdir), models_out, curves(config, workdir))


def run(config, workdir: str) -> str:
    """Runs (or resumes) the pipeline in workdir; returns the report's path."""
    from r1jax import errors
    from r1jax.pipeline import plan
    plan.validate(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    _write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json_best_effort()))
    make_base(config, workdir)
    for name in plan.ORDER:
        label = os.path.basename(plan.stage_dir(workdir, name))
        if not plan.is_active(config, name):
            log.info("Stage %s: %s", label, "skipped" if config.skip[name] else
                     f"given ({config.given[name]})")
            continue
        if plan.done_record(workdir, name) is not None:
            log.info("Stage %s: finished earlier", label)
            continue
        log.info("Stage %s: running", label)
        start = time.perf_counter()
        try:
            stats = run_stage(config, workdir, name)
        except errors.EXPECTED as e:
            raise errors.UserError(f"stage {label} failed: {type(e).__name__}: {e} (the earlier "
                                   f"stages' outputs in {workdir} are kept; fix it and run the "
                                   "same command to resume)") from e
        except Exception:
            log.error("Stage %s failed (a bug: the traceback follows)", label)
            raise
        if _is_main():
            plan.mark_done(workdir, name, {"seconds": time.perf_counter() - start,
                                           "output": plan.output_path(workdir, name),
                                           "stats": stats})
        if not config.keep_stage_checkpoints:
            prune_finished(config, workdir, name)
        _sync(f"done {name}")
        path = update_report(config, workdir)
        log.info("Stage %s finished in %.0f s; report: %s", label, time.perf_counter() - start,
                 path)
    return update_report(config, workdir)


def main(argv):
    del argv
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("r1jax").setLevel(logging.INFO)
    from r1jax import distributed
    distributed.maybe_initialize()  # Before any other JAX call.
    path = run(FLAGS.config, FLAGS.workdir)
    if path:
        print(f"report: {path}")


if __name__ == "__main__":
    cli.run(main, define_flags)
