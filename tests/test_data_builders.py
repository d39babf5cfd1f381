"""Preparing data sets (tfds, array_record) atomically, and loading them back by name."""
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from r1jax.data import builders

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
GSM8K = SHARED / "gsm8k" / "train.jsonl"
HH_PAIRS = SHARED / "hh_rlhf_harmless" / "pairs.jsonl"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason=f"shared data not found at {SHARED}")


def _write_jsonl(path: pathlib.Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def gsm8k_dir(tmp_path_factory):
    if not GSM8K.exists():
        pytest.skip(f"shared data not found at {GSM8K}")
    data_dir = str(tmp_path_factory.mktemp("data"))
    assert builders.prepare("math", str(GSM8K), name="gsm8k", data_dir=data_dir) == {"train": 7473}
    return data_dir


@needs_shared
def test_gsm8k_builds_7473_examples_in_file_order(gsm8k_dir):
    source = builders.load("gsm8k", gsm8k_dir, "train")
    assert len(source) == 7473
    first_row = json.loads(GSM8K.open().readline())
    assert source[0] == {"id": "train-1", "question": first_row["question"], "answer": "72",
                         "solution": first_row["answer"].rpartition("####")[0].strip()}
    assert source[-1]["id"] == "train-7473"
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", source[i]["answer"]) for i in range(0, 7473, 7))


@needs_shared
def test_gsm8k_answers_verify_against_their_worked_solutions(gsm8k_dir):
    """The math reward scores each worked solution, ending in the file's own final answer, as correct."""
    rewards = pytest.importorskip("r1jax.rewards")
    if not hasattr(rewards, "get"):
        pytest.skip("r1jax.rewards.get is not written yet (rewards issue)")
    math_accuracy = rewards.get("math_accuracy")
    source = builders.load("gsm8k", gsm8k_dir, "train")
    records = list(source)
    finals = [json.loads(line)["answer"].rpartition("####")[2].strip() for line in GSM8K.open()]
    completions = [f"<think>{r['solution']}</think> <answer>{final}</answer>" for r, final in zip(records, finals)]
    scores = math_accuracy([r["question"] for r in records], completions, answer=[r["answer"] for r in records])
    wrong = [(r["id"], r["answer"], final) for r, final, s in zip(records, finals, scores) if s != 1.0]
    assert not wrong, f"{len(wrong)} GSM8K answers fail to verify, e.g. {wrong[:5]}"


@needs_shared
def test_hh_rlhf_builds_with_a_seeded_test_split(tmp_path):
    counts = builders.prepare("preference", str(HH_PAIRS), name="hh", data_dir=str(tmp_path), test_fraction=0.1)
    assert counts == {"train": 1664, "test": 185}
    train, test = builders.load("hh", str(tmp_path), "train"), builders.load("hh", str(tmp_path), "test")
    ids = [train[i]["id"] for i in range(len(train))] + [test[i]["id"] for i in range(len(test))]
    assert len(set(ids)) == 1849
    record = train[0]
    assert set(record) == {"id", "prompt", "chosen", "rejected"}
    assert record["prompt"].endswith("\n\nAssistant:") and record["chosen"] != record["rejected"]


def test_every_kind_round_trips_as_plain_python(tmp_path):
    data_dir = str(tmp_path)
    code = [{"prompt": "Write f.", "tests": ["assert f() == 1", "assert f() != 2"]}, {"prompt": "g", "tests": ["x"]}]
    chat = [{"messages": [{"role": "user", "content": "héllo ✓"}, {"role": "assistant", "content": "hi"}]}]
    builders.prepare("code", _write_jsonl(tmp_path / "code.jsonl", code), name="code", data_dir=data_dir)
    builders.prepare("chat", _write_jsonl(tmp_path / "chat.jsonl", chat), name="chat", data_dir=data_dir)
    builders.prepare("countdown", name="cd", data_dir=data_dir, num_train=4, num_test=2, seed=0)
    assert builders.load("code", data_dir, "train")[0] == {"id": "code-1", **code[0]}
    assert builders.load("chat", data_dir, "train")[0] == {"id": "chat-1", **chat[0]}
    puzzle = builders.load("cd", data_dir, "test")[1]
    assert isinstance(puzzle["target"], int) and all(isinstance(n, int) for n in puzzle["numbers"])
    assert puzzle["answer"] == str(puzzle["target"])
    assert builders.list_datasets(data_dir) == ["cd", "chat", "code"]


def test_test_input_file_becomes_the_test_split(tmp_path):
    train = _write_jsonl(tmp_path / "a.jsonl", [{"question": "1+1", "answer": "2"}] * 3)
    test = _write_jsonl(tmp_path / "b.jsonl", [{"question": "2+2", "answer": "4"}])
    assert builders.prepare("math", train, name="m", data_dir=str(tmp_path / "d"), test_input=test) == {
        "train": 3, "test": 1}
    assert builders.load("m", str(tmp_path / "d"), "test")[0]["answer"] == "4"


def test_source_is_a_sequence(tmp_path):
    builders.prepare("arithmetic", name="add", data_dir=str(tmp_path), num_train=5, num_test=1, seed=0)
    source = builders.load("add", str(tmp_path), "train")
    assert [r["id"] for r in source] == [f"arithmetic-train-{i}" for i in range(5)]
    assert source[-1] == source[4]
    with pytest.raises(IndexError):
        source[5]  # pylint: disable=pointless-statement


def test_malformed_file_writes_nothing(tmp_path):
    data_dir = tmp_path / "data"
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "1"}, {"question": "q", "answer": 2}])
    with pytest.raises(ValueError, match=rf"^{bad}:2: field 'answer' must be str, got int"):
        builders.prepare("math", bad, name="bad", data_dir=str(data_dir))
    assert not data_dir.exists() or not os.listdir(data_dir)


def test_failure_while_writing_leaves_no_data_set(tmp_path, monkeypatch):
    """A build that dies half-way (disk full, a crash) is never readable and leaves no debris."""
    data_dir = str(tmp_path)
    original, written = builders._stored_form, []

    def fail_midway(record):
        written.append(record)
        if len(written) == 3:
            raise OSError("disk full")
        return original(record)

    monkeypatch.setattr(builders, "_stored_form", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        builders.prepare("arithmetic", name="add", data_dir=data_dir, num_train=10, num_test=0, seed=0)
    assert os.listdir(data_dir) == []
    with pytest.raises(FileNotFoundError, match=r"no prepared data set 'add' .* found: \[\]"):
        builders.load("add", data_dir, "train")


def test_overwrite_only_when_asked_and_a_failed_overwrite_keeps_the_old_data(tmp_path, monkeypatch):
    data_dir = str(tmp_path)
    builders.prepare("arithmetic", name="add", data_dir=data_dir, num_train=5, num_test=1, seed=0)
    with pytest.raises(FileExistsError, match="already exists"):
        builders.prepare("arithmetic", name="add", data_dir=data_dir, num_train=7, num_test=1, seed=0)
    monkeypatch.setattr(builders, "_stored_form", lambda record: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        builders.prepare("arithmetic", name="add", data_dir=data_dir, num_train=7, num_test=1, seed=0, overwrite=True)
    assert len(builders.load("add", data_dir, "train")) == 5
    monkeypatch.undo()
    builders.prepare("arithmetic", name="add", data_dir=data_dir, num_train=7, num_test=1, seed=0, overwrite=True)
    assert len(builders.load("add", data_dir, "train")) == 7
    assert os.listdir(data_dir) == ["add"]


@pytest.mark.parametrize("kwargs,error,message", [
    ({"kind": "math", "name": "Bad-Name", "input_path": "x"}, ValueError, "must match"),
    ({"kind": "poems", "name": "p", "input_path": "x"}, ValueError, "unknown kind"),
    ({"kind": "math", "name": "m"}, ValueError, "needs an input file"),
    ({"kind": "math", "name": "m", "input_path": "x", "num_train": 3}, ValueError, "unexpected arguments"),
    ({"kind": "countdown", "name": "c", "input_path": "x"}, ValueError, "takes no input file"),
    ({"kind": "math", "name": "m", "input_path": "/nonexistent.jsonl"}, FileNotFoundError, "nonexistent"),
])
def test_bad_arguments(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        builders.prepare(data_dir=str(tmp_path), **kwargs)


def test_load_names_what_exists(tmp_path):
    builders.prepare("arithmetic", name="add", data_dir=str(tmp_path), num_train=2, num_test=1, seed=0)
    with pytest.raises(FileNotFoundError, match=r"no prepared data set 'mul' .* found: \['add'\]"):
        builders.load("mul", str(tmp_path), "train")
    with pytest.raises(ValueError, match=r"no split 'validation'; splits: \['test', 'train'\]"):
        builders.load("add", str(tmp_path), "validation")


def _launch(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch.data", *flags], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)


def test_launch_prints_counts_per_split(tmp_path):
    result = _launch("--kind=countdown", "--name=cd3", f"--data_dir={tmp_path}", "--num_numbers=3",
                     "--num_train=40", "--num_test=8", "--seed=5")
    assert result.returncode == 0, result.stderr
    assert "  test: 8 examples\n  train: 40 examples" in result.stdout
    assert len(builders.load("cd3", str(tmp_path), "train")) == 40


def test_launch_reports_a_bad_line_and_fails(tmp_path):
    bad = tmp_path / "chat.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [{"role": "user"}\n')
    result = _launch("--kind=chat", f"--input={bad}", "--name=chat", f"--data_dir={tmp_path / 'data'}")
    assert result.returncode == 1
    assert f"error: {bad}:2: invalid JSON" in result.stderr
    assert not (tmp_path / "data").exists()
