"""The policy rejection sampling draws from: prompts rendered and tokenised as the trainers do,
n samples per prompt through r1jax.sampling.generate (one prefill per group of n).

The engine needs only `render`, `sample` and `num_tokens` (plus `name` and `step` for the
provenance), so tests can stand in a scripted policy for the model.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from r1jax import models, sampling
from r1jax.data import pipeline
from r1jax.sampling import strategies


@dataclasses.dataclass(frozen=True)
class Sample:
    """One response: its text (special tokens dropped), token count (stop token included) and
    finish reason ("stop" | "length")."""

    text: str
    num_tokens: int
    finish_reason: str


@dataclasses.dataclass
class ModelPolicy:
    """A model on this process's mesh.

    Attributes:
      model_config, params, tokenizer: the model.
      sampling: config.sampling (temperature, top_k, top_p: None is off; batch_size, batching).
      mesh, rules: this process's mesh (its own devices: processes never wait for each other).
      name, step: what the provenance calls the model, and its checkpoint step (None: none).
    """

    model_config: Any
    params: Any
    tokenizer: Any
    sampling: Any
    mesh: Any = None
    rules: Any = None
    name: str = ""
    step: int | None = None

    def render(self, template: str, system: str | None, question: str) -> tuple[str, list[int]]:
        """(prompt text, token ids), exactly as evaluation and training render them."""
        return pipeline.encode_prompt(self.tokenizer, template, question, system)

    def num_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def sample(self, prompts: list[list[int]], *, n: int, max_new_tokens: int,
               seed: int) -> list[list[Sample]]:
        """n samples for each prompt (token-id lists), prompt-major; `seed` fixes them."""
        strategy = strategies.from_config(self.sampling)
        out = sampling.generate(
            self.model_config, self.params, prompts, max_new_tokens=max_new_tokens,
            temperature=strategy.temperature, top_k=strategy.top_k, top_p=strategy.top_p, n=n,
            stop_tokens=models.stop_tokens(self.tokenizer), seed=seed,
            batch_size=self.sampling.batch_size, batching=self.sampling.batching, mesh=self.mesh,
            rules=self.rules)
        flat = [Sample(self.tokenizer.decode(t, skip_special_tokens=True), len(t), reason)
                for t, reason in zip(out.tokens, out.finish_reasons)]
        return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]
