"""The benchmark scripts that import configs/ start as the README runs them
(`python benchmarks/NAME.py`, from any directory): configs/ is not an installed package."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("script", ["lora_memory.py", "distill_sft_traces.py"])
def test_script_imports_configs_from_any_directory(script, tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script),
                             "--helpshort"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    # absl prints the flags (after every import succeeded) and exits 1 for --helpshort.
    assert "Try --helpfull" in result.stdout, result.stderr[-2000:]
