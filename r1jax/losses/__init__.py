"""Small pure loss functions: GRPO (and its DAPO / Dr. GRPO variants) and SFT."""
from r1jax.losses.grpo import AGGREGATIONS, group_advantages, grpo_loss
from r1jax.losses.logprobs import token_entropy, token_logprobs
from r1jax.losses.sft import sft_loss
