"""The whole recipe as one job (launch/pipeline.py, r1jax/pipeline/): the wiring and its start-up
checks, the cold-start rewrite, the report, and the tiny pipeline end to end: every stage, a
SIGKILL in the middle of a stage and the same command again ending with the uninterrupted run's
final models, and a failing stage stopping the job with its name, earlier outputs intact."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from configs import common
from configs import pipeline as pipeline_configs
from r1jax import rewards
from r1jax.pipeline import cold_start, plan, report
from tests.test_two_process_train import environment, sigkill_when

REPO = pathlib.Path(__file__).resolve().parent.parent
TIMEOUT_S = 900

needs_data = pytest.mark.skipif(not os.path.isdir(common.SHARED_DATA),
                                reason=f"needs the shared data sets in {common.SHARED_DATA}")


# --- wiring ---------------------------------------------------------------------------------

@pytest.fixture
def config():
    return pipeline_configs.get_config("tiny")


def test_every_stage_reads_the_stage_before_it(config, tmp_path):
    w = str(tmp_path)
    assert plan.inputs(config, w, "r1_zero") == {"model": plan.base_model(config, w)}
    assert plan.inputs(config, w, "cold_start_data")["model"] == plan.model_dir(w, "r1_zero")
    sft = plan.inputs(config, w, "cold_start_sft")
    assert sft["model"] == plan.base_model(config, w)  # R1: SFT of the base model
    assert sft["data"] == str(tmp_path / "02_cold_start_data" / "cold_start.jsonl")
    assert plan.inputs(config, w, "reasoning_rl")["model"] == plan.model_dir(w, "cold_start_sft")
    assert plan.inputs(config, w, "rejection_sft")["data"].endswith(
        "05_rejection_sampling/rejection/accepted.jsonl")
    scenario = plan.inputs(config, w, "all_scenario_rl")
    assert scenario["model"] == plan.model_dir(w, "rejection_sft")
    assert scenario["reward_models"] == {"helpfulness": plan.train_dir(w, "reward_helpful"),
                                         "harmlessness": plan.train_dir(w, "reward_harmless")}
    assert plan.inputs(config, w, "distill_data")["model"] == plan.model_dir(w, "all_scenario_rl")


def test_a_skipped_training_stage_passes_its_model_on(config, tmp_path):
    config.skip.reasoning_rl = True
    config.skip.r1_zero = True
    config.given.cold_start_data = str(tmp_path)
    w = str(tmp_path)
    assert plan.inputs(config, w, "rejection_sampling")["model"] == plan.model_dir(w, "cold_start_sft")
    plan.validate(config, w)


def test_a_skipped_data_stage_must_be_given_or_its_readers_skipped(config, tmp_path):
    config.skip.cold_start_data = True
    with pytest.raises(ValueError, match="stage cold_start_sft reads the output of stage "
                                         "cold_start_data, which is skipped"):
        plan.validate(config, str(tmp_path))
    config.skip.cold_start_sft = True
    plan.validate(config, str(tmp_path))


def test_bad_stage_settings_are_named_at_start_up(config, tmp_path):
    config.given.reward_helpful = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="config.given.reward_helpful="):
        plan.validate(config, str(tmp_path))
    config.given.reward_helpful = ""
    config.stages.reasoning_rl.stage = "sft"
    with pytest.raises(ValueError, match="config.stages.reasoning_rl.stage='sft'.*'grpo'"):
        plan.validate(config, str(tmp_path))


def test_every_variant_loads_and_wires():
    for variant in pipeline_configs.VARIANTS:
        config = pipeline_configs.get_config(variant)
        assert set(config.stages) == set(plan.ORDER)
        for name in plan.ORDER:
            assert config.stages[name].stage == plan.TRAINER_STAGE[plan.STAGES[name].kind]


# --- cold start -----------------------------------------------------------------------------

def _row(response: str, question="What is 40 + 36?", reference="76") -> dict:
    return {"messages": [{"role": "user", "content": f"{question} Reply with just the number."},
                         {"role": "assistant", "content": response}],
            "provenance": {"question": question, "reference": reference, "source": "addition"}}


def test_cold_start_rewrite_is_readable_and_scores_full_marks():
    rows = [_row("40 + 36 = 76"), _row("<think>6 + 0 = 6, 40 + 30 = 70</think> <answer>76</answer>"),
            _row("76"), _row("  76 ")]
    records, stats = cold_start.cold_start_records(rows, system="SYS")
    assert stats == {"accepted_rows": 4, "kept": 2, "dropped": {"no_reasoning": 2}}
    texts = [r["messages"][-1]["content"] for r in records]
    assert texts == ["<think>\n40 + 36 = 76\n</think>\n<answer>76</answer>",
                     "<think>\n6 + 0 = 6, 40 + 30 = 70\n</think>\n<answer>76</answer>"]
    assert [m["role"] for m in records[0]["messages"]] == ["system", "user", "assistant"]
    assert records[0]["messages"][1]["content"] == "What is 40 + 36?"  # the bare question
    assert records[0]["provenance"]["rewritten_from"] == "40 + 36 = 76"
    # The next stage's strict rewards pay the rewritten text in full.
    prompts = ["What is 40 + 36?"] * 2
    assert rewards.get("format")(prompts, texts) == [1.0, 1.0]
    assert rewards.get("math_accuracy", sources=("answer",))(prompts, texts, answer=["76", "76"]) == [1.0, 1.0]


# --- report ---------------------------------------------------------------------------------

def test_only_the_missing_metric_groups_are_computed():
    from launch.pipeline import missing_groups
    rms = {"helpfulness": ("rm", "final_answer"), "harmlessness": ("rm", "response")}
    assert missing_groups({}, {}) == {"math"}
    assert missing_groups({"math": {}}, {}) == set()
    assert missing_groups({"math": {}}, rms) == {"general_responses", "rm/helpfulness",
                                                 "rm/harmlessness"}
    assert missing_groups({"math": {}, "general_responses": [], "rm/helpfulness": 0.1},
                          rms) == {"rm/harmlessness"}


def test_report_tables_and_plots(tmp_path):
    models = [{"label": "base", "metrics": {"pass@1": 0.225, "format": 0.0, "rm/helpfulness": -0.5}},
              {"label": "r1_zero", "metrics": {"pass@1": 0.7, "format": float("nan")}}]
    table = report.models_table(models)
    assert table.splitlines()[0] == ("| model | pass@1 | format | language_consistency | "
                                     "response_tokens | rm/helpfulness |")
    assert table.splitlines()[2] == "| base | 0.225 | 0.000 | – | – | -0.500 |"
    assert table.splitlines()[3] == "| r1_zero | 0.700 | – | – | – | – |"
    stages = [{"name": "r1_zero", "status": "done", "seconds": 90, "stats": {"accuracy last": 0.7}},
              {"name": "distill", "status": "skipped"}]
    curves = [("r1_zero", "grpo", [{"step": 0, "accuracy": 0.2}, {"step": 1, "reward_mean": 0.1},
                                   {"step": 2, "accuracy": 0.7, "reward_mean": 0.5}])]
    path = report.write(str(tmp_path), stages, models, curves)
    text = pathlib.Path(path).read_text()
    assert "| r1_zero | done | 1.5 | accuracy last 0.700 |" in text
    assert "| distill | skipped | – | – |" in text
    for png in ("curves.png", "stages.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "report.json").read_text())["models"] == json.loads(
        json.dumps(models))


# --- end to end -----------------------------------------------------------------------------

def _command(workdir, *flags) -> list[str]:
    return [sys.executable, "-m", "launch.pipeline",
            f"--config={REPO / 'configs' / 'pipeline.py'}:tiny", f"--workdir={workdir}", *flags]


def _run(workdir, *flags) -> subprocess.CompletedProcess:
    return subprocess.run(_command(workdir, *flags), cwd=REPO, env=environment(devices=1),
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def _final_models(workdir: pathlib.Path) -> dict:
    out = {}
    for name in ("09_all_scenario_rl/model", "11_distill/base/model"):
        for path in sorted((workdir / name).glob("*.safetensors")):
            out.update({f"{name}/{k}": v for k, v in load_file(path).items()})
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline")
    result = _run(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


@needs_data
def test_tiny_pipeline_runs_every_stage_and_reports(uninterrupted):
    for name in plan.ORDER:
        assert plan.done_record(str(uninterrupted), name) is not None, name
    summary = json.loads((uninterrupted / "report.json").read_text())
    assert [s["status"] for s in summary["stages"]] == ["done"] * len(plan.ORDER)
    labels = [m["label"] for m in summary["models"]]
    assert labels == ["base", "r1_zero", "cold_start_sft", "reasoning_rl", "rejection_sft",
                      "all_scenario_rl", "distill/base"]
    for model in summary["models"]:
        assert set(model["metrics"]) >= {"pass@1", "format", "language_consistency",
                                         "response_tokens", "rm/helpfulness", "rm/harmlessness"}
    # The data stages sampled the models the wiring names (the provenance names the policy).
    for data, model in (("05_rejection_sampling", "04_reasoning_rl"), ("10_distill_data", "09_all_scenario_rl")):
        rows = (uninterrupted / data / "rejection" / "accepted.jsonl").read_text().splitlines()
        sampled = {json.loads(r)["provenance"].get("model") for r in rows} - {None}
        assert sampled == {str(uninterrupted / model / "model")}, data
    cold = [json.loads(line) for line in
            (uninterrupted / "02_cold_start_data" / "cold_start.jsonl").read_text().splitlines()]
    assert cold and all(r["messages"][-1]["content"].startswith("<think>\n") for r in cold)
    assert (uninterrupted / "report.md").read_text().startswith("# R1 pipeline report")
    # Finished stages keep only the checkpoints a later stage reads: a reward model's newest.
    steps = {str(path.relative_to(uninterrupted)) for path in uninterrupted.glob("**/checkpoints/*")
             if path.name.isdigit()}
    assert steps == {"07_reward_helpful/train/checkpoints/2", "08_reward_harmless/train/checkpoints/2"}


@needs_data
def test_sigkill_in_a_stage_then_rerun_ends_like_the_uninterrupted_run(uninterrupted, tmp_path):
    first_checkpoint = tmp_path / "04_reasoning_rl" / "train" / "checkpoints" / "1"
    sigkill_when(_command(tmp_path), environment(devices=1), first_checkpoint.is_dir,
                 "checkpointed stage 4", timeout=TIMEOUT_S)
    assert plan.done_record(str(tmp_path), "reasoning_rl") is None  # killed inside stage 4
    assert plan.done_record(str(tmp_path), "cold_start_sft") is not None
    result = _run(tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    expected, got = _final_models(uninterrupted), _final_models(tmp_path)
    assert expected and expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    for data in ("05_rejection_sampling/rejection/accepted.jsonl", "10_distill_data/rejection/accepted.jsonl"):
        # Equal but for the workdir in the provenance's model paths.
        assert ((tmp_path / data).read_text().replace(str(tmp_path), "DIR")
                == (uninterrupted / data).read_text().replace(str(uninterrupted), "DIR"))


@needs_data
def test_a_failing_stage_stops_with_its_name_and_keeps_the_earlier_outputs(tmp_path):
    result = _run(tmp_path, "--config.stages.cold_start_sft.data.kind=nonsense",
                  "--config.skip.r1_zero=True", f"--config.given.cold_start_data={_cold_start_file(tmp_path)}")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stage 03_cold_start_sft failed: ") and "nonsense" in last
    assert "Traceback" not in result.stderr
    assert (tmp_path / plan.BASE_DIR / "model" / "config.json").exists()  # earlier output intact
    assert plan.done_record(str(tmp_path), "cold_start_sft") is None


def _cold_start_file(tmp_path) -> str:
    path = tmp_path.parent / f"{tmp_path.name}_cold_start.jsonl"
    records, _ = cold_start.cold_start_records([_row("40 + 36 = 76")] * 4, system="")
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_bad_flags_fail_before_any_stage(tmp_path):
    result = _run(tmp_path, f"--config.given.reward_helpful={tmp_path}/missing")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: config.given.reward_helpful='{tmp_path}/missing' does not exist")
    assert not (tmp_path / plan.BASE_DIR).exists()
