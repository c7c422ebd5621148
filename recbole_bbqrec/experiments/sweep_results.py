"""Sweep outputs of ``tune.py``: one CSV row per Ray trial and the Figure-3 style plot.

Kept apart from the search itself so that ``report.py`` and tests read and plot sweeps without
starting Ray.
"""

from __future__ import annotations

import csv
import math
import os
import re

from recbole_bbqrec.atomic_io import atomic_path
from recbole_bbqrec.experiments.search_space import load_space, parse_number, trial_params

VALID_METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
TARGET_METRIC = "ndcg@10"


def trial_row(result, space) -> dict:
    """One CSV row from a Ray ``Result``: params, best valid metrics, test metrics, status."""
    path = str(result.path if getattr(result, "path", None) else result.log_dir)
    row = {"trial": os.path.basename(path.rstrip("/"))}
    params = trial_params(result.config or {})
    row.update({key: params.get(key) for key in space.keys})
    frame = result.metrics_dataframe
    last = result.metrics or {}
    best = {}
    if frame is not None and TARGET_METRIC in getattr(frame, "columns", []):
        scored = frame.dropna(subset=[TARGET_METRIC])
        if len(scored):
            best = scored.loc[scored[TARGET_METRIC].idxmax()].to_dict()
    for metric in VALID_METRICS:
        row[metric] = _finite(best.get(metric))
    epoch = _finite(best.get("epoch"))
    row["best_epoch"] = int(epoch) if epoch is not None else None
    row["reports"] = int(last.get("training_iteration", 0) or 0)
    for metric in VALID_METRICS:
        row[f"test_{metric}"] = last.get(f"test_{metric}")
    if result.error is not None:
        row["status"] = "ERROR"
    elif last.get("finished"):
        row["status"] = "COMPLETED"
    else:
        row["status"] = "STOPPED"  # ASHA stopped it early (or the search was interrupted)
    row["error"] = _error_line(result.error)
    row["path"] = path
    return row


def _finite(value) -> float | None:
    """A reported number as float; None for missing or NaN (pandas fills gaps with NaN)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _error_line(error) -> str:
    if error is None:
        return ""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    causes = [line for line in lines if re.match(r"^\w*(Error|Exception)\b", line)]
    return (causes[-1] if causes else lines[-1] if lines else type(error).__name__)[:500]


def write_trials_csv(rows: list[dict], keys: list[str], path: str) -> None:
    columns = ["trial", "status", *keys, *VALID_METRICS, "best_epoch", "reports",
               *[f"test_{m}" for m in VALID_METRICS], "error", "path"]
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})


def plot_sweep(rows: list[dict], space, path: str, title: str = "") -> str | None:
    """One panel per searched key: best validation NDCG@10 against its value (paper Fig. 3).

    one_at_a_time spaces plot, per key, only the trials with every other key at its base.
    Returns the PNG path, or None when no trial reported a score.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if isinstance(r.get(TARGET_METRIC), float)]
    if not ok:
        return None
    keys = space.keys
    # one y-scale for all panels: differences between keys are seen at their true size
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False,
                             sharey=True)
    for ax, key in zip(axes[0], keys):
        trials = ok
        if space.one_at_a_time:
            base = {k: s["base"] for k, s in space.params.items()}
            trials = [r for r in ok if all(r.get(k) == base[k] for k in keys if k != key)]
        best: dict = {}
        for r in trials:  # best score per value (joint spaces hold many trials per value)
            best[r[key]] = max(best.get(r[key], -math.inf), r[TARGET_METRIC])
        values = list(best)
        if all(isinstance(v, (int, float)) for v in values):
            values.sort()
        if len(values) <= 12:  # discrete: evenly spaced, as the paper plots 64..512
            ax.plot(range(len(values)), [best[v] for v in values], marker="o")
            ax.set_xticks(range(len(values)), [str(v) for v in values])
        else:
            ax.scatter(values, [best[v] for v in values], s=12)
            if space.is_log(key):
                ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("best valid NDCG@10")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def read_trials_csv(path: str, keys: list[str]) -> list[dict]:
    """Rows of ``write_trials_csv`` back with numbers for the searched keys and metrics
    (empty cells -> None)."""
    numeric = set(keys) | set(VALID_METRICS) | {f"test_{m}" for m in VALID_METRICS}
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (None if v == "" else parse_number(v)) if k in numeric else v
             for k, v in row.items()} for row in rows]


def replot(output_dir: str) -> str | None:
    """Redraw ``sweep.png`` of a finished search from its ``trials.csv`` and ``sweep.json``."""
    import json

    with open(os.path.join(output_dir, "sweep.json"), encoding="utf-8") as f:
        summary = json.load(f)
    space = load_space(summary["space"])
    rows = read_trials_csv(os.path.join(output_dir, "trials.csv"), space.keys)
    return plot_sweep(rows, space, os.path.join(output_dir, "sweep.png"),
                      title=f"{summary['model']} on {summary['dataset']}")


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m recbole_bbqrec.experiments.sweep_results <search output dir> "
                 "(redraws its sweep.png from trials.csv and sweep.json)")
    print(replot(sys.argv[1]))
