"""r1jax: the DeepSeek-R1 post-training recipe in JAX."""
import setuptools

setuptools.setup(
    name="r1jax",
    version="0.1.0",
    description="DeepSeek-R1 post-training (GRPO, SFT, rejection sampling, distillation) in JAX/Flax.",
    packages=setuptools.find_packages(include=["r1jax", "r1jax.*", "launch", "configs", "configs.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.7.1",
        "flax>=0.10",
        "optax",
        "orbax-checkpoint",
        "transformers>=4.45",
        "tokenizers",
        "tensorflow-datasets",
        "array-record",
        "importlib_resources",
        "ml-collections",
        "absl-py",
        "math-verify",
        "etils[epath]",
        "gguf",
        # transformers reads a GGUF file's tokenizer (the default model's) with torch; CPU is enough.
        "torch==2.13.0",
        "safetensors",
        "tensorboardX",
        "tqdm",
        "numpy",
        "matplotlib",  # launch/pipeline.py's report plots
        "jaxtyping",  # shape annotations; checked at run time under pytest (beartype)
    ],
    extras_require={
        "test": [
            "pytest>=7.3",
            "pytest-xdist",
            "beartype",
            "accelerate",
            "peft",  # tests/test_lora.py loads r1jax's LoRA adapters with it
            "nbclient",
            "nbformat",
            "ipykernel",
            "matplotlib",
        ],
        "bench": ["accelerate", "trl"],
    },
)
