"""Jitted sampling: bucketed prefill, a while_loop decode over an explicit KV cache, group sampling.

    out = sample_batch(config, params, prompt_tokens, prompt_lengths, rng, max_new_tokens=256,
                       n=16, temperature=1.0, stop_tokens=(eos,), mesh=mesh, rules=rules)
    completions = generate(config, params, [[1, 2, 3], [4, 5]], max_new_tokens=64,
                           batching="continuous")
    cut = cut_at_stop_strings(out.tokens, out.lengths, tokenizer, ("</answer>",))  # host side
"""
from r1jax.sampling.continuous import sample_continuous
from r1jax.sampling.generate import BATCHING, Completions, generate
from r1jax.sampling.prompts import pad_prompts
from r1jax.sampling.sampler import SampleOutput, sample_batch
from r1jax.sampling.stop_strings import Cut, cut_at_stop_strings
from r1jax.sampling.strategies import Strategy
