"""Distillation losses (issue 22): logit distillation (forward KL to the teacher, full or top-k,
chunked over positions) and on-policy distillation (per-token reverse KL on the student's own
samples, scored by the teacher). Pure functions of logits / hidden states; the loop lives in
train/distill.py."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Real

from r1jax.losses.logprobs import tempered
from r1jax.models.transformer import head_logits


def forward_kl(teacher_logits: Float[Array, "*B V"], student_logits: Float[Array, "*B V"],
               top_k: int = 0, temperature: float = 1.0) -> Float[Array, "*B"]:
    """Per-position KL(p_T || p_S) = Σ_v p_T(v) (log p_T(v) − log p_S(v)).

    top_k > 0 keeps only the teacher's k most likely tokens, with p_T renormalised over them
    (log p_T restricted to the top-k set) and log p_S the full-vocabulary student log-prob, so
    the term is Σ_{v∈topk} p̃_T(v)(log p̃_T(v) − log p_S(v)); with k = V it is the full KL.
    """
    t_logp = jax.nn.log_softmax(tempered(teacher_logits, temperature), axis=-1)
    s_logp = jax.nn.log_softmax(tempered(student_logits, temperature), axis=-1)
    if top_k and top_k < t_logp.shape[-1]:
        t_top, idx = jax.lax.top_k(t_logp, top_k)
        t_logp = t_top - jax.nn.logsumexp(t_top, axis=-1, keepdims=True)
        s_logp = jnp.take_along_axis(s_logp, idx, axis=-1)
    t_logp = jax.lax.stop_gradient(t_logp)
    return (jnp.exp(t_logp) * (t_logp - s_logp)).sum(axis=-1)


def chunked_forward_kl(teacher_hidden: Float[Array, "B T Et"], teacher_head: Float[Array, "Et V"],
                       student_hidden: Float[Array, "B T Es"], student_head: Float[Array, "Es V"],
                       top_k: int = 0, temperature: float = 1.0, chunk: int = 1024
                       ) -> Float[Array, "B T"]:
    """`forward_kl` per position from both models' final hidden states, chunk by chunk.

    As in `logprobs.chunked_logprobs`: only [B, chunk, V] logits of each model exist at a time,
    and the backward pass recomputes them (jax.checkpoint), so [B, T, V] is never held.
    Teacher and student may differ in width (Et, Es) but share the vocabulary V.
    """
    b, t, _ = student_hidden.shape
    chunk = min(chunk, t)
    pad = -t % chunk
    padded = lambda h: jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
    chunks = (t + pad) // chunk
    as_chunks = lambda x: jnp.moveaxis(x.reshape(b, chunks, chunk, *x.shape[2:]), 1, 0)

    @jax.checkpoint
    def one_chunk(args):
        t_hidden, s_hidden = args
        return forward_kl(head_logits(t_hidden, teacher_head), head_logits(s_hidden, student_head),
                          top_k, temperature)

    kl = jax.lax.map(one_chunk, (as_chunks(padded(teacher_hidden)), as_chunks(padded(student_hidden))))
    return jnp.moveaxis(kl, 0, 1).reshape(b, chunks * chunk)[:, :t]


def reverse_kl_loss(student_logprobs: Float[Array, "B T"], teacher_logprobs: Float[Array, "B T"],
                    mask: Real[Array, "B T"]) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """On-policy distillation loss on tokens y_t ~ π_S (Agarwal et al. 2024; Thinking Machines).

    The per-token reverse KL estimate k_t = log π_S(y_t) − log π_T(y_t) is used as a (negative)
    advantage: loss = Σ_t mask_t · sg(k_t) · log π_S(y_t) / Σ_t mask_t, whose gradient is the
    score-function gradient of KL(π_S || π_T) per token. Returns (loss, mean reverse KL).
    """
    mask = mask.astype(jnp.float32)
    k = jax.lax.stop_gradient(student_logprobs - teacher_logprobs)
    denom = jnp.maximum(mask.sum(), 1.0)
    return (mask * k * student_logprobs).sum() / denom, (mask * k).sum() / denom
