"""Result tables: the paper's Table-2 layout, the per-run table, markdown and CSV.

Pure functions over result records (``results.py``); ``compare.py``, ``report.py``,
``ablation.py`` and ``budget_compare.py`` print them, and ``recommend.py`` formats its rows
with ``to_markdown``.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from recbole_bbqrec.results import load_per_user

DEFAULT_METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
SHORT_NAMES = {"recall": "R", "ndcg": "N", "hit": "H", "mrr": "MRR", "precision": "P"}
ABLATION_PREFIX = "ablation-"


def select_runs(records: list[dict], keep_all: bool = False) -> list[dict]:
    """The newest record of each label (records come oldest first), or all of them."""
    if keep_all:
        return list(records)
    newest: dict[str, dict] = {}
    for record in records:
        newest[record.get("label", record["model"])] = record
    return list(newest.values())


def cited_runs(records: list[dict], metric: str = "ndcg@10") -> list[dict]:
    """One run per model, the one a user would cite: the best validation ``metric`` among the
    model's newest-per-label non-ablation runs (ties: the newer). Returned as copies labelled
    by the model name, with the chosen run's own label kept under ``cited_label``."""
    best: dict[str, dict] = {}
    for record in select_runs(records):
        if is_ablation(record):
            continue
        score = (record.get("valid") or {}).get(metric)
        if score is None:
            continue
        model = record["model"]
        held = best.get(model)
        if held is None or score >= (held.get("valid") or {}).get(metric, float("-inf")):
            best[model] = record
    return [{**r, "label": r["model"], "cited_label": label_of(r)} for r in best.values()]


def table_rows(records: list[dict], metrics=DEFAULT_METRICS) -> tuple[list[str], list[list[str]]]:
    header = ["model", *[f"test {m}" for m in metrics], "valid ndcg@10", "train_s", "eval_s",
              "epochs", "command"]
    rows = []
    for r in records:
        test, valid = r.get("test", {}), r.get("valid", {})
        rows.append([
            r.get("label", r["model"]),
            *[fmt_value(test.get(m)) for m in metrics],
            fmt_value(valid.get("ndcg@10")),
            fmt_value(r.get("train_s"), 1), fmt_value(r.get("eval_s"), 1),
            str(r.get("epochs_trained", "")),
            f"`{r.get('command', '')}`",
        ])
    return header, rows


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def to_csv(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([[cell.strip("`") for cell in row] for row in rows])
    return buffer.getvalue()


def fmt_value(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


# --- the paper's Table-2 layout ---------------------------------------------------------------
def label_of(record: dict) -> str:
    return record.get("label", record["model"])


def is_ablation(record: dict) -> bool:
    tag = (record.get("config") or {}).get("run_tag") or ""
    return str(tag).startswith(ABLATION_PREFIX)


def metric_name(metric: str) -> str:
    """``recall@10`` -> ``R@10`` as in the paper."""
    name, _, k = metric.partition("@")
    return f"{SHORT_NAMES.get(name.lower(), name)}@{k}" if k else metric


def paired_pvalue(target: dict, baseline: dict, metric: str) -> tuple[float | None, str]:
    """Paired t-test over users (scipy ``ttest_rel``); ``(None, why)`` when it cannot run."""
    from scipy.stats import ttest_rel

    arrays = []
    for record in (target, baseline):
        try:
            per_user = load_per_user(record)
        except (OSError, ValueError) as err:
            return None, f"cannot read the per-user file of {label_of(record)}: {err}"
        if metric not in per_user:
            where = record.get("_path", "its result file")
            return None, (f"no per-user {metric} for {label_of(record)} ({where}); runs made "
                          f"before per-user files existed need a re-run")
        arrays.append(np.asarray(per_user[metric], dtype=np.float64))
    if arrays[0].shape != arrays[1].shape:
        return None, (f"{label_of(target)} and {label_of(baseline)} were tested on different "
                      f"users ({arrays[0].size} vs {arrays[1].size}); not paired")
    if np.array_equal(arrays[0], arrays[1]):
        return None, f"{label_of(target)} and {label_of(baseline)} have identical per-user {metric}"
    return float(ttest_rel(arrays[0], arrays[1]).pvalue), ""


def _ranks(values: list[float | None], digits: int) -> list[int]:
    """0 = best, 1 = second best, 2 = other, by the values as displayed (ties share a rank)."""
    usable = [v if _finite(v) else None for v in values]
    shown = sorted({round(v, digits) for v in usable if v is not None}, reverse=True)
    rank = {v: i for i, v in enumerate(shown[:2])}
    return [rank.get(round(v, digits), 2) if v is not None else 2 for v in usable]


def _finite(value) -> bool:
    """A number a table may rank (NaN, Infinity, strings and None never win)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def paper_table(records: list[dict], target: str = "BBQRec", metrics=DEFAULT_METRICS,
                digits: int = 4) -> dict:
    """Rows = metrics, columns = run labels (in ``records`` order, target last), then
    Improv. and p-value of the target against the best other column of each row.

    Returns ``{"header", "rows" (markdown cells), "raw" (numbers, for CSV), "notes"}``.
    """
    by_label = {label_of(r): r for r in records}
    labels = [label for label in by_label if label != target]
    has_target = target in by_label
    if has_target:
        labels.append(target)
    header = ["Metric", *labels, "Improv.", "p-value"]
    rows, raw, notes = [], [], []
    if not has_target:
        notes.append(f"Improv. and p-value are n/a: no run labelled {target!r} "
                     f"(pick another with --target).")
    elif len(labels) < 2:
        notes.append(f"Improv. and p-value are n/a: {target} has no baseline to compare with.")
    for metric in metrics:
        values = [by_label[label].get("test", {}).get(metric) for label in labels]
        ranks = _ranks(values, digits)
        cells = []
        for value, rank in zip(values, ranks):
            text = fmt_value(value, digits)
            cells.append(f"**{text}**" if rank == 0 and value is not None else
                         f"<u>{text}</u>" if rank == 1 and value is not None else text)
        improv, pvalue = None, None
        base_scores = [(v, label) for v, label in zip(values[:-1], labels[:-1]) if _finite(v)]
        target_value = values[-1] if has_target and _finite(values[-1]) else None
        if has_target and base_scores and target_value is not None:
            best_value, best_label = max(base_scores)
            improv = (target_value - best_value) / best_value if best_value else None
            pvalue, why = paired_pvalue(by_label[target], by_label[best_label], metric)
            if why and why not in notes:
                notes.append(f"p-value n/a for {metric_name(metric)}: {why}.")
        rows.append([metric_name(metric), *cells,
                     f"{improv * 100:+.2f}%" if improv is not None else "n/a",
                     fmt_pvalue(pvalue)])
        raw.append([metric_name(metric), *values, improv, pvalue])
    return {"header": header, "rows": rows, "raw": raw, "notes": notes}


def fmt_pvalue(p: float | None) -> str:
    if p is None or p != p:
        return "n/a"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


def raw_to_csv(header: list[str], raw: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in raw])
    return buffer.getvalue()


def table2_markdown(table: dict) -> str:
    text = to_markdown(table["header"], table["rows"])
    if table["notes"]:
        text += "\n\n" + "\n".join(f"- Note: {note}" for note in table["notes"])
    return text


# --- named sets of runs -------------------------------------------------------------------------
