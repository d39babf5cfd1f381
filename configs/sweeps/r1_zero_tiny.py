"""Learning rate × KL coefficient on the tiny R1-Zero config: 4 trials of seconds each.

    python -m launch.sweep --config=configs/r1_zero.py:tiny \
        --sweep=configs/sweeps/r1_zero_tiny.py --workdir=/tmp/sweep
"""
from configs.sweeps import grid


def get_sweep(arg: str = "") -> list[dict]:
    del arg
    return grid({"optimizer.learning_rate": [1e-3, 3e-3], "rl.beta": [0.0, 0.04]})
