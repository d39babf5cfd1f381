"""launch/cli.py: every binary ends a bad input with one `error: ...` line on stderr and a non-zero
exit, with no traceback (and no teardown noise) unless --verbose is given."""
import os
import subprocess
import sys

import pytest
from absl import flags

from launch import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_an_error_is_one_line_without_a_key_errors_quotes():
    assert cli.error_line(KeyError("no key 'x'")) == "error: no key 'x'"
    assert cli.error_line(ValueError("first\n   second")) == "error: first second"
    assert cli.error_line(ValueError()) == "error: ValueError"
    long = cli.error_line(OSError("x" * 2000))
    assert "\n" not in long and len(long) < 700 and long.endswith("(--verbose for all of it)")


def test_a_config_file_traceback_in_a_flag_error_becomes_its_last_line():
    error = flags.IllegalFlagValueError(
        "flag --config=c.py:nope: Error whilst parsing config file:\n\n"
        "  Traceback (most recent call last):\n    File \"c.py\", line 9, in get_config\n"
        "      raise ValueError('bad')\n  ValueError: Unknown variant 'nope'.\n")
    assert cli.flag_error_line(error) == ("error: flag --config=c.py:nope: Error whilst parsing "
                                          "config file: ValueError: Unknown variant 'nope'.")


# Per binary: flags whose bad input fails at start-up, and the start of its one line.
BAD_INPUTS = {
    "train": (["--config=configs/r1_zero.py:tiny", "--workdir={tmp}/w", "--config.stage=rlhf"],
              "error: config.stage='rlhf'; expected one of"),
    "sample": (["--model={tmp}/no_model", "--output=-", "--prompt=hi"],
               "error: No model at {tmp}/no_model"),
    "evaluate": (["--config=configs/eval.py:tiny", "--model={tmp}/no_model",
                  "--data={tmp}/missing.jsonl", "--output_dir={tmp}/out"],
                 "error: --data={tmp}/missing.jsonl: no such file"),
    "data": (["--kind=math", "--input={tmp}/missing.jsonl", "--name=gsm", "--data_dir={tmp}/d"],
             "error: [Errno 2] No such file or directory: '{tmp}/missing.jsonl'"),
    "convert": (["--input={tmp}/no_model", "--output={tmp}/out"],
                "error: No model at {tmp}/no_model"),
    "sweep": (["--config=configs/r1_zero.py:tiny", "--sweep=configs/sweeps/__init__.py",
               "--workdir={tmp}/s"],
              "error: --sweep=configs/sweeps/__init__.py: configs/sweeps/__init__.py is not a "
              "sweep file"),
    "evaluate_rm": (["--model={tmp}", "--data=../shared/data/hh_rlhf_harmless/pairs.jsonl",
                     "--output_dir={tmp}/out"],
                    "error: reward_model path='{tmp}' is not a reward model"),
    "rejection_sample": (["--config=configs/rejection_sampling.py:tiny", "--workdir={tmp}/w",
                          "--config.sources.addition.kind=poetry"],
                         "error: sources.addition.kind='poetry': expected one of"),
    "pipeline": (["--config=configs/pipeline.py:tiny", "--workdir={tmp}/w",
                  "--config.given.reward_helpful={tmp}/missing"],
                 "error: config.given.reward_helpful='{tmp}/missing' does not exist"),
    "tpu": (["--config=configs/r1_zero.py", "--workdir={tmp}/w"],
            "error: --mode=tpu needs --tpu_name."),
}


def run_binary(binary: str, args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return subprocess.run([sys.executable, "-m", f"launch.{binary}",
                           *(a.format(tmp=tmp_path) for a in args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("binary", sorted(BAD_INPUTS))
def test_a_bad_input_is_one_error_line_and_a_failing_exit(binary, tmp_path):
    args, line = BAD_INPUTS[binary]
    result = run_binary(binary, args, tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(line.format(tmp=tmp_path)), result.stderr


@pytest.mark.parametrize("binary", sorted(BAD_INPUTS))
def test_verbose_shows_the_traceback(binary, tmp_path):
    args, _ = BAD_INPUTS[binary]
    result = run_binary(binary, [*args, "--verbose"], tmp_path)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr


@pytest.mark.parametrize("args, line", [
    (["--config=configs/r1_zero.py:nope", "--workdir=w"],
     "error: flag --config=configs/r1_zero.py:nope: Error whilst parsing config file: ValueError: "
     "unknown r1_zero config variant 'nope'"),
    (["--config=configs/r1_zero.py:tiny", "--workdir=w", "--config.rl.group_size=4"],
     "error: in the flags, AttributeError: \"'group_size'\""),
    (["--config=configs/r1_zero.py:tiny"],
     "error: flag --workdir=None: Flag --workdir must have a value other than None."),
])
def test_flag_and_config_file_errors_are_one_line_too(args, line, tmp_path):
    result = run_binary("train", args, tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(line), result.stderr
