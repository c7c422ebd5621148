"""Several runs per model: the spread over seeds, and comparisons that account for it.

One run per model cannot settle a small gap: at a CPU-clock budget the same config and seed
stop at a different batch when the machine is busier (reports/Beauty-recipe.md), and a
paired t-test over users sees only the test users' noise, not the run's. Runs of one model
that differ only in ``--seed`` (labels ``<model>-<tag>`` and ``<model>-<tag>-seed<k>``) form
a group here, and the table gives per group:

* the mean and sample standard deviation of each test metric over its runs;
* Welch's t-test of the target group's run means against each other group's (the runs are
  the samples: it sees the run-to-run spread, and with 2-3 runs a side it is weak);
* a paired t-test over users of the seed-averaged per-user metric (each user's score
  averaged over the group's runs, then paired across groups: the ensemble of runs).

    python -m recbole_bbqrec.experiments.budget_compare --dataset=Beauty --minutes=20 --seeds=1,2,3
"""

from __future__ import annotations

import re

import numpy as np

from recbole_bbqrec.experiments import tables
from recbole_bbqrec.results import load_per_user

SEED_SUFFIX = re.compile(r"-seed(\d+)$")
METRICS = ("recall@10", "ndcg@10")


def seed_tag(tag: str, seed: int | None) -> str:
    """The run tag of one seed: None (the configured seed) keeps ``tag``, so a one-seed
    comparison is unchanged; another seed gets ``tag-seed<k>``."""
    return tag if seed is None else f"{tag}-seed{seed}"


def group_label(record: dict) -> str:
    return SEED_SUFFIX.sub("", tables.label_of(record))


def group_by_seed(records: list[dict]) -> dict[str, list[dict]]:
    """{group label: its runs}, groups in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(group_label(record), []).append(record)
    return groups


def run_values(runs: list[dict], metric: str) -> np.ndarray:
    return np.asarray([r["test"][metric] for r in runs if (r.get("test") or {}).get(metric)
                       is not None], dtype=np.float64)


def mean_sd(values: np.ndarray) -> str:
    if values.size == 0:
        return "-"
    if values.size == 1:
        return f"{values[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def welch_pvalue(a: np.ndarray, b: np.ndarray) -> float | None:
    """Welch's t-test over run means; None with fewer than two runs a side or no spread."""
    from scipy.stats import ttest_ind

    if a.size < 2 or b.size < 2 or (a.std() == 0 and b.std() == 0):
        return None
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def averaged_per_user(runs: list[dict]) -> dict[str, np.ndarray]:
    """{metric: each user's value averaged over the runs} for the ``METRICS`` every run has
    per-user values of (each run's file read once); a metric is left out when a run lacks
    it or the runs were tested on different users."""
    per_run = []
    for record in runs:
        try:
            per_run.append(load_per_user(record))
        except (OSError, ValueError):
            return {}
    averaged = {}
    for metric in METRICS:
        arrays = [np.asarray(d[metric], dtype=np.float64) for d in per_run if metric in d]
        if arrays and len(arrays) == len(per_run) and all(a.shape == arrays[0].shape
                                                           for a in arrays):
            averaged[metric] = np.mean(arrays, axis=0)
    return averaged


def paired_averaged_pvalue(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """Paired t-test over users of two seed-averaged per-user arrays (None if it cannot run)."""
    from scipy.stats import ttest_rel

    if a is None or b is None or a.shape != b.shape or np.array_equal(a, b):
        return None
    return float(ttest_rel(a, b).pvalue)


def seed_table(records: list[dict], target: str) -> str | None:
    """Markdown over the groups with at least two runs (None when there are none); the
    p-value columns compare group ``target`` (a group label) with each other group."""
    groups = {k: v for k, v in group_by_seed(records).items() if len(v) >= 2}
    if not groups:
        return None
    header = ["runs of", "seeds", *[f"test {tables.metric_name(m)} mean ± sd" for m in METRICS],
              "valid N@10 mean", *[f"p {target} vs row, {tables.metric_name(m)}: over runs / "
                                   f"over users (seed-averaged)" for m in METRICS]]
    averaged = {label: averaged_per_user(runs) for label, runs in groups.items()}
    rows = []
    for label, runs in groups.items():
        seeds = ", ".join(str((r.get("config") or {}).get("seed", "?")) for r in runs)
        valid = np.asarray([r["valid"]["ndcg@10"] for r in runs
                            if (r.get("valid") or {}).get("ndcg@10") is not None])
        p_cells = ["-"] * len(METRICS)
        if label != target and target in groups:
            mine = groups[target]
            p_cells = [" / ".join(tables.fmt_pvalue(p) for p in (
                welch_pvalue(run_values(mine, m), run_values(runs, m)),
                paired_averaged_pvalue(averaged[target].get(m), averaged[label].get(m))))
                for m in METRICS]
        rows.append([label, seeds, *[mean_sd(run_values(runs, m)) for m in METRICS],
                     f"{valid.mean():.4f}" if valid.size else "-", *p_cells])
    return tables.to_markdown(header, rows)
