"""overlong: DAPO's soft overlong punishment."""
import numpy as np
import pytest

from r1jax import rewards
from r1jax.rewards import length


def test_soft_overlong_penalty():
    fn = rewards.get("overlong", max_completion_len=100, overlong_buffer=20)
    lengths = [10, 80, 90, 100, 101]
    scores = fn([""] * 5, [""] * 5, completion_lengths=lengths)
    assert scores == pytest.approx([0.0, 0.0, -0.5, -1.0, -1.0])


def test_overlong_needs_its_config():
    with pytest.raises(TypeError, match="overlong_buffers"):
        rewards.get("overlong", max_completion_len=100, overlong_buffers=20)
    total, metrics = rewards.combine({"overlong": 1.0}, [""], [""], {"completion_lengths": [5]})
    assert metrics["reward_errors/overlong"] == 1.0  # Unbound L_max: the batch fails, training goes on.
    bad = rewards.get("overlong", max_completion_len=10, overlong_buffer=20)
    assert np.isnan(bad([""], [""], completion_lengths=[5])).all()
