"""Tokenizers of Hugging Face directories and GGUF files, through transformers.AutoTokenizer.

transformers rebuilds a GGUF file's tokenizer from its vocabulary and merges, which takes ~5 s
for SmolLM2's 49k tokens; the result is cached as a saved tokenizer (~0.1 s to load), keyed by
the file's path, size and modification time and by the transformers version that converted it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from typing import Any, Optional


def default_cache_dir() -> str:
    """~/.cache/r1jax/tokenizers, or under $XDG_CACHE_HOME when set."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "r1jax", "tokenizers")


def _cache_key(path: str, transformers_version: str) -> str:
    # Path, size and mtime identify a file version without reading gigabytes to hash them.
    stat = os.stat(path)
    key = f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{transformers_version}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def _save_to_cache(tokenizer, cached: str) -> None:
    """Saves into a temporary directory renamed into place, so a concurrent reader never sees
    a half-written tokenizer; when another process got there first, its copy is kept."""
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    staging = tempfile.mkdtemp(dir=os.path.dirname(cached))
    tokenizer.save_pretrained(staging)
    try:
        os.rename(staging, cached)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)


def load_tokenizer(path: str, *, cache: bool = True, cache_dir: Optional[str] = None):
    """The transformers tokenizer of a HF directory or a GGUF file (chat template included).

    Args:
        path: a directory with tokenizer files, or a .gguf file.
        cache: reuse (and write) the converted tokenizer of a GGUF file.
        cache_dir: where converted tokenizers live; default `default_cache_dir()`.
    """
    # Imported here: transformers takes a second to import, and most users of r1jax.models never
    # build a tokenizer.
    import transformers

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No tokenizer at {path}: expected a Hugging Face directory or a "
                                "GGUF file.")
    if os.path.isdir(path):
        return transformers.AutoTokenizer.from_pretrained(path)
    if not cache:
        return transformers.AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                                          gguf_file=os.path.basename(path))
    cached = os.path.join(cache_dir or default_cache_dir(),
                          _cache_key(path, transformers.__version__))
    if not os.path.isdir(cached):
        _save_to_cache(load_tokenizer(path, cache=False), cached)
    return transformers.AutoTokenizer.from_pretrained(cached)


# A toy vocabulary: 1-digit arithmetic questions ("What is 3 + 4?") and their answers.
DIGITS_VOCAB = ("<|endoftext|>", "<unk>", *"0123456789", "+", "-", "*", "=", "?", ".", "What",
                "is")


def save_digits_tokenizer(directory: str) -> str:
    """Writes a word-level tokenizer of DIGITS_VOCAB (20 tokens; one token per digit, digits
    decoded without spaces so "1", "2" reads 12) to `directory` unless one is there; returns it.

    For toy tasks a tiny randomly initialised model can learn in a minute on a CPU: with a
    20-token vocabulary, random completions already hit an answer now and then.
    """
    import tokenizers  # transformers' own dependency.
    import transformers

    if os.path.isfile(os.path.join(directory, "tokenizer.json")):
        return directory
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(
        {token: i for i, token in enumerate(DIGITS_VOCAB)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Whitespace(),
        tokenizers.pre_tokenizers.Digits(individual_digits=True)])
    tokenizer.decoder = tokenizers.decoders.Fuse()
    _save_to_cache(transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        unk_token="<unk>"), directory)
    return directory


# End-of-turn tokens of the chat formats r1jax's models use (ChatML for Qwen and SmolLM, Llama 3,
# Gemma): an instruct model ends its reply with one of them, which is not always the tokenizer's eos.
CHAT_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<end_of_turn>")


def stop_tokens(tokenizer: Any) -> tuple[int, ...]:
    """Token ids that end a completion: the tokenizer's eos and the chat end tokens it knows."""
    vocab = tokenizer.get_vocab()
    ids = {vocab[token] for token in CHAT_END_TOKENS if token in vocab}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return tuple(sorted(ids))
