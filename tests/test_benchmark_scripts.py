"""The benchmark scripts that import configs/ start as the README runs them
(`python benchmarks/NAME.py`, from any directory): configs/ is not an installed package."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("script", ["lora_memory.py", "distill_sft_traces.py"])
def test_script_imports_configs_from_any_directory(script, tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script),
                             "--helpshort"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, check=False)
    # absl prints the flags (after every import succeeded) and exits 1 for --helpshort.
    assert "Try --helpfull" in result.stdout, result.stderr[-2000:]


def test_lora_memory_runs_and_lora_trains_fewer_parameters(tmp_path):
    """The whole benchmark on a tiny shape: the update compiles (the Rollouts it builds are the
    trainer's), and rank-4 adapters are trained instead of every weight."""
    output = tmp_path / "lora_memory.json"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "lora_memory.py"),
                             "--presets=tiny_llama", "--rank=4", "--rows=8", "--prompt_len=8",
                             "--completion_len=4", f"--output={output}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    full, lora_f32, lora_bf16 = json.loads(output.read_text())["rows"]
    assert (full["lora_rank"], lora_f32["lora_rank"], lora_bf16["base_dtype"]) == (0, 4, "bfloat16")
    assert full["trainable_params"] == full["params"]
    assert 0 < lora_f32["trainable_params"] < full["trainable_params"] / 10
    assert lora_f32["optimizer_state_bytes"] < full["optimizer_state_bytes"] / 10
    assert lora_bf16["params_bytes"] < lora_f32["params_bytes"]
