"""Evaluation metrics over k sampled completions per problem: pass@1, unbiased pass@k, cons@k.

Every function is pure Python over booleans and strings, so the same numbers come out of the
trainers' periodic evaluation, `launch/evaluate.py`, and a notebook.

- pass@1 (R1 paper): the fraction of a problem's k completions that are correct, averaged over
  problems. It equals pass_at_k(n, c, 1) = c / n.
- pass@k (HumanEval paper, Chen et al. 2021): the probability that at least one of k completions
  drawn without replacement from the n sampled ones is correct, 1 - C(n-c, k) / C(n, k).
- cons@k (R1 paper's cons@64): the problem counts as solved when the majority answer among its k
  completions is correct. Answers vote together when they are mathematically the same
  (r1jax.rewards.math.same_answer, the math reward's own equality: "\\frac{1}{2}", "0.5" and "1/2"
  are one answer), not when their strings match.
"""
from collections.abc import Callable, Sequence

from r1jax.rewards import math as math_reward


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from n samples of which c are correct.

    Computes 1 - C(n-c, k) / C(n, k) as 1 - prod_{i=n-c+1}^{n} (1 - k / i), the product form of
    the HumanEval paper, which never forms the binomials (they overflow floats for n in the
    hundreds).

    Args:
      n: int, completions sampled for the problem (n >= 1).
      c: int, how many of them are correct (0 <= c <= n).
      k: int, the k of pass@k (1 <= k <= n).

    Returns:
      float in [0, 1].

    Raises:
      ValueError: arguments outside those ranges.
    """
    if not (n >= 1 and 0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs n >= 1, 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:  # Every k-subset holds a correct completion.
        return 1.0
    failure = 1.0
    for i in range(n - c + 1, n + 1):
        failure *= 1.0 - k / i
    return 1.0 - failure


def majority_answer(answers: Sequence[str | None],
                    same: Callable[[str, str], bool] = math_reward.same_answer) -> int | None:
    """Index of the completion whose answer wins the majority vote, or None when none answered.

    Answers are grouped into classes of equal answers: each answer joins the class of the first
    earlier answer it is `same` as (default: the math reward's equality), else opens a class. A
    None answer (nothing extractable) casts no vote. The class with the most votes wins; a tie goes
    to the class opened first (whose first answer appears earliest in `answers`), so the vote is
    deterministic and does not depend on dict, hash or thread order.

    Args:
      answers: list[str | None], one extracted answer per completion.
      same: (a, b) -> bool, answer equality.

    Returns:
      int, the index of the first completion of the winning class; None if every answer is None.
    """
    openers: list[int] = []  # Index of each class's first answer, in order of appearance.
    votes: list[int] = []
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        for c, first in enumerate(openers):
            if same(answers[first], answer):
                votes[c] += 1
                break
        else:
            openers.append(i)
            votes.append(1)
    if not openers:
        return None
    return openers[max(range(len(openers)), key=lambda c: (votes[c], -c))]


def cons_at_k(answers: Sequence[str | None], correct: Sequence[bool],
              same: Callable[[str, str], bool] = math_reward.same_answer) -> bool:
    """Whether the majority-vote answer of one problem's completions is correct.

    The winning class is judged by the correctness of its first completion (see
    `majority_answer` for the vote and its tie-break). No answer at all counts as wrong.

    Args:
      answers: list[str | None], extracted answer per completion.
      correct: list[bool], whether each completion was verified correct; same length.
      same: answer equality (see `majority_answer`).

    Returns:
      bool.
    """
    if len(answers) != len(correct):
        raise ValueError(f"cons@k needs one correctness per answer; got {len(answers)} answers "
                         f"and {len(correct)} correctness values")
    winner = majority_answer(answers, same)
    return winner is not None and bool(correct[winner])


def aggregate(correct: Sequence[Sequence[bool]], pass_ks: Sequence[int],
              consensus: Sequence[bool] | None = None) -> dict[str, float]:
    """Dataset-level metrics from per-problem results.

    Args:
      correct: list over problems of list[bool], each problem's completions (all problems have
        the same number k of completions).
      pass_ks: the k values of pass@k to report (each 1 <= k' <= k); pass@1 is always reported.
      consensus: list[bool] per problem from `cons_at_k`, or None to leave cons@k out (tasks
        without a comparable final answer, such as code).

    Returns:
      {"pass@1": ..., "pass@K'": ... for K' in pass_ks, "cons@k": ... (if consensus given)},
      each the mean over problems.

    Raises:
      ValueError: no problems, problems with different numbers of completions, or a k' > k.
    """
    if not correct:
        raise ValueError("no problems to aggregate")
    k = len(correct[0])
    if any(len(c) != k for c in correct):
        counts = sorted({len(c) for c in correct})
        raise ValueError(f"every problem needs the same number of completions; got {counts}")
    bad = [k_ for k_ in pass_ks if not 1 <= k_ <= k]
    if bad:
        raise ValueError(f"pass@k values {bad} need 1 <= k' <= k = {k} completions per problem")
    metrics = {}
    for k_ in sorted({1, *pass_ks}):
        metrics[f"pass@{k_}"] = sum(pass_at_k(k, sum(c), k_) for c in correct) / len(correct)
    if consensus is not None:
        metrics[f"cons@{k}"] = sum(map(bool, consensus)) / len(consensus)
    return metrics
