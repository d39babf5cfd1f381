"""Language consistency: the fraction of the chain of thought's words in the target language.

DeepSeek-R1 added this reward because RL made its chains of thought drift between Chinese and
English. The chain of thought is the think block (`format.think_text`); the target language is
the example's `language` field ("en", "zh", "zh-CN", ...) or, where that is absent or None, the
language detected in the prompt (`detect_language`).

How words are counted (Unicode scripts, no dictionary, no dependency):
- Han, kana and Thai characters count one word each (these scripts do not separate words by
  spaces); Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari and Hangul runs count one word each.
- Numbers, punctuation, math symbols, LaTeX commands (`\\frac`), fenced and inline code, and
  one-letter Latin words (mostly variables: x, n, a) are not words.
- Script decides the language of non-Latin words: zh = Han, ja = Han + kana, ko = Hangul,
  ru/uk/bg/sr/mk = Cyrillic, el = Greek, ar/fa/ur = Arabic, he = Hebrew, hi/mr/ne = Devanagari,
  th = Thai; any other code is taken to be a Latin-script language.
- Latin-script sentences are told apart by function words (`STOPWORDS`: en, fr, de, es, it,
  pt): a sentence whose function words favour another of these languages than the target
  counts as that language.

What it cannot tell apart (all of these count as the target language):
- Chinese from Japanese written in kanji only, Russian from Ukrainian or Bulgarian, Arabic from
  Persian or Urdu: same script;
- Latin-script sentences with no function words from the lists ("Total: 42 apples."), and any
  two Latin languages outside those lists (Vietnamese, Turkish, Indonesian, ...);
- English words inside an otherwise French sentence (loanwords, names), and vice versa.
A chain of thought with no words at all scores `empty_score` (0 by default: cannot be gamed by
writing no words).

Detection counts words the same way, so a question of mixed languages goes to the language
most of its words are in: give the data a `language` field where that is not the target.
"""
from __future__ import annotations

import functools
import re
from collections import Counter

from r1jax.rewards.format import think_text
from r1jax.rewards.registry import safe_map

_LATIN_LETTER = "a-z\u00df-\u00f6\u00f8-\u024f"  # Lower case: text is lowered first. Not ÷.
# Words of two letters or more: one-letter ones are mostly variables (x, n, a).
_LATIN_WORD = re.compile(rf"[{_LATIN_LETTER}]{{2,}}(?:['’][{_LATIN_LETTER}]+)*")
_OTHER_WORD = re.compile(
    r"(?P<han>[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef])"
    r"|(?P<kana>[\u3040-\u30ff])"
    r"|(?P<thai>[\u0e00-\u0e7f])"
    r"|(?P<hangul>[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]+)"
    r"|(?P<cyrillic>[\u0400-\u04ff]+)"
    r"|(?P<greek>[\u0370-\u03ff]+)"
    r"|(?P<arabic>[\u0600-\u06ff]+)"
    r"|(?P<hebrew>[\u0590-\u05ff]+)"
    r"|(?P<devanagari>[\u0900-\u097f]+)"
)
_NOT_PROSE = re.compile(r"```.*?```|`[^`\n]*`|\\[A-Za-z]+", re.DOTALL)
_SENTENCE = re.compile(r"[^.!?;:\n。！？；：]+")

_SCRIPT_LANGUAGES = {
    "han": ("zh", "ja"), "kana": ("ja",), "hangul": ("ko",), "thai": ("th",),
    "cyrillic": ("ru", "uk", "bg", "sr", "mk"), "greek": ("el",), "arabic": ("ar", "fa", "ur"),
    "hebrew": ("he",), "devanagari": ("hi", "mr", "ne"),
}
# Frequent function words; shared ones (de, la, que) weigh for every language that has them,
# so distinctive ones decide. English also lists the words of other lists it uses (in, per, son).
STOPWORDS = {lang: frozenset(words.split()) for lang, words in {
    "en": "the of and to is are was were be been that this these those it its for with as by we "
          "you they he she his her him not have has had but from or which will would can could "
          "there their then than so if what how when where who all each our us let do does did "
          "into about also because since in on at an per plus no son come",
    "fr": "le la les de des du un une et est sont que qui pour dans avec nous vous donc mais sur "
          "pas ce cette ces il elle ils elles au aux en par plus ont être fait sa son ses leur "
          "leurs chaque alors comme où ne se lui",
    "de": "der die das und ist sind ein eine einen einem zu den dem des nicht mit sich auf für von "
          "auch es wir wird werden dass aus bei nach oder aber wenn also noch hat haben jeder "
          "insgesamt im ich du sie",
    "es": "el la los las de del y que en un una es son por para con no se lo su sus al como más "
          "pero hay entonces cada tiene tenemos este esta está estos están entre",
    "it": "il lo la gli le di del della dei delle che un una per con non si sono da al alla come "
          "più ma quindi ogni questo questa abbiamo ha hanno nel nella",
    "pt": "o os as de do da dos das que um uma para com não se em no na por são mais mas como "
          "então cada tem temos este esta isso",
}.items()}


# word -> the languages whose list has it.
_STOPWORD_LANGUAGES = {word: tuple(lang for lang, words in STOPWORDS.items() if word in words)
                       for word in set().union(*STOPWORDS.values())}


def normalise_language(code: str) -> str:
    """"zh-CN", "zh_Hans", "ZH" -> "zh"."""
    return re.split(r"[-_]", code.strip().lower(), maxsplit=1)[0]


def _is_latin(language: str) -> bool:
    return not any(language in languages for languages in _SCRIPT_LANGUAGES.values())


def _script_language(script: str, target: str) -> str:
    """The language a non-Latin word counts as: the target if its script writes the target."""
    languages = _SCRIPT_LANGUAGES[script]
    return target if target in languages else languages[0]


def _latin_language(words: list[str], target: str) -> str:
    """The language of one sentence's (lower-case) Latin words, by function words; ties and
    sentences without any go to the target when it is a Latin-script language, else to "en"."""
    fallback = target if _is_latin(target) else "en"
    if fallback not in STOPWORDS:
        return fallback  # No list to tell it from the others: every Latin sentence counts as it.
    hits = Counter(lang for word in words for lang in _STOPWORD_LANGUAGES.get(word, ()))
    if not hits or hits[target] == max(hits.values()):
        return fallback
    return hits.most_common(1)[0][0]


def word_languages(text: str, target: str) -> Counter:
    """Counter {language: number of words} of `text`, judged relative to `target`.

    A word whose script or sentence cannot tell it from `target` counts as `target`.
    """
    counts: Counter = Counter()
    text = _NOT_PROSE.sub(" ", text)
    if not text.isascii():
        for match in _OTHER_WORD.finditer(text):
            counts[_script_language(match.lastgroup, target)] += 1
    for sentence in _SENTENCE.findall(text.lower()):
        words = _LATIN_WORD.findall(sentence)
        if words:
            counts[_latin_language(words, target)] += len(words)
    return counts


@functools.lru_cache(maxsize=4096)
def detect_language(text: str) -> str:
    """The language most of `text`'s words are in ("en" when it has none). Cached: the G
    completions of a prompt share it."""
    text = _NOT_PROSE.sub(" ", text)
    scripts = Counter(match.lastgroup for match in _OTHER_WORD.finditer(text))
    scripts["latin"] = len(_LATIN_WORD.findall(text.lower()))
    script, count = scripts.most_common(1)[0]
    if count == 0:
        return "en"
    if script == "latin":
        return word_languages(text, "en").most_common(1)[0][0]
    if script == "han" and scripts["kana"] * 10 >= scripts["han"]:
        return "ja"  # Japanese mixes kana into kanji; Chinese has none.
    return _SCRIPT_LANGUAGES[script][0]


def consistency(cot: str, target: str, empty_score: float = 0.0) -> float:
    """Fraction of the words of `cot` in language `target` (normalised code)."""
    counts = word_languages(cot, target)
    total = sum(counts.values())
    return counts[target] / total if total else empty_score


def language_consistency(prompts: list[str], completions: list[str], *, language: list | None = None,
                         question: list[str] | None = None, empty_score: float = 0.0,
                         **fields) -> list[float]:
    """Language-consistency reward: N floats in [0, 1].

    Args:
      language: optional N target language codes (None entries: detect, see below).
      question: optional N questions before templating, where the target is detected when
        `language` gives none (else it is detected in the templated prompt).
      empty_score: the score of a chain of thought without words.
    """
    targets = language if language is not None else [None] * len(prompts)
    sources = question if question is not None else prompts

    def score(source: str, completion: str, target: str | None) -> float:
        target = normalise_language(target) if target else detect_language(source)
        return consistency(think_text(completion), target, empty_score)

    return safe_map(score, sources, completions, targets)
