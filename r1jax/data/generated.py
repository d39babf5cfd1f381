"""Generated verifiable tasks: train/test splits drawn reproducibly from a seed, no download."""
from collections.abc import Callable

import numpy as np

from r1jax.data import arithmetic, countdown

TASKS: dict[str, Callable[..., dict]] = {
    "arithmetic": arithmetic.make_example,
    "countdown": countdown.make_example,
}
# Train draws that may be rejected (question already in test) before we call the space too small.
_REJECTIONS_PER_EXAMPLE = 100


def generate_splits(task: str, *, num_train: int, num_test: int, seed: int, **knobs) -> dict[str, list[dict]]:
    """Draws the train and test splits of a generated task.

    Each split has its own random stream, numpy's PCG64 seeded with (seed, split number), so a
    split is the same on every machine and does not change when the other split's size does.
    No test question appears in train (train draws that hit one are redrawn), so test accuracy
    is not memorisation; train itself may repeat questions when the space is small.

    Args:
      task: a key of TASKS ("arithmetic", "countdown").
      num_train: examples in "train".
      num_test: examples in "test".
      seed: the seed.
      **knobs: the task's difficulty arguments (see arithmetic.make_example, countdown.make_example).

    Returns:
      {"train": [record, ...], "test": [...]}: records with "id" and the task's fields.
    """
    if task not in TASKS:
        raise ValueError(f"unknown generated task {task!r}; known: {sorted(TASKS)}")
    if num_train < 0 or num_test < 0:
        raise ValueError(f"split sizes must be >= 0, got num_train={num_train}, num_test={num_test}")
    make = TASKS[task]
    test_rng = np.random.default_rng([seed, 1])
    test = [make(test_rng, **knobs) for _ in range(num_test)]
    held_out = {example["question"] for example in test}
    train_rng = np.random.default_rng([seed, 0])
    train = []
    for _ in range(_REJECTIONS_PER_EXAMPLE * max(num_train, 1)):
        if len(train) == num_train:
            break
        example = make(train_rng, **knobs)
        if example["question"] not in held_out:
            train.append(example)
    if len(train) < num_train:
        raise ValueError(f"{task} with {knobs}: the test split covers nearly every question, so "
                         f"{num_train} train examples cannot avoid it; make the task harder or num_test smaller")
    return {split: [{"id": f"{task}-{split}-{i}", **example} for i, example in enumerate(examples)]
            for split, examples in (("train", train), ("test", test))}
