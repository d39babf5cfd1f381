"""The rejection-sampling engine with a scripted policy: what is accepted re-verifies, what is
rejected says why, selection and the mix, resumable shards; and bad configs fail at start-up."""
import json
import os
import re

import pytest

from configs import rejection_sampling
from launch import rejection_sample
from r1jax.rejection import engine, merge, policy, sources

QUESTION = re.compile(r"What is (\d+) \+ (\d+)\?")


class ScriptedPolicy:
    """Answers "What is a + b?" by script: sample j of a prompt says what SCRIPT[j] makes of it."""

    name, step = "scripted", 7
    SCRIPT = [
        lambda s: (f"{s}", "stop"),                      # right
        lambda s: (f"{s + 1}", "stop"),                  # wrong
        lambda s: (f"{s}", "stop"),                      # right, an exact duplicate of sample 0
        lambda s: (f"The sum is {s}.", "stop"),          # right, in other words
        lambda s: (f"{s}", "length"),                    # right but cut by the budget
    ]

    def __init__(self):
        self.questions = []

    def render(self, template, system, question):
        self.questions.append(question)
        return question, [len(self.questions) - 1]

    def num_tokens(self, text):
        return len(text.split())

    def sample(self, prompts, *, n, max_new_tokens, seed):
        out = []
        for (index,) in prompts:
            a, b = map(int, QUESTION.search(self.questions[index]).groups())
            out.append([policy.Sample(text, 1, reason)
                        for text, reason in (self.SCRIPT[j](a + b) for j in range(n))])
        return out


def make_config(tmp_path, **select):
    config = rejection_sampling.get_config("tiny")
    config.sampling.n = len(ScriptedPolicy.SCRIPT)
    config.sources.addition.update(quota=6, judge=False)
    general = tmp_path / "general.jsonl"
    general.write_text("".join(json.dumps({"prompt": f"Name a colour ({i}).", "chosen": f"Blue, number {i}.",
                                           "rejected": "no"}) + "\n" for i in range(5)))
    config.sources.helpful.update(input=str(general), quota=0)
    config.select.update(per_prompt=2, strategy="all", ratio=3.0, **select)
    config.output.shard_size = 4
    return config


def run(config, workdir):
    prompts = rejection_sample.validate(config)
    runner = engine.ShardRunner(config, ScriptedPolicy())
    engine.run(config, prompts, runner, str(workdir), progress=False)
    return merge.merge(config, str(workdir), len(prompts))


def read(path):
    return engine.read_jsonl(str(path))


def test_accepted_rows_reverify_and_rejected_rows_say_why(tmp_path):
    stats = run(make_config(tmp_path), tmp_path / "out")
    shard_rows = [r for s in range(3) for r in read(tmp_path / "out" / "shards" / f"{s:05d}.accepted.jsonl")]
    rejected = [r for s in range(3) for r in read(tmp_path / "out" / "shards" / f"{s:05d}.rejected.jsonl")]
    math_rows = [r for r in shard_rows if r["provenance"]["source"] == "addition"]
    assert len(math_rows) == 12  # 6 prompts, the 2 first right answers each (per_prompt=2)
    for row in math_rows:  # Independent check: the sum of the question's numbers, by hand.
        a, b = map(int, QUESTION.search(row["messages"][-1 - 1]["content"]).groups())
        assert int(re.findall(r"\d+", row["messages"][-1]["content"])[-1]) == a + b
        assert row["provenance"]["sample_index"] in (0, 3)
        assert row["provenance"]["scores"]["math_accuracy"] == 1.0
        assert row["provenance"]["model"] == "scripted" and row["provenance"]["checkpoint_step"] == 7
    reasons = {(r["sample_index"], r["reason"]) for r in rejected if r["source"] == "addition"}
    assert reasons == {(1, "rule:math_accuracy"), (2, "duplicate_exact"), (4, "overlong")}
    assert all(r["reason"] == r["failed"][0] for r in rejected)
    assert stats["sources"]["addition"]["rejected"] == {"duplicate_exact": 6, "overlong": 6,
                                                        "rule:math_accuracy": 6}
    assert stats["sources"]["addition"]["samples"] == 30 and stats["sources"]["addition"]["accepted"] == 12
    assert stats["sources"]["helpful"]["accepted"] == 5
    # The mix: 3 : 1 with 5 general rows and 12 reasoning rows -> 12 and 4.
    assert stats["mix"] == {"reasoning": 12, "general": 4, "total": 16}
    mixed = read(tmp_path / "out" / merge.ACCEPTED)
    assert len(mixed) == 16 and all(set(r) == {"messages", "provenance"} for r in mixed)
    assert mixed[0]["messages"][0]["role"] == "user" and mixed[0]["messages"][-1]["role"] == "assistant"


def test_per_prompt_limit_is_a_counted_reason(tmp_path):
    config = make_config(tmp_path)
    config.filters.duplicate.enabled = False
    config.select.update(per_prompt=1, strategy="shortest", ratio=0.0)
    stats = run(config, tmp_path / "out")
    assert stats["sources"]["addition"]["rejected"]["per_prompt_limit"] == 12  # 3 right per prompt, 1 kept
    kept = [r for r in read(tmp_path / "out" / merge.ACCEPTED) if r["provenance"]["source"] == "addition"]
    assert [r["provenance"]["sample_index"] for r in kept] == [0] * 6  # shortest: first of the 1-token ties


def test_a_killed_shard_is_redone_and_the_output_is_unchanged(tmp_path):
    config = make_config(tmp_path)
    run(config, tmp_path / "whole")
    resumed = tmp_path / "resumed"
    run(config, resumed)
    # As after a SIGKILL while shard 1 was being written: its stats (the done mark) never landed,
    # a temporary file was left, and the merged view is stale.
    os.remove(resumed / "shards" / "00001.stats.json")
    (resumed / "shards" / "00001.accepted.jsonl.tmp.999").write_text("partial")
    (resumed / "shards" / "00001.accepted.jsonl").write_text("garbage\n")
    os.remove(resumed / merge.ACCEPTED)
    run(config, resumed)
    for name in [merge.ACCEPTED, merge.REJECTED_SAMPLE, *sorted(os.listdir(tmp_path / "whole" / "shards"))]:
        if name.endswith("stats.json"):
            continue
        sub = "" if name in (merge.ACCEPTED, merge.REJECTED_SAMPLE) else "shards"
        assert (tmp_path / "whole" / sub / name).read_bytes() == (resumed / sub / name).read_bytes(), name
    assert not list((resumed / "shards").glob("*.tmp.*"))


def test_two_processes_write_the_same_shards_as_one(tmp_path):
    config = make_config(tmp_path)
    prompts = rejection_sample.validate(config)
    for i in range(2):
        engine.run(config, prompts, engine.ShardRunner(config, ScriptedPolicy()), str(tmp_path / "two"),
                   process_index=i, process_count=2, progress=False)
    run(config, tmp_path / "one")
    merge.merge(config, str(tmp_path / "two"), len(prompts))
    assert (tmp_path / "one" / merge.ACCEPTED).read_bytes() == (tmp_path / "two" / merge.ACCEPTED).read_bytes()


# ----------------------------------------------------------------------------- bad input


def test_unknown_source_kind(tmp_path):
    config = make_config(tmp_path)
    config.sources.addition.kind = "poetry"
    with pytest.raises(ValueError, match=r"sources.addition.kind='poetry': expected one of \('math', 'code', 'chat'\)"):
        rejection_sample.validate(config)


def test_missing_file(tmp_path):
    config = make_config(tmp_path)
    config.sources.helpful.input = str(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match=r"sources.helpful.input='.*nope.jsonl': no such file"):
        rejection_sample.validate(config)


def test_a_prompt_without_the_reference_a_rule_needs(tmp_path):
    config = make_config(tmp_path)
    config.sources.helpful.update(responses="sample", rules={"math_accuracy": 1.0})
    with pytest.raises(ValueError, match=r"sources.helpful: prompt 'general-1' has no 'answer', which rule "
                                         r"'math_accuracy' checks against"):
        rejection_sample.validate(config)


def test_a_code_prompt_without_reference_cannot_be_judged(tmp_path):
    code = tmp_path / "code.jsonl"
    code.write_text(json.dumps({"prompt": "Write f.", "tests": ["assert f() == 1"]}) + "\n")
    config = make_config(tmp_path)
    config.sources.addition = sources.source_config(kind="code", input=str(code), rules={"code": 1.0},
                                                    judge=True)
    with pytest.raises(ValueError, match="prompt 'code-1' has no reference answer, and the judge compares"):
        rejection_sample.validate(config)


def test_unknown_filter_and_unknown_rule(tmp_path):
    config = make_config(tmp_path)
    config.sources.addition.skip_filters = ("profanity",)
    with pytest.raises(ValueError, match=r"sources.addition.skip_filters=\['profanity'\]: expected names among"):
        rejection_sample.validate(config)
    config = make_config(tmp_path)
    config.sources.addition.rules = {"math_acuracy": 1.0}
    with pytest.raises(ValueError, match=r"sources.addition.rules='math_acuracy': expected registered rewards"):
        rejection_sample.validate(config)


def test_a_mix_needs_both_groups(tmp_path):
    config = make_config(tmp_path)
    del config.sources["helpful"]
    with pytest.raises(ValueError, match=r"select.ratio=3.0 mixes reasoning"):
        rejection_sample.validate(config)


def test_a_workdir_of_another_config_is_refused(tmp_path):
    config = make_config(tmp_path)
    rejection_sample.check_workdir(config, str(tmp_path / "w"), is_main=True)
    rejection_sample.check_workdir(config, str(tmp_path / "w"), is_main=True)  # same: resumes
    config.sampling.seed = 1
    with pytest.raises(ValueError, match="holds a run with another config"):
        rejection_sample.check_workdir(config, str(tmp_path / "w"), is_main=True)


def test_sft_reads_the_accepted_rows(tmp_path, smollm2_gguf):
    from configs import rejection_sft
    from r1jax.data import splits
    from r1jax.train import sft
    run(make_config(tmp_path), tmp_path / "out")
    config = rejection_sft.get_config(f"tiny,{tmp_path / 'out'}")
    source = splits.open_split(config.data, config.data.train_split)
    examples = sft.build_examples(config.data, config.sft, smollm2_gguf[1], config.data.train_split)
    mixed = read(tmp_path / "out" / merge.ACCEPTED)
    assert len(source) == len(examples) == len(mixed) == 16
    # Only the assistant's reply is trained on: its text is what the trained tokens decode to.
    trained = [t for t, w in zip(examples[0].ids, examples[0].trained) if w]
    assert smollm2_gguf[1].decode(trained, skip_special_tokens=True).strip() == \
        source[0]["messages"][-1]["content"].strip()
