"""Prompt templates: how a question becomes the text the policy continues.

A config names a template ("r1_zero", "chat", "chat_r1", "plain") or writes its own format
string containing "{question}", e.g. config.data.template = "Q: {question}\\nA:". A format string
after "chat:" is the user's message inside the chat template, e.g.
"chat:{question} Reply with just the number.".
"""
from typing import Any

# DeepSeek-R1 paper, Table 1: the prompt R1-Zero was trained with, straight on the base model.
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>. User: {question}. Assistant:"
)

# The same instruction as a system prompt, for instruction-tuned models used with their chat template.
R1_SYSTEM_PROMPT = (
    "The user asks a question, and you solve it. You first think about the reasoning process and then "
    "provide the answer. The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> "
    "answer here </answer>."
)

# Where an answer in R1's format ends. Past it, a base model continuing the R1-Zero template
# writes an invented next "User: … Assistant:" turn: sampling cuts there (r1jax.sampling.stop_strings).
R1_STOP_STRINGS = ("</answer>",)

FORMAT_TEMPLATES = {"r1_zero": R1_ZERO_TEMPLATE, "plain": "{question}"}
CHAT_TEMPLATES = ("chat", "chat_r1")
TEMPLATE_NAMES = (*FORMAT_TEMPLATES, *CHAT_TEMPLATES)
CHAT_FORMAT_PREFIX = "chat:"


def is_chat_template(template: str) -> bool:
    """True for the templates rendered by the tokenizer's chat template (their text carries the
    model's special tokens already)."""
    return template in CHAT_TEMPLATES or template.startswith(CHAT_FORMAT_PREFIX)


def default_stop_strings(template: str) -> tuple[str, ...]:
    """The stop strings completions of `template`'s prompts end at: R1_STOP_STRINGS for the R1
    templates ("r1_zero", "chat_r1") and for format strings that ask for `</answer>` themselves;
    none for the others (a chat reply ends with the model's end-of-turn token)."""
    asks_for_answer_tags = template in ("r1_zero", "chat_r1") or (
        template not in TEMPLATE_NAMES and R1_STOP_STRINGS[0] in template)
    return R1_STOP_STRINGS if asks_for_answer_tags else ()


def _fill(template: str, question: str) -> str:
    text = FORMAT_TEMPLATES.get(template, template)
    if "{question}" not in text:
        raise ValueError(f"template {template!r} is neither a registered name {TEMPLATE_NAMES} "
                         "nor a format string containing '{question}'")
    return text.replace("{question}", question)


def render_prompt(template: str, question: str, tokenizer: Any = None, system: str | None = None) -> str:
    """Renders one prompt.

    Args:
      template: a registered name ("r1_zero", "plain", "chat", "chat_r1"), a format string
        containing "{question}" (only that placeholder is filled, so other braces such as
        "\\boxed{}" are left alone), or "chat:" + such a format string for the user's message.
      question: the question or problem text.
      tokenizer: a Hugging Face tokenizer; needed by "chat" and "chat_r1", which call its
        `apply_chat_template(..., add_generation_prompt=True)`.
      system: a system prompt for the chat templates ("chat_r1" defaults to R1_SYSTEM_PROMPT).

    Returns:
      str, the prompt text.

    Raises:
      ValueError: unknown template, a chat template without tokenizer, or a system prompt given to
        a non-chat template (it would be silently dropped).
    """
    if is_chat_template(template):
        if tokenizer is None:
            raise ValueError(f"template {template!r} renders with the model's chat template: pass a tokenizer")
        if template == "chat_r1" and system is None:
            system = R1_SYSTEM_PROMPT
        messages = [{"role": "system", "content": system}] if system is not None else []
        if template.startswith(CHAT_FORMAT_PREFIX):
            question = _fill(template[len(CHAT_FORMAT_PREFIX):], question)
        messages.append({"role": "user", "content": question})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if system is not None:
        raise ValueError(f"a system prompt only applies to the chat templates {CHAT_TEMPLATES}, not {template!r}")
    return _fill(template, question)
