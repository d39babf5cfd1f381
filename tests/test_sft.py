"""SFT: packing is exact, prompts are never trained on, the loss masks what it should."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import models
from r1jax.data import packing
from r1jax.losses.sft import sft_loss
from r1jax.train import sft

CONFIG = models.preset("tiny_qwen3")


def _examples(rng, lengths):
    out = []
    for n in lengths:
        ids = rng.integers(1, CONFIG.vocab_size, n).tolist()
        prompt = int(rng.integers(1, n - 1))
        out.append(packing.Example(ids, [False] * prompt + [True] * (n - prompt)))
    return out


def _loss_sum_and_grads(params, arrays):
    def total(p):
        loss, metrics = sft_loss(sft.sft_logits(CONFIG, p, arrays), arrays.targets,
                                 arrays.weights)
        return loss * metrics["tokens"]
    return jax.value_and_grad(total)(params)


def test_packed_batch_equals_examples_one_by_one():
    rng = np.random.default_rng(0)
    examples = _examples(rng, [9, 14, 6, 20, 5])
    params = models.init_params(CONFIG, jax.random.key(0))
    packed, stats = packing.pack(examples, 32)
    assert stats["rows"] < len(examples)  # really packed several per row
    assert packed.segment_ids.max() >= 2
    packed = jax.tree.map(jnp.asarray, packed)
    loss, grads = _loss_sum_and_grads(params, packed)

    ref_loss, ref_grads = 0.0, jax.tree.map(jnp.zeros_like, params)
    for ex in examples:
        alone, _ = packing.pack([ex], len(ex.ids) - 1, packing=False)
        l, g = _loss_sum_and_grads(params, jax.tree.map(jnp.asarray, alone))
        ref_loss += l
        ref_grads = jax.tree.map(jnp.add, ref_grads, g)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_prompt_targets_never_contribute():
    rng = np.random.default_rng(1)
    arrays, _ = packing.pack(_examples(rng, [12, 10, 7]), 32)
    params = models.init_params(CONFIG, jax.random.key(1))
    untrained = arrays.weights == 0
    changed = arrays.replace(targets=np.where(
        untrained, rng.integers(1, CONFIG.vocab_size, untrained.shape), arrays.targets
    ).astype(np.int32))
    assert (changed.targets != arrays.targets).any()
    l1, g1 = _loss_sum_and_grads(params, jax.tree.map(jnp.asarray, arrays))
    l2, g2 = _loss_sum_and_grads(params, jax.tree.map(jnp.asarray, changed))
    assert float(l1) == float(l2)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_array_equal(a, b)


def test_pack_counts_truncated_and_dropped():
    # Short prompts (2 tokens), so the truncated examples keep trained tokens.
    examples = [packing.Example(list(range(1, n + 1)), [False] * 2 + [True] * (n - 2))
                for n in (40, 8, 50)]
    _, stats = packing.pack(examples, 16, overlong="drop")
    assert stats["dropped"] == 2 and stats["rows"] == 1
    arrays, stats = packing.pack(examples, 16, overlong="truncate")
    assert stats["truncated"] == 2 and stats["rows"] == 3
    # Targets are the next tokens of the same example: shift is done before packing.
    np.testing.assert_array_equal(arrays.targets[1, :7], examples[1].ids[1:8])
    with pytest.raises(ValueError, match="overlong"):
        packing.pack(examples, 16, overlong="cut")


def test_padding_mode_puts_one_example_per_row():
    rng = np.random.default_rng(3)
    arrays, stats = packing.pack(_examples(rng, [5, 6, 7]), 16, packing=False)
    assert stats["rows"] == 3
    assert arrays.segment_ids.max() == 1
    np.testing.assert_array_equal(arrays.positions[2, :6], np.arange(6))
