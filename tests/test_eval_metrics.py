"""pass@k against brute force over all subsets; cons@k on hand-made vote tables, ties included."""
import itertools
import math
import random

import pytest

from r1jax.eval import metrics


def brute_force_pass_at_k(correct: list[bool], k: int) -> float:
    """Fraction of the k-subsets of the completions that hold at least one correct one."""
    subsets = list(itertools.combinations(correct, k))
    return sum(any(subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_brute_force_over_subsets(n):
    for c in range(n + 1):
        # Where the correct completions sit does not matter; scatter them to be sure.
        positions = set(random.Random(10 * n + c).sample(range(n), c))
        correct = [i in positions for i in range(n)]
        for k in range(1, n + 1):
            assert metrics.pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(correct, k), abs=1e-12)


def test_pass_at_k_special_values():
    assert metrics.pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the fraction correct.
    assert metrics.pass_at_k(10, 0, 5) == 0.0
    assert metrics.pass_at_k(10, 6, 5) == 1.0  # Only 4 wrong: every 5-subset holds a correct one.
    # Large n, where the binomials themselves would overflow a float, stays finite and exact.
    expected = 1 - math.comb(900, 64) / math.comb(1000, 64)
    assert metrics.pass_at_k(1000, 100, 64) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n, c, k", [(0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError, match="pass@k needs"):
        metrics.pass_at_k(n, c, k)


# (answers, correct, winning index, cons@k).
VOTE_TABLES = [
    # Clear majority, correct.
    (["4", "5", "4", "4"], [True, False, True, True], 0, True),
    # Clear majority, wrong, although one completion is correct.
    (["5", "4", "5", None], [False, True, False, False], 0, False),
    # Two-way tie 2:2: the answer seen first wins ("7" at index 0), here wrong.
    (["7", "3", "3", "7"], [False, True, True, False], 0, False),
    # The same tie, other order: "3" first, correct.
    (["3", "7", "7", "3"], [True, False, False, True], 0, True),
    # Three-way tie 1:1:1: first answer wins.
    (["9", "8", "7"], [False, True, True], 0, False),
    # None never votes: one real answer beats three blanks.
    ([None, None, "12", None], [False, False, True, False], 2, True),
    # Tie among answers that first appear after a None: the earlier of the tied answers wins.
    ([None, "b", "a", "a", "b"], [False, True, False, False, True], 1, True),
    # A later answer with more votes beats an earlier one.
    (["1", "2", "2"], [True, False, False], 1, False),
    # No answer at all: no winner, wrong.
    ([None, None], [False, False], None, False),
    # k = 1: cons@1 is the single completion's correctness.
    (["42"], [True], 0, True),
    # Equal values vote together (issue 13: "3" won 2:1:1:1 when each spelling voted alone).
    ([r"\frac{1}{2}", "3", "0.5", "3", "1/2"], [True, False, True, False, True], 0, True),
    (["3", "1/2", "$3", "0.5", r"\dfrac{1}{2}"], [False, True, False, True, True], 1, True),
    # A tie between classes: the class opened first wins, whatever its spellings.
    (["0.5", "3", "3.0", "1/2"], [True, False, False, True], 0, True),
    # A restated question is not its value: "68" 2, "23 + 45" 1.
    (["23 + 45", "68", "68"], [False, True, True], 1, True),
]


@pytest.mark.parametrize("answers, correct, winner, expected", VOTE_TABLES)
def test_cons_at_k_on_vote_tables(answers, correct, winner, expected):
    assert metrics.majority_answer(answers) == winner
    assert metrics.cons_at_k(answers, correct) is expected


def test_cons_at_k_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="one correctness per answer"):
        metrics.cons_at_k(["1", "2"], [True])


def test_aggregate_means_over_problems():
    correct = [[True, False, False, False], [True, True, True, True], [False] * 4]
    summary = metrics.aggregate(correct, pass_ks=(1, 2, 4), consensus=[False, True, False])
    assert summary == pytest.approx({
        "pass@1": (0.25 + 1 + 0) / 3,
        "pass@2": (metrics.pass_at_k(4, 1, 2) + 1 + 0) / 3,
        "pass@4": 2 / 3,
        "cons@4": 1 / 3,
    })
    assert "cons@4" not in metrics.aggregate(correct, pass_ks=(1,))


@pytest.mark.parametrize("correct, pass_ks, match", [
    ([], (1,), "no problems"),
    ([[True], [True, False]], (1,), "same number of completions"),
    ([[True, False]], (3,), "1 <= k' <= k"),
])
def test_aggregate_rejects_bad_input(correct, pass_ks, match):
    with pytest.raises(ValueError, match=match):
        metrics.aggregate(correct, pass_ks)
