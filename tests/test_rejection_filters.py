"""Rejection sampling's filters and selection, on hand-made texts and hand-counted values."""
import ml_collections
import pytest

from r1jax.rejection import filters, select

PROMPT = "Please explain why the sky is blue."


def failed(completion, num_tokens=10, finish_reason="stop", **overrides):
    config = filters.default_config()
    config.format.enabled = True
    for name, params in overrides.items():
        config[name].update(params)
    return filters.check(config, (), PROMPT, completion, num_tokens, finish_reason)[1]


GOOD = ("<think>The sky scatters blue light more than red light, because shorter waves scatter "
        "more strongly in the air.</think> <answer>Rayleigh scattering.</answer>")


def test_a_clean_response_passes_every_filter():
    assert failed(GOOD) == []


def test_mixed_language_chain_of_thought_is_rejected():
    mixed = ("<think>The sky scatters blue light. 天空是蓝色的因为瑞利散射使短波长的光散射得更多所以我们看到"
             "蓝色</think> <answer>Rayleigh scattering.</answer>")
    assert failed(mixed) == ["language"]


def test_overlong_by_budget_or_by_token_count():
    assert failed(GOOD, finish_reason="length") == ["overlong"]
    assert failed(GOOD, num_tokens=101, overlong={"max_tokens": 100}) == ["overlong"]
    assert failed(GOOD, num_tokens=100, overlong={"max_tokens": 100}) == []


def test_long_paragraph_counts_characters_between_blank_lines():
    paragraph = ("Sunlight holds every colour; air molecules scatter short blue waves far more than "
                 "long red ones, so blue reaches us from all directions.")
    text = f"<think>{paragraph}\n\nShort one.</think> <answer>Rayleigh.</answer>"
    assert filters.longest_paragraph(text) == len(f"<think>{paragraph}".strip())
    assert failed(text, long_paragraph={"max_chars": 100}) == ["long_paragraph"]
    assert failed(text, long_paragraph={"max_chars": 200}) == []


def test_code_blocks_only_count_inside_the_reasoning():
    in_reasoning = "<think>Let me compute:\n```python\nprint(1)\n```\nso it is one.</think> <answer>1</answer>"
    in_answer = "<think>The answer is one, as the program below prints.</think> <answer>```print(1)```</answer>"
    assert filters.reasoning_has_code(in_reasoning)
    assert not filters.reasoning_has_code(in_answer)
    assert not filters.reasoning_has_code("```print(1)```")  # no think block: no separate reasoning
    assert "code_in_reasoning" in failed(in_reasoning)


def test_wrong_format_is_rejected_when_enabled():
    assert failed("Rayleigh scattering makes the sky blue, as the light scatters.") == ["format"]
    config = filters.default_config()  # format is off by default: most instruct models don't use tags
    assert filters.check(config, (), PROMPT, "Rayleigh scattering makes the sky look blue.", 9, "stop")[1] == []


def test_repeated_ngram_share_matches_a_hand_count():
    text = "the sky is blue " * 5  # 20 words, 17 four-grams, 4 distinct
    share, count = filters.repeated_share(text, 4)
    assert (count, share) == (17, pytest.approx(1 - 4 / 17))
    assert failed(f"<think>{text}</think> <answer>blue</answer>") == ["repetition"]


def test_skipped_filters_do_not_run():
    config = filters.default_config()
    scores, failures = filters.check(config, ("overlong",), PROMPT, GOOD, 10, "length")
    assert "overlong" not in scores and failures == []


def test_duplicates_exact_after_normalising_and_near_by_shingles():
    dedup = filters.Deduplicator(filters.default_config())
    base = "First add the tens, then the ones, and the total is forty two in the end."
    assert dedup.reason(base) is None
    assert dedup.reason("  FIRST add the tens, then the ones,\nand the total is forty two in the end.") \
        == "duplicate_exact"  # punctuation kept: only case and whitespace are normalised
    assert dedup.reason(base.replace("end.", "end!")) == "duplicate_near"
    assert dedup.reason("A different way: count up from the larger number to get forty two.") is None
    off = filters.Deduplicator(filters.default_config(), skip=("duplicate",))
    assert off.reason(base) is None and off.reason(base) is None


def test_jaccard_of_hand_made_sets():
    assert filters.jaccard(frozenset("abc"), frozenset("bcd")) == pytest.approx(2 / 4)


def test_unknown_filter_or_parameter_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"filters.profanity: unknown filter; known filters: \['code_in_reasoning'"):
        filters.validate({"profanity": {"enabled": True}})
    with pytest.raises(ValueError, match=r"filters.language: unknown parameters \['treshold'\]; allowed"):
        filters.validate({"language": {"enabled": True, "treshold": 0.5}})


def selection(**values):
    config = ml_collections.ConfigDict(dict(per_prompt=2, strategy="all", ratio=3.0, total=0, seed=0))
    config.update(values)
    return config


def rows(lengths):
    return [{"provenance": {"num_tokens": n}} for n in lengths]


def test_per_prompt_strategies():
    lengths = [9, 3, 7, 3]
    assert select.per_prompt(rows(lengths), selection(strategy="all"), "p") == ([0, 1], [2, 3])
    assert select.per_prompt(rows(lengths), selection(strategy="shortest"), "p") == ([1, 3], [0, 2])
    kept, left = select.per_prompt(rows(lengths), selection(strategy="random"), "p")
    assert len(kept) == 2 and sorted(kept + left) == [0, 1, 2, 3]
    assert select.per_prompt(rows(lengths), selection(strategy="random"), "p") == (kept, left)
    assert select.per_prompt(rows(lengths), selection(per_prompt=0), "p") == ([0, 1, 2, 3], [])


@pytest.mark.parametrize("reasoning, general, ratio, total, expected", [
    (600_000, 500_000, 3.0, 800_000, (600_000, 200_000)),  # R1's mix
    (100, 50, 3.0, 0, (99, 33)),      # reasoning-bound: exactly 3 : 1
    (900, 10, 3.0, 0, (30, 10)),      # general-bound
    (900, 900, 3.0, 40, (30, 10)),    # total-bound
    (5, 7, 0.0, 0, (5, 7)),           # no mix
    (5, 7, 0.0, 8, (5, 3)),
    (10, 0, 3.0, 0, (0, 0)),          # one side empty: nothing at the ratio
])
def test_mix_sizes(reasoning, general, ratio, total, expected):
    assert select.mix_sizes(reasoning, general, ratio, total) == expected


def test_shares_follow_weights_and_redistribute_what_a_source_lacks():
    assert select.shares({"a": 100, "b": 100}, {"a": 3.0, "b": 1.0}, 40) == {"a": 30, "b": 10}
    assert select.shares({"a": 5, "b": 100}, {"a": 3.0, "b": 1.0}, 40) == {"a": 5, "b": 35}
    assert select.shares({"a": 10, "b": 10}, {"a": 1.0, "b": 1.0}, 7) == {"a": 4, "b": 3}
    assert select.shares({"a": 2, "b": 2}, {"a": 1.0, "b": 1.0}, 10) == {"a": 2, "b": 2}


def test_mix_takes_seeded_subsets_in_original_order():
    by_source = {"math": [{"i": i} for i in range(12)], "chat": [{"i": 100 + i} for i in range(10)]}
    out, taken = select.mix(by_source, {"math"}, {"math": 1.0, "chat": 1.0}, selection(total=8))
    assert taken == {"math": 6, "chat": 2}
    chat, math_rows = out[:2], out[2:]
    assert [r["i"] for r in chat] == sorted(r["i"] for r in chat)
    assert [r["i"] for r in math_rows] == sorted(r["i"] for r in math_rows) and len(math_rows) == 6
    again, _ = select.mix(by_source, {"math"}, {"math": 1.0, "chat": 1.0}, selection(total=8))
    assert again == out


def test_unknown_strategy_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"select.strategy='longest': expected one of \('all', 'shortest', 'random'\)"):
        select.validate(selection(strategy="longest"))
