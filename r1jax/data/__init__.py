"""Data for every stage: prepared data sets (tfds, array_record), prompt templates, input pipelines.

    prepare("math", "gsm8k.jsonl", name="gsm8k", data_dir=DIR)    # once; or python -m launch.data
    source = load("gsm8k", DIR, "train")                          # len(), [i] -> dict
    batches = BatchIterator(source, global_batch_size=32, seed=0,
                            process_index=jax.process_index(), process_count=jax.process_count())
"""
from r1jax.data.builders import KINDS, RecordSource, list_datasets, load, prepare
from r1jax.data.countdown import countdown_verify
from r1jax.data.pipeline import BatchIterator, encode_prompt, prompt_text, tokenize_prompts
from r1jax.data.templates import R1_SYSTEM_PROMPT, R1_ZERO_TEMPLATE, TEMPLATE_NAMES, render_prompt
from r1jax.data.prompts import PromptIterator
from r1jax.data.mixture import MixtureIterator, prompt_iterator
from r1jax.data.splits import open_split
