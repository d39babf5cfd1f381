"""Seeded random search over learning rate, KL coefficient β and group size G for R1-Zero.

    python -m launch.sweep --config=configs/r1_zero.py \
        --sweep=configs/sweeps/r1_zero_random.py:8 --workdir=workdirs/r1_zero_random

The argument after ':' is the number of trials (default 8). Learning rate and β are drawn on a
log scale (their effect is multiplicative); G from the sizes R1 and its follow-ups use.
"""
from configs.sweeps import log_uniform, random_search


def get_sweep(arg: str = "") -> list[dict]:
    num_trials = int(arg) if arg else 8
    return random_search({
        "optimizer.learning_rate": log_uniform(1e-6, 1e-4),
        "rl.beta": log_uniform(1e-4, 1e-1),
        "rl.num_generations": [4, 8, 16],
    }, num_trials=num_trials, seed=0)
