"""DIR/report.md, report.json and the plots: what each stage did to the model.

  report.json   {"stages": [per stage: name, status, seconds, output, stats], "models": [per
                evaluated model: label, stage, metrics]}
  report.md     the stage × metric table, the stages' own figures, and the plots:
  curves.png    reward, held-out accuracy and response length over each RL stage's steps, the
                training loss of the SFT and reward-model stages (one colour per stage, steps
                laid end to end in pipeline order);
  stages.png    one bar group per metric (pass@1, format, language consistency, response
                length, reward-model scores), one bar per evaluated model in pipeline order.
"""
from __future__ import annotations

import json
import math
import os

import matplotlib

matplotlib.use("Agg")  # Files only: no display on a pod host or in CI.
import matplotlib.pyplot as plt  # noqa: E402

METRICS = ("pass@1", "format", "language_consistency", "response_tokens")
# (panel title, metrics.jsonl key, stage kinds it comes from)
CURVES = (("rollout reward", "reward_mean", ("grpo",)),
          ("held-out accuracy", "accuracy", ("grpo",)),
          ("response length (tokens)", "completion_length", ("grpo",)),
          ("training loss", "loss", ("sft", "distill", "reward_model")))


def read_metrics(path: str) -> list[dict]:
    """The rows of a metrics.jsonl ([] when absent)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _format(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def metric_columns(models: list[dict]) -> list[str]:
    """METRICS, then every reward-model score any model has (`rm/<reward>`)."""
    rms = sorted({k for m in models for k in m["metrics"] if k.startswith("rm/")})
    return [*METRICS, *rms]


def models_table(models: list[dict]) -> str:
    """Markdown: one row per evaluated model, one column per metric."""
    columns = metric_columns(models)
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for m in models:
        lines.append(f"| {m['label']} | " + " | ".join(_format(m["metrics"].get(c))
                                                     for c in columns) + " |")
    return "\n".join(lines)


def stages_table(stages: list[dict]) -> str:
    """Markdown: one row per stage: status, minutes, its own figures."""
    lines = ["| stage | status | minutes | figures |", "|---|---|---|---|"]
    for s in stages:
        minutes = "–" if s.get("seconds") is None else f"{s['seconds'] / 60:.1f}"
        figures = ", ".join(f"{k} {_format(v)}" for k, v in s.get("stats", {}).items())
        lines.append(f"| {s['name']} | {s['status']} | {minutes} | {figures or '–'} |")
    return "\n".join(lines)


def plot_curves(stage_metrics: list[tuple[str, str, list[dict]]], path: str) -> None:
    """curves.png from [(stage, kind, metrics rows)]: each stage's steps after the previous
    stage's, its span shaded and named at the top."""
    fig, axes = plt.subplots(len(CURVES), 1, figsize=(11, 2.4 * len(CURVES)), sharex=True)
    colours = plt.get_cmap("tab10")
    offset = 0
    for i, (stage, kind, rows) in enumerate(stage_metrics):
        steps = max((r["step"] for r in rows), default=0)
        if not steps:
            continue
        for ax, (_, key, kinds) in zip(axes, CURVES):
            ax.axvspan(offset, offset + steps, color=colours(i % 10), alpha=0.06, linewidth=0)
            points = [(offset + r["step"], r[key]) for r in rows if key in r and kind in kinds]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", markersize=3, color=colours(i % 10))
        axes[0].annotate(stage, (offset + steps / 2, 1.0), xycoords=("data", "axes fraction"),
                         ha="center", va="bottom", fontsize=7, rotation=30,
                         color=colours(i % 10))
        offset += steps
    for ax, (title, key, _) in zip(axes, CURVES):
        ax.set_title(title, fontsize=10, loc="left", pad=22 if ax is axes[0] else 4)
        if key == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("training step (stages end to end, in pipeline order)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_stages(models: list[dict], path: str) -> None:
    """stages.png: one panel per metric, one bar per evaluated model (its value written on it)."""
    columns = metric_columns(models)
    per_row = 3
    rows = -(-len(columns) // per_row)
    fig, axes = plt.subplots(rows, per_row, figsize=(4.2 * per_row, 3.6 * rows), squeeze=False)
    labels = [m["label"] for m in models]
    colours = [plt.get_cmap("tab10")(i % 10) for i in range(len(models))]
    for ax, column in zip(axes.flat, columns):
        values = [m["metrics"].get(column) for m in models]
        heights = [0.0 if v is None or math.isnan(v) else v for v in values]
        bars = ax.bar(range(len(values)), heights, color=colours)
        ax.bar_label(bars, [_format(v) for v in values], fontsize=7)
        ax.set_xticks(range(len(values)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(column, fontsize=10)
        if column in ("pass@1", "format", "language_consistency"):
            ax.set_ylim(0, 1.1)
        ax.axhline(0, color="0.5", linewidth=0.6)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(workdir: str, stages: list[dict], models: list[dict],
          stage_metrics: list[tuple[str, str, list[dict]]]) -> str:
    """Writes report.json, report.md, curves.png and stages.png in workdir; returns report.md's
    path."""
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump({"stages": stages, "models": models}, f, indent=1)
    if any(rows for _, _, rows in stage_metrics):
        plot_curves(stage_metrics, os.path.join(workdir, "curves.png"))
    if models:
        plot_stages(models, os.path.join(workdir, "stages.png"))
    text = ["# R1 pipeline report", "",
            "## Every model on the same held-out sets", "", models_table(models), "",
            "pass@1: math accuracy over k samples per held-out problem; format: share of "
            "responses in R1's <think>/<answer> form; language_consistency: the chain of "
            "thought's share of words in the question's language; response_tokens: mean length; "
            "rm/<reward>: mean reward-model score (normalised) of one response per held-out "
            "general prompt.", "",
            "## Stages", "", stages_table(stages), "",
            "![curves](curves.png)", "", "![stages](stages.png)", ""]
    path = os.path.join(workdir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(text))
    return path
