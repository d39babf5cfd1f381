"""LoRA (r1jax/models/lora.py): rank 0 changes nothing, an untrained adapter is the base model,
only the adapters train and sit in the optimizer state, π_ref and checkpoints, and the exports
load in transformers (merged weights: greedy parity) and peft (the adapter: the same logits)."""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from configs import common, r1_zero
from r1jax import checkpoint, models, sampling, sharding
from r1jax.models import convert, convert_lora, lora
from r1jax.models.config import LoraConfig
from r1jax.models.policy import lora_from_section
from r1jax.train import grpo, run, step

LORA = LoraConfig(rank=4, alpha=8.0)
logits = jax.jit(models.logits, static_argnums=0)  # eager op-by-op dispatch is slower
TOKENS = jnp.asarray([[1, 17, 33, 4, 90, 7], [1, 200, 100, 50, 25, 12]])


def adapted(preset: str, seed: int = 0):
    """(config, params) of a tiny random model whose adapters all matter (B drawn, not 0)."""
    config = models.preset(preset).replace(lora=LORA)
    params = models.init_params(config, jax.random.key(seed))
    keys = iter(jax.random.split(jax.random.key(seed + 1), 64))
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: (0.2 * jax.random.normal(next(keys), x.shape)
                         if path[-1].key.endswith("_lora_b") else x), params)
    return config, params


def test_rank_0_adds_no_adapters_and_the_update_trains_every_weight():
    assert lora_from_section(common.lora_config()) is None
    config = models.preset("tiny_llama")
    params = models.init_params(config, jax.random.key(0))
    assert lora.adapters(params) == {} and lora.frozen(params) == {}
    assert lora.trainable(params) is params

    def loss_fn(p, batch):
        return logits(config, p, batch).mean(), {}

    state = run.TrainState(params=params, opt_state=optax.sgd(0.5).init(params), reference=None,
                           updates=jnp.zeros((), jnp.int32))
    new, _ = jax.jit(lambda s: step.apply_gradients(
        loss_fn, s, TOKENS, jnp.ones(1), optimizer=optax.sgd(0.5), num_micro_batches=1,
        nan_policy="stop"))(state)
    grads = jax.jit(jax.grad(lambda p: loss_fn(p, TOKENS)[0]))(params)
    expected = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_head_beside_an_adapted_model_trains_and_its_base_stays_frozen():
    params = jax.eval_shape(models.init_params, models.preset("tiny_llama").replace(lora=LORA),
                            jax.random.key(0))
    tree = {"policy": params, "value_head": {"kernel": jnp.zeros((64, 1))}}
    trainable, frozen = lora.split(tree)
    assert trainable["value_head"] is tree["value_head"] and "value_head" not in frozen
    assert trainable["policy"] == lora.adapters(params)
    assert frozen["policy"] == lora.base(params)
    assert lora.combine(frozen, trainable) == tree


@pytest.mark.parametrize("preset", ["tiny_llama", "tiny_qwen2", "tiny_qwen3"])
def test_untrained_adapters_give_the_base_models_logits_exactly(preset):
    config = models.preset(preset)
    params = models.init_params(config.replace(lora=LORA), jax.random.key(0))
    assert set(lora.adapters(params)["layers"]["attn"]) == {
        f"{t}_lora_{m}" for t in "qkvo" for m in "ab"}
    assert not np.any([np.any(b) for p, b in jax.tree_util.tree_leaves_with_path(params)
                       if p[-1].key.endswith("_lora_b")])
    np.testing.assert_array_equal(logits(config.replace(lora=LORA), params, TOKENS),
                                  logits(config, lora.base(params), TOKENS))


def test_adapted_forward_equals_the_merged_weights():
    config, params = adapted("tiny_qwen2")
    plain, merged = lora.merged(config, params)
    ours = logits(config, params, TOKENS)
    np.testing.assert_allclose(ours, logits(plain, merged, TOKENS), atol=1e-4)
    # ...and the adapters do change the model.
    assert np.abs(ours - logits(plain, lora.base(params), TOKENS)).max() > 0.1


def test_adapters_are_sharded_by_their_logical_axes():
    mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
    shardings = sharding.param_shardings(models.preset("tiny_llama").replace(lora=LORA), mesh)
    attn, mlp = shardings["layers"]["attn"], shardings["layers"]["mlp"]
    # A's input axis follows its kernel's (embed -> fsdp), B's output too; the rank replicated.
    assert tuple(attn["q_lora_a"].spec) == (None, "fsdp", None)
    assert tuple(attn["q_lora_b"].spec) == (None, None, "tensor", None)
    assert tuple(mlp["down_lora_a"].spec) == (None, "tensor", None)
    assert tuple(mlp["down_lora_b"].spec) == (None, None, "fsdp")


def test_dropout_acts_only_with_its_rng():
    config, params = adapted("tiny_llama")
    config = config.replace(lora=LoraConfig(rank=4, alpha=8.0, dropout=0.5))
    positions = jnp.broadcast_to(jnp.arange(TOKENS.shape[1]), TOKENS.shape)
    forward = jax.jit(models.forward_with_router_stats, static_argnums=0)
    plain = forward(config, params, TOKENS, positions)[0]
    dropped = forward(config, params, TOKENS, positions, dropout_rng=jax.random.key(0))[0]
    np.testing.assert_array_equal(plain, logits(config, params, TOKENS))
    assert np.abs(plain - dropped).max() > 1e-3


@pytest.mark.parametrize("key, value, message", [
    ("rank", -1, "model.lora.rank=-1"),
    ("targets", ("q", "x_proj"), "model.lora.targets"),
    ("base_dtype", "int8", "model.lora.base_dtype='int8'"),
    ("dropout", 0.1, "model.lora.dropout=0.1 is not allowed: expected 0 in stage 'grpo'"),
])
def test_bad_lora_values_are_named(key, value, message):
    config = r1_zero.get_config("tiny")
    config.model.lora.update(**{"rank": 4, key: value})
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        grpo.validate_config(config, mesh_batch=8)


def test_latent_attention_and_expert_models_refuse_adapters():
    with pytest.raises(ValueError, match="model.lora"):
        models.preset("tiny_qwen3_moe").replace(lora=LORA)


def _stored(step_dir, item):
    tree = ocp.StandardCheckpointHandler().metadata(epath_of(step_dir, item)).tree
    return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def epath_of(step_dir, item):
    from etils import epath
    return epath.Path(step_dir) / item


def test_grpo_trains_only_adapters_and_checkpoints_nothing_else(tmp_path):
    config = r1_zero.get_config("tiny")  # β = 0.04: π_ref is kept too
    config.model.lora.update(rank=4, alpha=8.0, base_dtype="bfloat16")
    config.data.data_dir = str(tmp_path / "data")
    config.train.update(num_steps=2, checkpoint_every=2, eval_every=0)
    config.eval.max_problems = 0
    workdir = str(tmp_path / "w")
    metrics = grpo.train(config, workdir)
    assert metrics["kl"] > 0  # the policy moved away from π_ref (= the base)

    step_dir = os.path.join(workdir, checkpoint.CHECKPOINT_DIR, "2")
    for item in ("params", "reference"):
        names = {k.split("'")[-2] for k in _stored(step_dir, item)}
        assert names and all(lora.is_adapter(n) for n in names), (item, names)
    opt_leaves = _stored(step_dir, "opt_state")
    arrays = [k for k, x in opt_leaves.items() if len(x.shape) > 0]
    assert arrays and all("_lora_" in k for k in arrays), arrays

    model_config, params = checkpoint.restore_params(workdir)
    assert model_config.lora == LoraConfig(rank=4, alpha=8.0)
    initial = models.init_params(model_config, jax.random.key(config.train.seed))
    for name, x in jax.tree_util.tree_leaves_with_path(lora.base(params)):
        assert x.dtype == jnp.bfloat16, name
    for a, b in zip(jax.tree.leaves(lora.base(params)),
                    jax.tree.leaves(lora.with_base_dtype(lora.base(initial), "bfloat16"))):
        np.testing.assert_array_equal(a, b)  # the base is as loaded: frozen
    assert all(np.any(b) for p, b in jax.tree_util.tree_leaves_with_path(params)
               if p[-1].key.endswith("_lora_b"))

    # Resuming restores the adapters onto the same base and carries on.
    config.train.num_steps = 3
    grpo.train(config, workdir)
    _, resumed = checkpoint.restore_params(workdir, 3)
    for a, b in zip(jax.tree.leaves(lora.base(resumed)), jax.tree.leaves(lora.base(params))):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(config, params, directory) of an adapted tiny Qwen2 (qkv biases, tied embeddings off)
    written as base/, merged/ and adapter/."""
    config, params = adapted("tiny_qwen2")
    directory = tmp_path_factory.mktemp("lora")
    convert.save_pretrained(config.replace(lora=None), lora.base(params), directory / "base")
    convert_lora.save_merged(config, params, directory / "merged")
    convert_lora.save_peft_adapter(config, params, directory / "adapter",
                                   str(directory / "base"))
    return config, params, directory


def test_merged_export_decodes_like_r1jax_in_transformers(exported):
    transformers = pytest.importorskip("transformers")
    from tests.test_sampling_parity import assert_same_completions, transformers_greedy
    config, params, directory = exported
    prompts = [[1, 17, 33, 4], [1] + list(range(40, 70)), [1, 9]]
    model = transformers.AutoModelForCausalLM.from_pretrained(directory / "merged").eval()
    ours = sampling.generate(config, params, prompts, max_new_tokens=24)
    assert_same_completions(ours.tokens, transformers_greedy(model, prompts, 24))


def test_peft_loads_the_adapter_onto_the_base_with_the_same_logits(exported):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    torch = pytest.importorskip("torch")
    config, params, directory = exported
    base = transformers.AutoModelForCausalLM.from_pretrained(directory / "base")
    model = peft.PeftModel.from_pretrained(base, directory / "adapter").eval()
    assert model.peft_config["default"].r == LORA.rank
    with torch.no_grad():
        theirs = model(torch.tensor(np.asarray(TOKENS))).logits.numpy()
    ours = np.asarray(logits(config, params, TOKENS))
    np.testing.assert_allclose(theirs, ours, atol=1e-4)
    # Without the adapter the base differs: the comparison above is not vacuous.
    with torch.no_grad(), model.disable_adapter():
        assert np.abs(model(torch.tensor(np.asarray(TOKENS))).logits.numpy() - ours).max() > 0.1
