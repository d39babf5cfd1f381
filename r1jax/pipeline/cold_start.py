"""Cold-start data from R1-Zero's samples (DeepSeek-R1 §2.3.1).

R1 gathered part of its cold-start data from "DeepSeek-R1-Zero outputs in a readable format",
refined by annotators, in the output format |special_token|<reasoning_process>|special_token|
<summary>. Here the refinement is a rule applied to rejection sampling's accepted (verified)
rows: the reasoning is the response's chain of thought (its think block, else the text before
its answer) and the summary is the verified final answer, written as

    <think>
    reasoning
    </think>
    <answer>final answer</answer>

which the next stage's format and accuracy rewards read. A response whose reasoning is empty or
only restates the answer carries no chain of thought to learn from and is dropped.
"""
from __future__ import annotations

from collections import Counter

from r1jax.rewards import format as format_reward

NO_REASONING = "no_reasoning"


def reasoning_of(response: str) -> str:
    """The chain of thought of `response`: its think block, else what precedes its answer
    block, else all of it (stripped)."""
    think = format_reward.first_block(response, "think")
    if think is not None:
        return think.strip()
    answer_at = response.find(format_reward.ANSWER_OPEN)
    return (response[:answer_at] if answer_at >= 0 else response).strip()


def readable(response: str, answer: str) -> str | None:
    """`response` in the readable form (module docstring) with `answer` as its summary, or None
    when it has no reasoning beyond the answer."""
    reasoning = reasoning_of(response)
    if not reasoning or reasoning == answer.strip():
        return None
    return (f"{format_reward.THINK_OPEN}\n{reasoning}\n{format_reward.THINK_CLOSE}\n"
            f"{format_reward.ANSWER_OPEN}{answer.strip()}{format_reward.ANSWER_CLOSE}")


def cold_start_records(rows: list[dict], system: str) -> tuple[list[dict], dict]:
    """Chat records for SFT from rejection sampling's accepted rows, and their counts.

    Args:
      rows: accepted.jsonl rows ({"messages", "provenance"}; provenance has the question and the
        reference answer the response was verified against).
      system: the system prompt the records carry (the reasoning-RL stage's, so SFT and RL see
        the same prompt); "" for none.
    Returns:
      (records, stats): records {"messages", "provenance"} with the user turn the bare question;
      stats {"accepted_rows", "kept", "dropped": {reason: count}}.
    """
    records, dropped = [], Counter()
    for row in rows:
        provenance = row["provenance"]
        response = row["messages"][-1]["content"]
        text = readable(response, str(provenance["reference"]))
        if text is None:
            dropped[NO_REASONING] += 1
            continue
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": provenance["question"]},
            {"role": "assistant", "content": text}]
        records.append({"messages": messages,
                        "provenance": {**provenance, "rewritten_from": response}})
    return records, {"accepted_rows": len(rows), "kept": len(records),
                     "dropped": dict(sorted(dropped.items()))}
