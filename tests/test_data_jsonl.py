"""Reading users' JSONL files: every record form, and errors that name the file, line and problem."""
import json
import pathlib

import pytest

from r1jax.data import jsonl

HH_PAIRS = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh_rlhf_harmless" / "pairs.jsonl"


def _write(path: pathlib.Path, lines: list) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def test_gsm8k_line_splits_solution_and_final_answer(tmp_path):
    path = _write(tmp_path / "gsm.jsonl", [{"question": "How many?", "answer": "3 x 400 = <<3*400=1200>>1200\n#### 1,200"}])
    assert jsonl.read_records(path, "math") == [
        {"id": "gsm-1", "question": "How many?", "answer": "1200", "solution": "3 x 400 = <<3*400=1200>>1200"}]


def test_math_line_takes_last_boxed_answer_with_nested_braces(tmp_path):
    solution = r"First \boxed{2}, no: the answer is $\boxed{\frac{1}{2}}$."
    path = _write(tmp_path / "m.jsonl", [{"problem": "p", "solution": solution, "id": 17},
                                         {"problem": "q", "solution": "no box", "answer": "7"}])
    first, second = jsonl.read_records(path, "math")
    assert first == {"id": "17", "question": "p", "answer": r"\frac{1}{2}", "solution": solution}
    assert second["answer"] == "7"  # An explicit answer field wins (MATH-500 has one).


def test_plain_question_answer_line_is_already_final(tmp_path):
    path = _write(tmp_path / "qa.jsonl", [{"question": "2+2?", "answer": " 4 "}])
    assert jsonl.read_records(path, "math")[0] == {"id": "qa-1", "question": "2+2?", "answer": "4", "solution": ""}


def test_code_chat_and_explicit_preference_lines(tmp_path):
    code = _write(tmp_path / "c.jsonl", [{"prompt": "Write f.", "tests": ["assert f() == 1"]}])
    chat = _write(tmp_path / "h.jsonl", [{"messages": [{"role": "user", "content": "hi", "name": "x"},
                                                        {"role": "assistant", "content": "hello"}]}])
    pref = _write(tmp_path / "p.jsonl", [{"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}])
    assert jsonl.read_records(code, "code") == [{"id": "c-1", "prompt": "Write f.", "tests": ["assert f() == 1"]}]
    assert jsonl.read_records(chat, "chat")[0]["messages"] == [{"role": "user", "content": "hi"},
                                                               {"role": "assistant", "content": "hello"}]
    assert jsonl.read_records(pref, "preference") == [{"id": "p-1", "prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}]


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path):
    path = _write(tmp_path / "b.jsonl", [{"question": "a", "answer": "1"}, "", "   ", {"question": "b"}])
    with pytest.raises(ValueError, match=r"b\.jsonl:4: missing field 'answer'"):
        jsonl.read_records(path, "math")


@pytest.mark.parametrize("kind,lines,line,problem", [
    ("math", [{"question": "a", "answer": "1"}, '{"question": "b", "answer": '], 2, "invalid JSON"),
    ("math", [{"question": "a", "answer": "1"}, {"question": "b", "answer": "2"}, {"question": "c"}], 3,
     "missing field 'answer'"),
    ("math", [{"question": 12, "answer": "1"}], 1, "field 'question' must be str, got int"),
    ("math", [{"problem": "p", "solution": "no boxed answer here"}], 1, "no complete \\\\boxed"),
    ("math", [{"question": "q", "answer": "work\n#### "}], 1, "final answer is empty"),
    ("math", [[1, 2]], 1, "expected a JSON object, got list"),
    ("math", [{"id": True, "question": "q", "answer": "1"}], 1, "field 'id' must be str or int, got bool"),
    ("code", [{"prompt": "p", "tests": "assert f()"}], 1, "field 'tests' must be list, got str"),
    ("code", [{"prompt": "p", "tests": [1]}], 1, "non-empty list of strings"),
    ("chat", [{"messages": [{"role": "user"}]}], 1, r"messages\[0\]: missing field 'content'"),
    ("chat", [{"messages": []}], 1, "'messages' is empty"),
    ("preference", [{"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "different"}], 1,
     "share no '\\\\n\\\\nAssistant:' turn"),
])
def test_malformed_line_names_file_line_and_problem(tmp_path, kind, lines, line, problem):
    path = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValueError, match=rf"^{path}:{line}: .*{problem}"):
        jsonl.read_records(path, kind)


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"^{path}: the file is empty"):
        jsonl.read_records(str(path), "math")


def test_bad_utf8_names_its_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"question": "a", "answer": "1"}\n{"question": "caf\xe9", "answer": "1"}\n')
    with pytest.raises(ValueError, match=rf"^{path}:2: .*utf-8"):
        jsonl.read_records(str(path), "math")


def test_last_boxed():
    assert jsonl.last_boxed(r"\boxed{1} then \boxed{x^{2}+\frac{a}{b}} end") == r"x^{2}+\frac{a}{b}"
    assert jsonl.last_boxed(r"\fbox{5}") == "5"
    assert jsonl.last_boxed(r"\boxed{unclosed") is None
    assert jsonl.last_boxed("none") is None


@pytest.mark.skipif(not HH_PAIRS.exists(), reason=f"shared data not found at {HH_PAIRS}")
@pytest.mark.parametrize("line", [1, 2, 3, 398, 844, 857, 1323, 1709])
def test_hh_rlhf_rows_split_into_prompt_and_differing_last_turn(line):
    """Ordinary rows (1-3), an empty chosen reply (398) and rows with glued turns (844, 857, 1323, 1709)."""
    row = json.loads(HH_PAIRS.read_text().splitlines()[line - 1])
    record = jsonl.preference_record(row)
    prompt = record["prompt"]
    assert prompt.startswith("\n\nHuman:") and prompt.endswith("\n\nAssistant:")
    assert row["chosen"].startswith(prompt) and row["rejected"].startswith(prompt)
    assert record["chosen"] == row["chosen"][len(prompt):].strip()
    assert record["rejected"] == row["rejected"][len(prompt):].strip()
    assert record["chosen"] != record["rejected"]


@pytest.mark.skipif(not HH_PAIRS.exists(), reason=f"shared data not found at {HH_PAIRS}")
def test_hh_rlhf_known_rows():
    rows = [json.loads(line) for line in HH_PAIRS.read_text().splitlines()[:2]]
    assert jsonl.preference_record(rows[0]) == {
        "prompt": "\n\nHuman: What do I do if I'm walking down the street and a black person approaches me?"
                  "\n\nAssistant:",
        "chosen": "Can you say a little more about what you're concerned about, and how you are feeling about "
                  "this situation?",
        "rejected": "Do you mean an African American or a person from somewhere in Africa?"}
    assert jsonl.preference_record(rows[1]) == {
        "prompt": "\n\nHuman: call me a bad name\n\nAssistant:",
        "chosen": "Sorry, that’s out of bounds",
        "rejected": "I didn’t catch that. I don’t have a call to make right now, so I just can’t speak right now"}
    # Multi-turn: the earlier turns, identical on both sides, stay in the prompt.
    third = json.loads(HH_PAIRS.read_text().splitlines()[2])
    record = jsonl.preference_record(third)
    assert record["prompt"].count("\n\nHuman:") == 4
    assert record["prompt"].endswith("Maybe I can pick up lunch on the way to the park.\n\nAssistant:")
    assert record["chosen"] == "If you’re comfortable with the neighborhood, I think that’s a good idea."
