"""launch/sample.py: prompt files, its errors, and a whole run on a tiny saved model."""
import json
import os
import string
import subprocess
import sys

import jax
import pytest

from launch import sample as launcher
from r1jax import models
from tests.test_eval import byte_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_prompts_come_from_jsonl_text_and_flags(tmp_path):
    jsonl = tmp_path / "questions.jsonl"
    jsonl.write_text(json.dumps({"id": 7, "question": "Q1"}) + "\n\n"
                     + json.dumps({"prompt": "Q2"}) + "\n")
    text = tmp_path / "questions.txt"
    text.write_text("Q3\nQ4\n")
    assert launcher.read_prompts(str(jsonl), ["Q5"]) == [
            {"id": 7, "question": "Q1"}, {"id": "questions.jsonl-3", "question": "Q2"},
            {"id": "prompt-0", "question": "Q5"}]
    assert [r["question"] for r in launcher.read_prompts(str(text), [])] == ["Q3", "Q4"]


def test_bad_prompt_files_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "Q1"}) + "\n" + json.dumps({"text": "Q2"}) + "\n")
    with pytest.raises(ValueError, match=rf"{path}:2: expected an object with a string 'question'"):
        launcher.read_prompts(str(path), [])
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=rf"{path}:1: not JSON"):
        launcher.read_prompts(str(path), [])
    with pytest.raises(ValueError, match="no prompts"):
        launcher.read_prompts(None, [])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random Llama with a byte-level ChatML tokenizer, saved as a HF directory."""
    tokenizer = byte_tokenizer()
    config = models.preset("tiny_llama", vocab_size=len(tokenizer))
    directory = tmp_path_factory.mktemp("sample_launch")
    models.save_pretrained(config, models.init_params(config, jax.random.key(0)), directory,
                           tokenizer)
    return directory


@pytest.mark.parametrize("batching", ["static", "continuous"])
def test_whole_run_writes_n_completions_per_prompt(model_dir, tmp_path, batching):
    prompts = tmp_path / "questions.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "question": q}) + "\n"
                               for i, q in enumerate(["What is 2 + 2?", "Hi"])))
    output = tmp_path / "samples.jsonl"
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}  # One device is enough here.
    result = subprocess.run(
            [sys.executable, "-m", "launch.sample", f"--model={model_dir}", f"--prompts={prompts}",
             "--prompt=Name a color.", f"--output={output}", "--n=2", "--temperature=1.0",
             "--top_p=0.9", "--max_new_tokens=6", "--batch_size=4",
             "--stop_strings=" + ",".join(string.ascii_letters), f"--batching={batching}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(line["id"], line["sample"]) for line in lines] == [
            ("q0", 0), ("q0", 1), ("q1", 0), ("q1", 1), ("prompt-0", 0), ("prompt-0", 1)]
    assert [line["prompt"] for line in lines[::2]] == ["What is 2 + 2?", "Hi", "Name a color."]
    for line in lines:
        assert isinstance(line["completion"], str) and 1 <= line["num_tokens"] <= 6
        assert line["finish_reason"] in ("stop", "length")
        assert line["finish_reason"] == "stop" or line["num_tokens"] == 6
        # Cut after the first letter (a stop string): none before the completion's last character.
        assert not any(c in string.ascii_letters for c in line["completion"][:-1]), line["completion"]
