"""Measurement holes of the GRPO step (issue: reward integrity): each test fails on the code
before the fix it protects."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import tokenizers
import transformers
from tokenizers import models as bpe_models, pre_tokenizers

from configs import r1_zero
from r1jax.data import packing
from r1jax.losses import grpo as grpo_lib
from r1jax.train import grpo, metrics, run, step
from tests.test_grpo_train import _rollout_batch


def test_the_first_warmup_update_learns():
    opt = ml_collections.ConfigDict(dict(learning_rate=1e-3, warmup_steps=4, decay="constant",
                                         final_fraction=0.0))
    schedule = run.learning_rate_schedule(opt, total_updates=10)
    rates = [float(schedule(k)) for k in range(6)]
    np.testing.assert_allclose(rates, [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3], rtol=1e-6)


def test_ratio_extremes_are_max_and_min_over_micro_batches_not_means():
    """Two micro-batches whose largest ratios are 3 and 1: ratio_max is 3 (was their mean, 2)."""
    def loss_fn(params, mb):
        ratio = mb["ratio"] * jnp.exp(params["w"] - params["w"])
        return ratio.mean(), {"ratio_max": ratio.max(), "ratio_min": ratio.min(),
                              "ratio_mean": ratio.mean()}

    params = {"w": jnp.zeros(())}
    state = run.TrainState(params=params, opt_state=optax.sgd(0.1).init(params), reference=None,
                           updates=jnp.zeros((), jnp.int32))
    batch = {"ratio": jnp.array([3.0, 1.0, 1.0, 0.5])}
    _, m = step.apply_gradients(loss_fn, state, batch, jnp.array([0.5, 0.5]),
                                optimizer=optax.sgd(0.1), num_micro_batches=2, nan_policy="stop")
    assert (float(m["ratio_max"]), float(m["ratio_min"])) == (3.0, 0.5)
    np.testing.assert_allclose(float(m["ratio_mean"]), 1.375)
    across_updates = metrics.reduce_updates([{"ratio_max": 3.0, "ratio_min": 0.9, "loss": 1.0},
                                             {"ratio_max": 1.2, "ratio_min": 0.5, "loss": 3.0}])
    assert across_updates == {"ratio_max": 3.0, "ratio_min": 0.5, "loss": 2.0}


@pytest.mark.parametrize("aggregation", grpo_lib.AGGREGATIONS)
def test_an_inf_at_a_masked_position_does_not_reach_the_loss_or_gradient(aggregation):
    logprobs = jnp.array([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    old = jnp.array([[-1.1, -2.0, -jnp.inf], [-0.4, jnp.inf, -jnp.inf]])
    mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    ref = jnp.array([[-1.0, -2.2, jnp.nan], [-0.5, jnp.nan, 0.0]])

    def loss(lp):
        return grpo_lib.grpo_loss(lp, old, ref, jnp.array([1.0, -1.0]), mask, eps_low=0.2,
                                  eps_high=0.2, beta=0.04, aggregation=aggregation)

    value, metrics_ = loss(logprobs)
    grads = jax.grad(lambda lp: loss(lp)[0])(logprobs)
    assert np.isfinite(float(value)) and np.isfinite(np.asarray(grads)).all()
    assert np.isfinite(float(metrics_["ratio_max"])) and np.isfinite(float(metrics_["kl"]))
    np.testing.assert_array_equal(np.asarray(grads)[mask == 0], 0.0)


def test_failed_rewards_are_left_out_of_the_group_and_the_loss():
    """A verifier timeout on a correct answer (reward 0 as a failure) must not earn a negative
    advantage nor shift its group's mean and std."""
    rewards = jnp.array([1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 1.0, 0.0])
    valid = jnp.array([True, True, True, False, True, True, True, True])
    advantages = grpo_lib.group_advantages(rewards, 4, valid=valid)
    expected_first = grpo_lib.group_advantages(jnp.array([1.0, 0.0, 1.0]), 3)
    np.testing.assert_allclose(advantages[:3], expected_first, rtol=1e-6)
    assert float(advantages[3]) == 0.0
    np.testing.assert_allclose(advantages[4:], grpo_lib.group_advantages(rewards[4:], 4))

    rollouts = _rollout_batch(np.random.default_rng(0), n=8).replace(
        rewards=np.asarray(rewards), reward_failed=~np.asarray(valid))
    rl = ml_collections.ConfigDict(dict(num_generations=4, scale_by_std=True,
                                        mask_truncated=False))
    scored = grpo.with_advantages(rollouts, rl)
    assert scored.mask[3].sum() == 0 and scored.mask[[0, 1, 2]].sum() > 0


def test_mini_batches_mix_groups_instead_of_taking_fillers_last():
    rollouts = _rollout_batch(np.random.default_rng(1), n=16).replace(
        rewards=np.repeat(np.arange(8, dtype=np.float32), 2))
    shuffled = grpo.shuffled_groups(rollouts, 2, np.random.default_rng(0))
    groups = shuffled.rewards.reshape(-1, 2)
    assert (groups[:, 0] == groups[:, 1]).all()  # whole groups move together
    assert sorted(groups[:, 0].tolist()) == list(range(8))
    assert groups[:, 0].tolist() != list(range(8))
    np.testing.assert_array_equal(  # every field follows its row
        shuffled.completions, rollouts.completions[np.repeat(groups[:, 0].astype(int), 2) * 2
                                                   + np.tile([0, 1], 8)])


def test_pi_old_is_recomputed_by_default_when_compute_is_not_float32():
    config = r1_zero.get_config("tiny")
    assert not grpo.recompute_old_logprobs(config)
    config.model.dtype = "bfloat16"
    assert grpo.recompute_old_logprobs(config)
    config.rl.recompute_old_logprobs = False
    assert not grpo.recompute_old_logprobs(config)


def test_llama3_style_chat_turns_end_with_their_end_of_turn_token():
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = tokenizers.Tokenizer(bpe_models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    template = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
                "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                "<|start_header_id|>assistant<|end_header_id|>{% endif %}")
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, chat_template=template, eos_token="<|end_of_text|>",
        additional_special_tokens=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    example = packing.completion_example("2+2?", "4", tokenizer, template="chat")
    assert example.ids[-1] == tokenizer.convert_tokens_to_ids("<|eot_id|>")


def test_rollouts_are_cut_at_the_first_answer_so_an_invented_turn_is_not_trained_on():
    from r1jax import sampling
    from r1jax.train import rollouts
    from tests.test_eval import byte_tokenizer

    tokenizer = byte_tokenizer()
    texts = ["<think>2+3</think><answer>5</answer>\nUser: and 4+5?\nAssistant: <answer>9</answer>",
             "<answer>7"]
    ids = [tokenizer.encode(t) for t in texts]
    width = max(len(i) for i in ids)
    tokens = np.zeros((2, width), np.int32)
    for row, seq in enumerate(ids):
        tokens[row, :len(seq)] = seq
    lengths = np.array([len(i) for i in ids], np.int32)
    mask = np.arange(width)[None] < lengths[:, None]
    out = sampling.SampleOutput(tokens=tokens, logprobs=np.where(mask, -1.0, 0.0),
                                sampled_logprobs=np.where(mask, -0.5, 0.0), mask=mask,
                                lengths=lengths, finished_by_stop=np.array([False, False]))
    config = r1_zero.get_config("tiny")
    config.data.template = "r1_zero"
    cut = rollouts.cut_at_stop_strings(out, tokenizer, rollouts.stop_strings(config))
    kept = tokenizer.decode(cut.tokens[0, :cut.lengths[0]])
    assert kept == "<think>2+3</think><answer>5</answer>"
    assert cut.mask[0].sum() == cut.lengths[0] and (cut.logprobs[0][~cut.mask[0]] == 0).all()
    assert (cut.sampled_logprobs[0][~cut.mask[0]] == 0).all()
    assert cut.finished_by_stop.tolist() == [True, False]
    assert cut.lengths[1] == lengths[1]  # no stop string: unchanged
    config.rl.stop_strings = ()
    assert rollouts.stop_strings(config) == ()


def test_a_config_scoring_countdown_with_math_accuracy_is_refused():
    config = r1_zero.get_config("tiny")
    config.data.kind = "countdown"
    with pytest.raises(ValueError, match="math_accuracy"):
        grpo.validate_config(config, mesh_batch=1)
