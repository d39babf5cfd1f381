"""Reading and validating users' JSONL files into r1jax's record kinds.

Every line is parsed and checked before anything is written, and a problem is reported as
"FILE:LINE: problem", so a user can fix their file without guessing. The record kinds:

- math: {"id", "question", "answer" (final answer only), "solution" ("" if none)}, from
  GSM8K lines ({"question", "answer": "worked solution #### 72"}), MATH lines ({"problem",
  "solution" with \\boxed{...}}, optional "answer"), or plain {"question", "answer"} lines whose
  answer is already final (optional "solution").
- code: {"id", "prompt", "tests": [str, ...]}.
- chat: {"id", "messages": [{"role", "content"}, ...]}.
- completion: {"id", "prompt", "completion"}: SFT pairs such as a teacher's traces written by
  launch/sample.py (extra fields on a line are ignored).
- preference: {"id", "prompt", "chosen", "rejected"}, from explicit {"prompt", "chosen",
  "rejected"} lines or HH-RLHF whole dialogues ({"chosen", "rejected"} sharing all but the last
  assistant turn).

An optional "id" (string or integer) is kept; otherwise the id is "FILESTEM-LINE".
"""
import json
import os
from collections.abc import Callable

_ASSISTANT_TURN = "\n\nAssistant:"


def _get(row: dict, key: str, types: type | tuple[type, ...] = str):
    """row[key], checked to be present and of one of `types`. Raises ValueError naming the field."""
    if key not in row:
        raise ValueError(f"missing field {key!r} (fields present: {sorted(row)})")
    value = row[key]
    # bool is an int subclass, but true/false is never a valid id or text.
    if not isinstance(value, types) or isinstance(value, bool):
        expected = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise ValueError(f"field {key!r} must be {expected}, got {type(value).__name__}")
    return value


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces balanced; None if absent."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None  # Unbalanced: the box never closes.


def math_record(row: dict) -> dict:
    """A math line (GSM8K, MATH or final-answer form) -> {"question", "answer", "solution"}."""
    if "problem" in row:  # MATH style.
        question, solution = _get(row, "problem"), _get(row, "solution")
        answer = _get(row, "answer") if "answer" in row else last_boxed(solution)
        if answer is None:
            raise ValueError("field 'solution' has no complete \\boxed{...} answer (and no 'answer' field)")
    else:
        question, text = _get(row, "question"), _get(row, "answer")
        if "####" in text:  # GSM8K: worked solution, then "#### 1,234".
            solution, _, final = text.rpartition("####")
            solution, answer = solution.strip(), final.strip().replace(",", "")
        else:
            solution, answer = (_get(row, "solution") if "solution" in row else ""), text.strip()
    if not answer:
        raise ValueError("the final answer is empty")
    return {"question": question, "answer": answer, "solution": solution}


def code_record(row: dict) -> dict:
    """A code problem -> {"prompt", "tests"}; tests is a non-empty list of strings."""
    tests = _get(row, "tests", list)
    if not tests or not all(isinstance(t, str) for t in tests):
        raise ValueError("field 'tests' must be a non-empty list of strings")
    return {"prompt": _get(row, "prompt"), "tests": tests}


def chat_record(row: dict) -> dict:
    """A chat log -> {"messages": [{"role", "content"}, ...]} (other message keys are dropped)."""
    messages = _get(row, "messages", list)
    if not messages:
        raise ValueError("field 'messages' is empty")
    for n, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"messages[{n}] must be an object, got {type(message).__name__}")
        try:
            messages[n] = {"role": _get(message, "role"), "content": _get(message, "content")}
        except ValueError as e:
            raise ValueError(f"messages[{n}]: {e}") from None
    return {"messages": messages}


def completion_record(row: dict) -> dict:
    """A prompt and the completion to train on (distillation traces, rejection samples)."""
    completion = _get(row, "completion")
    if not completion.strip():
        raise ValueError("field 'completion' is empty")
    return {"prompt": _get(row, "prompt"), "completion": completion}


def split_dialogue_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Splits HH-RLHF whole dialogues into (prompt, chosen reply, rejected reply).

    The prompt is the dialogue up to and including the last "\\n\\nAssistant:" that both share;
    the replies are what follows it, stripped. A few HH-RLHF rows have turns glued together
    ("...  Human: ..." without the blank line), so the last "\\n\\nAssistant:" of one side is not
    always shared: taking the last one inside the common prefix keeps the prompt identical.

    Raises:
      ValueError: the dialogues share no "\\n\\nAssistant:" turn.
    """
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind(_ASSISTANT_TURN)
    if cut < 0:
        raise ValueError("'chosen' and 'rejected' share no '\\n\\nAssistant:' turn to split the prompt at")
    cut += len(_ASSISTANT_TURN)
    return chosen[:cut], chosen[cut:].strip(), rejected[cut:].strip()


def preference_record(row: dict) -> dict:
    """A preference pair (explicit prompt, or HH-RLHF dialogues) -> {"prompt", "chosen", "rejected"}."""
    chosen, rejected = _get(row, "chosen"), _get(row, "rejected")
    if "prompt" in row:
        return {"prompt": _get(row, "prompt"), "chosen": chosen, "rejected": rejected}
    prompt, chosen, rejected = split_dialogue_pair(chosen, rejected)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


PARSERS: dict[str, Callable[[dict], dict]] = {
    "math": math_record,
    "code": code_record,
    "chat": chat_record,
    "preference": preference_record,
    "completion": completion_record,
}


def read_records(path: str, kind: str,
                 check: Callable[[dict], str | None] | None = None) -> list[dict]:
    """Reads and validates a whole JSONL file of one record kind.

    Blank lines are skipped. Every other line must be a JSON object of the kind's form.

    Args:
      path: the JSONL file.
      kind: a key of PARSERS ("math", "code", "chat", "preference").
      check: optional record -> what is wrong with it, or None: a stage's own refusal (a
        preference pair that cannot train a reward model), reported with its line.

    Returns:
      list of records, each with "id" and the kind's fields, in file order.

    Raises:
      ValueError: "PATH:LINE: problem" for the first bad line (bad JSON, not an object, a missing
        field, a wrong type, no answer to extract, `check`'s problem), or "PATH: ..." when the
        file has no records.
      FileNotFoundError: no such file.
    """
    if kind not in PARSERS:
        raise ValueError(f"unknown record kind {kind!r}; known: {sorted(PARSERS)}")
    parse, stem = PARSERS[kind], os.path.splitext(os.path.basename(path))[0]
    records = []
    # Binary lines, decoded one by one, so that bad UTF-8 is also reported with its line.
    with open(path, "rb") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
                if not isinstance(row, dict):
                    raise ValueError(f"expected a JSON object, got {type(row).__name__}")
                record_id = str(_get(row, "id", (str, int))) if "id" in row else f"{stem}-{line_number}"
                record = {"id": record_id, **parse(row)}
                if check is not None and (problem := check(record)):
                    raise ValueError(problem)
                records.append(record)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_number}: invalid JSON: {e.msg} (column {e.colno})") from None
            except ValueError as e:
                raise ValueError(f"{path}:{line_number}: {e}") from None
    if not records:
        raise ValueError(f"{path}: the file is empty: no JSON records")
    return records
