"""Grid over learning rate × KL coefficient β × group size G for R1-Zero (3 × 2 × 2 = 12 trials).

    python -m launch.sweep --config=configs/r1_zero.py --sweep=configs/sweeps/r1_zero_grid.py \
        --workdir=workdirs/r1_zero_grid

Learning rates around the CPU default's, β = 0 (no reference model, as DAPO) against the paper's
0.001, and G = 8 against the paper's 16. prompts_per_step stays, so G = 16 samples twice as many
completions per step.
"""
from configs.sweeps import grid


def get_sweep(arg: str = "") -> list[dict]:
    del arg
    return grid({
        "optimizer.learning_rate": [1e-5, 2e-5, 4e-5],
        "rl.beta": [0.0, 0.001],
        "rl.num_generations": [8, 16],
    })
