"""Evaluation metrics over k sampled completions per problem: pass@1, unbiased pass@k, cons@k.

Every function is pure Python over booleans and strings, so the same numbers come out of the
trainers' periodic evaluation, `launch/evaluate.py`, and a notebook.

- pass@1 (R1 paper): the fraction of a problem's k completions that are correct, averaged over
  problems. It equals pass_at_k(n, c, 1) = c / n.
- pass@k (HumanEval paper, Chen et al. 2021): the probability that at least one of k completions
  drawn without replacement from the n sampled ones is correct, 1 - C(n-c, k) / C(n, k).
- cons@k (R1 paper's cons@64): the problem counts as solved when the majority answer among its k
  completions is correct.
"""
from collections.abc import Sequence


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


def majority_answer(answers: Sequence[str | None]) -> int | None:
    """Index of the completion whose answer wins the majority vote, or None when none answered.

    Votes are counted per distinct answer string (callers pass extracted, normalised answers); a
    None answer (nothing extractable) casts no vote. Ties between the most-voted answers go to the
    one that appeared first in `answers`, so the vote is deterministic and does not depend on
    dict or hash order.

    Args:
      answers: list[str | None], one normalised answer per completion.

    Returns:
      int, the index of the first completion giving the winning answer; None if every answer is None.
    """
    votes: dict[str, int] = {}
    first_index: dict[str, int] = {}
    for i, answer in enumerate(answers):
        if answer is not None:
            votes[answer] = votes.get(answer, 0) + 1
            first_index.setdefault(answer, i)
    if not votes:
        return None
    winner = max(votes, key=lambda answer: (votes[answer], -first_index[answer]))
    return first_index[winner]


def cons_at_k(answers: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """Whether the majority-vote answer of one problem's completions is correct.

    The winning answer is judged by the correctness of the first completion that gave it (see
    `majority_answer` for the vote and its tie-break). No answer at all counts as wrong.

    Args:
      answers: list[str | None], normalised answer per completion.
      correct: list[bool], whether each completion was verified correct; same length.

    Returns:
      bool.
    """
    if len(answers) != len(correct):
        raise ValueError(f"cons@k needs one correctness per answer; got {len(answers)} answers "
                         f"and {len(correct)} correctness values")
    winner = majority_answer(answers)
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
