"""How well rewards order preference pairs, beside what length alone would get.

A reward model can win pairs by preferring the longer response (AlpacaEval's chosen answers are
mostly GPT-4-Turbo's, and long), so its pair accuracy is reported with the longer-wins
baseline's and with its accuracy on pairs of similar length, where length cannot decide.
"""
from __future__ import annotations

import numpy as np

SIMILAR_LENGTH = 0.2  # pairs whose lengths differ by under 20% of the longer one


def pair_metrics(rewards: np.ndarray, lengths: np.ndarray) -> dict:
    """Metrics of N pairs.

    Args:
      rewards: float[N, 2], the chosen ([:, 0]) and rejected ([:, 1]) responses' rewards.
      lengths: int[N, 2], the two responses' lengths (characters or tokens).
    Returns:
      pair_accuracy (share with r_c > r_r), margin (mean r_c − r_r), reward_mean, reward_std
      (over both sides), longer_wins_accuracy (share whose chosen response is strictly longer),
      similar_length_pairs and similar_length_pair_accuracy (left out when there are none).
    """
    rewards, lengths = np.asarray(rewards, np.float64), np.asarray(lengths, np.float64)
    diff = rewards[:, 0] - rewards[:, 1]
    similar = (np.abs(lengths[:, 0] - lengths[:, 1])
               < SIMILAR_LENGTH * np.maximum(lengths.max(axis=1), 1.0))
    metrics = {"pair_accuracy": float((diff > 0).mean()), "margin": float(diff.mean()),
               "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
               "longer_wins_accuracy": float((lengths[:, 0] > lengths[:, 1]).mean()),
               "similar_length_pairs": int(similar.sum())}
    if similar.any():
        metrics["similar_length_pair_accuracy"] = float((diff[similar] > 0).mean())
    return metrics
