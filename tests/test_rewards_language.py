"""language_consistency: English, Chinese, their mix, and Latin-script languages."""
import json
import os

import pytest

from r1jax import rewards
from r1jax.data import templates
from r1jax.rewards import language
from r1jax.rewards.language import detect_language

EN_PROMPT = "Natalia sold clips to 48 of her friends in April. How many clips did she sell?"
ZH_PROMPT = "娜塔莉亚四月份卖给了48个朋友发夹，五月份卖出的数量是四月份的一半。她一共卖了多少个？"
EN_COT = ("Natalia sold 48 clips in April. In May she sold half as many, which is 48 / 2 = 24. "
          "So the total is 48 + 24 = 72.")
ZH_COT = "四月份卖了48个。五月份卖了一半，也就是48 / 2 = 24个。所以一共是48 + 24 = 72个。"


GSM8K = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "gsm8k", "train.jsonl")


def _reward(prompts, cots, **fields):
    completions = [f"<think>{cot}</think>\n<answer>72</answer>" for cot in cots]
    return rewards.get("language_consistency")(prompts, completions, **fields)


def test_pure_english_and_pure_chinese_score_one():
    assert _reward([EN_PROMPT, ZH_PROMPT], [EN_COT, ZH_COT]) == [1.0, 1.0]


def test_wrong_language_scores_zero():
    assert _reward([EN_PROMPT, ZH_PROMPT], [ZH_COT, EN_COT]) == [0.0, 0.0]


def test_mixed_chinese_and_english_gives_the_fraction():
    # 4 Han characters and 6 English words (So the total is clips with; numbers and x are not).
    cot = "首先计算。So the total is 48 + 24 = 72 clips, with x = 3."
    assert language.word_languages(cot, "en") == {"zh": 4, "en": 6}
    assert _reward([EN_PROMPT], [cot]) == [pytest.approx(6 / 10)]
    assert _reward([ZH_PROMPT], [cot]) == [pytest.approx(4 / 10)]
    # R1's case: a Chinese chain of thought drifting into English half way.
    english = "Now let me double check the answer in English: 48 plus 24 makes 72."
    zh = len([c for c in ZH_COT if "\u4e00" <= c <= "\u9fff"])
    en = len("Now let me double check the answer in English plus makes".split())
    assert _reward([ZH_PROMPT], [ZH_COT + english]) == [pytest.approx(zh / (zh + en))]


def test_language_field_overrides_detection():
    assert _reward([EN_PROMPT], [ZH_COT], language=["zh-CN"]) == [1.0]
    assert _reward([EN_PROMPT, EN_PROMPT], [ZH_COT, EN_COT], language=[None, "en"]) == [0.0, 1.0]


def test_latin_script_languages_by_function_words():
    fr_cot = "Nous devons calculer le nombre total de pinces. Elle a vendu la moitié en mai."
    mixed = fr_cot + " Then we add the two months together and get the total."
    assert _reward([""], [fr_cot], language=["fr"]) == [1.0]
    assert _reward([""], [fr_cot], language=["en"]) == [0.0]
    fr = len("Nous devons calculer le nombre total de pinces Elle vendu la moitié en mai".split())
    en = len("Then we add the two months together and get the total".split())
    assert _reward([""], [mixed], language=["fr"]) == [pytest.approx(fr / (fr + en))]
    assert language.detect_language("Combien de pinces a-t-elle vendu dans le mois?") == "fr"
    assert language.detect_language("Wie viele Klammern hat sie insgesamt verkauft?") == "de"


def test_detection_by_script():
    assert language.detect_language(EN_PROMPT) == "en"
    assert language.detect_language(ZH_PROMPT) == "zh"
    assert language.detect_language("りんごは何個ありますか") == "ja"
    assert language.detect_language("Сколько всего заколок она продала?") == "ru"
    assert language.detect_language("12 + 30 = ?") == "en"


def test_math_code_and_variables_are_not_words():
    cot = "四月份卖了$\\frac{48}{2}$个，设 x = 24。```python\nprint(sum([48, 24]))\n```"
    assert language.word_languages(cot, "zh") == {"zh": 7}
    assert _reward([ZH_PROMPT], [cot]) == [1.0]


def test_empty_chain_of_thought():
    assert _reward([EN_PROMPT], ["48 + 24 = 72"]) == [0.0]
    fn = rewards.get("language_consistency", empty_score=1.0)
    assert fn([EN_PROMPT], ["<think>48 + 24 = 72</think><answer>72</answer>"]) == [1.0]


def test_english_gsm8k_solutions_are_english():
    """All 7,473 worked solutions on their questions: names that are Spanish function words
    ("Del Monte", "Al") cost a handful of them a sentence; one has no word at all."""
    if not os.path.exists(GSM8K):
        pytest.skip(f"GSM8K not found at {GSM8K}")
    with open(GSM8K) as f:
        rows = [json.loads(line) for line in f]
    scores = rewards.get("language_consistency")([r["question"] for r in rows], [r["answer"] for r in rows])
    assert sum(s == 1.0 for s in scores) >= len(rows) - 10
    assert sum(scores) / len(rows) > 0.999


def test_the_target_comes_from_the_question_not_the_template():
    """A Chinese question in the English R1-Zero template: detected from the templated prompt
    the target was English (before issue 13 the Chinese chain of thought scored 0.0)."""
    question = "小明有三个苹果，又买了两个。他现在有几个苹果？"
    prompt = templates.render_prompt("r1_zero", question)
    assert detect_language(prompt) == "en"  # What the prompt alone says.
    cot = "小明原来有三个苹果，又买了两个，所以一共有五个。"
    assert _reward([prompt], [cot], question=[question]) == [1.0]
    assert _reward([prompt], [cot], question=[question], language=["en"]) == [0.0]  # The field wins.
    assert _reward([prompt], [cot]) == [0.0]  # The documented fallback, without a question.
