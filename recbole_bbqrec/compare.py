"""Compare the runs on a dataset: ``python -m recbole_bbqrec.compare results/Beauty``.

Prints two markdown tables from the results JSON files (see ``results.py``):

1. the paper's Table-2 layout: rows R@5, R@10, N@5, N@10 (test), one column per run label,
   then ``Improv.`` (relative gain of ``--target`` over the best other column, per metric) and
   ``p-value`` (paired t-test over users, target vs that best column, from the per-user
   ``.users.npz`` files); best per row in bold, second best underlined;
2. one row per run (the newest run of each label unless ``--all``): test metrics, the
   validation score that selected the checkpoint, timings and the command behind the row.

``--run SET --dataset D`` first runs a named set of models (``properties/compare_sets.yaml``)
through ``quick_start.run``; any extra ``--key=value`` is passed to every run.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os

import numpy as np
import yaml

from recbole_bbqrec.atomic_io import atomic_write_text
from recbole_bbqrec.results import load_per_user, scan_results

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


def table_rows(records: list[dict], metrics=DEFAULT_METRICS) -> tuple[list[str], list[list[str]]]:
    header = ["model", *[f"test {m}" for m in metrics], "valid ndcg@10", "train_s", "eval_s",
              "epochs", "command"]
    rows = []
    for r in records:
        test, valid = r.get("test", {}), r.get("valid", {})
        rows.append([
            r.get("label", r["model"]),
            *[_fmt(test.get(m)) for m in metrics],
            _fmt(valid.get("ndcg@10")),
            _fmt(r.get("train_s"), 1), _fmt(r.get("eval_s"), 1),
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


def _fmt(value, digits: int = 4) -> str:
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
            text = _fmt(value, digits)
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
                     _fmt_p(pvalue)])
        raw.append([metric_name(metric), *values, improv, pvalue])
    return {"header": header, "rows": rows, "raw": raw, "notes": notes}


def _fmt_p(p: float | None) -> str:
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
def compare_sets_file() -> str:
    from recbole_bbqrec.config import properties_dir

    return os.path.join(properties_dir(), "compare_sets.yaml")


def load_compare_sets(path: str | None = None) -> dict[str, list[dict]]:
    path = path or compare_sets_file()
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    sets = data.get("compare_sets") if isinstance(data, dict) else None
    if not isinstance(sets, dict):
        raise ValueError(f"{path}: expected a top-level `compare_sets:` mapping of set names "
                         f"to lists of {{model, config_files, config, run_tag}} entries")
    for name, entries in sets.items():
        for i, entry in enumerate(entries or []):
            if not isinstance(entry, dict) or "model" not in entry:
                raise ValueError(f"{path}: set {name!r} entry {i} needs a `model`, got {entry!r}")
    return sets


def resolve_config_file(path: str) -> str | None:
    """A set's config file: as given, else under the plugin's properties (installed copy)."""
    from recbole_bbqrec.config import properties_dir

    candidates = [path, os.path.join(os.path.dirname(properties_dir()), path)]
    if path.startswith("properties/"):
        candidates.append(os.path.join(properties_dir(), path[len("properties/"):]))
    return next((os.path.abspath(c) for c in candidates if os.path.isfile(c)), None)


def entry_label(entry: dict) -> str:
    """The run label an entry produces: model, plus the run_tag (entry's or its files')."""
    tag = entry.get("run_tag") or (entry.get("config") or {}).get("run_tag")
    for path in entry.get("config_files") or []:
        resolved = resolve_config_file(path)
        if not tag and resolved:
            with open(resolved, encoding="utf-8") as f:
                tag = (yaml.safe_load(f) or {}).get("run_tag")
    return f"{entry['model']}-{tag}" if tag else entry["model"]


def run_set(name: str, dataset: str, results_dir: str, argv=None, sets_path=None,
            runner=None) -> list[tuple[str, str]]:
    """Run every entry of set ``name``; return ``[(label, 'ok' | why it was skipped)]``."""
    from recbole_bbqrec.utils import get_model

    sets = load_compare_sets(sets_path)
    if name not in sets:
        raise SystemExit(f"No set {name!r} in {sets_path or compare_sets_file()}; "
                         f"sets: {', '.join(sets)}")
    if runner is None:
        from recbole_bbqrec.quick_start import run as runner
    outcome = []
    for entry in sets[name]:
        label = entry_label(entry)
        try:
            get_model(entry["model"])
        except ValueError as err:
            outcome.append((label, f"skipped: {err}"))
            print(f"[compare] skip {label}: model not available ({err})")
            continue
        files = [resolve_config_file(p) for p in entry.get("config_files") or []]
        if None in files:
            missing = [p for p, r in zip(entry["config_files"], files) if r is None]
            outcome.append((label, f"skipped: config file(s) {missing} not found"))
            print(f"[compare] skip {label}: config file(s) {missing} not found")
            continue
        config = {"results_dir": results_dir, **(entry.get("config") or {})}
        if entry.get("run_tag"):
            config["run_tag"] = entry["run_tag"]
        print(f"[compare] run {label} on {dataset}")
        try:
            runner(model=entry["model"], dataset=dataset, config_file_list=files or None,
                   config_dict=config, argv=list(argv or []))
        except Exception as err:  # one broken baseline must not cost the rest of the set
            outcome.append((label, f"failed: {type(err).__name__}: {err}"))
            print(f"[compare] {label} FAILED: {type(err).__name__}: {err}")
            continue
        outcome.append((label, "ok"))
    return outcome


def order_records(records: list[dict], models: list[str] | None = None,
                  preferred: list[str] | None = None) -> list[dict]:
    """``--models`` picks and orders labels; otherwise the table2 set's order, then the rest.

    Several records of one label (``--all``) stay together, oldest first.
    """
    labels = list(dict.fromkeys(label_of(r) for r in records))
    if models:
        missing = [m for m in models if m not in labels]
        if missing:
            print(f"[compare] no results for {missing}; have {sorted(labels)}")
        order = [m for m in models if m in labels]
    else:
        order = [label for label in preferred or [] if label in labels]
        order += [label for label in labels if label not in order]
    index = {label: i for i, label in enumerate(order)}
    return sorted((r for r in records if label_of(r) in index), key=lambda r: index[label_of(r)])


def table2_order() -> list[str]:
    try:
        return [entry_label(e) for e in load_compare_sets().get("table2", [])]
    except (OSError, ValueError):
        return []


def build_tables(records: list[dict], target: str = "BBQRec", models=None,
                 include_ablations: bool = False) -> tuple[dict, tuple[list[str], list[list[str]]]]:
    """The Table-2 layout and the per-run table over the newest run of each label."""
    newest = select_runs(records)
    if not include_ablations:
        newest = [r for r in newest if not is_ablation(r)]
    chosen = order_records(newest, models, table2_order())
    return paper_table(chosen, target=target), table_rows(chosen)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="results folder, e.g. results/Beauty")
    parser.add_argument("--all", action="store_true", help="every run, not the newest per model")
    parser.add_argument("--csv", default=None, help="also write the per-run table as CSV here "
                        "(and the Table-2 layout beside it as <name>-table2.csv)")
    parser.add_argument("--models", default=None,
                        help="comma-separated run labels to show, in this order")
    parser.add_argument("--target", default="BBQRec", help="the label Improv./p-value are for")
    parser.add_argument("--run", default=None, metavar="SET",
                        help="first run the named set of properties/compare_sets.yaml")
    parser.add_argument("--dataset", default=None, help="dataset for --run (default: the "
                        "folder's name)")
    parser.add_argument("--sets", default=None, help="another compare_sets YAML for --run")
    args, extra = parser.parse_known_args(argv)
    bad = [a for a in extra if not (args.run and a.startswith("--") and "=" in a)]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (--key=value config keys are "
                     f"only accepted with --run)")
    if args.run:
        folder = os.path.abspath(args.folder)
        dataset = args.dataset or os.path.basename(folder)
        if dataset != os.path.basename(folder):
            print(f"[compare] note: runs on {dataset} are written to "
                  f"{os.path.join(os.path.dirname(folder), dataset)}, not {folder}")
        run_set(args.run, dataset, os.path.dirname(folder), argv=extra, sets_path=args.sets)
    if not os.path.isdir(args.folder):
        raise FileNotFoundError(f"No results folder {args.folder}: run run_recbole_bbqrec.py "
                                f"first (or add --run table2 --dataset <name>).")
    scan = scan_results(args.folder)
    records = scan.records
    if not records:
        note = "\n" + scan.skipped_note() if scan.skipped else ""
        raise SystemExit(f"No usable result files under {args.folder}: run "
                         f"run_recbole_bbqrec.py first (or add --run table2 --dataset "
                         f"<name>).{note}")
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    if models and args.target not in models and any(label_of(r) == args.target for r in records):
        models.append(args.target)  # Table 2 is about the target
    table, _ = build_tables(records, target=args.target, models=models)
    runs = order_records(select_runs(records, keep_all=args.all), models, table2_order())
    header, rows = table_rows(runs)
    text = table2_markdown(table) + "\n\n" + to_markdown(header, rows)
    if scan.skipped:  # never dropped silently
        text += "\n\n" + scan.skipped_note()
    print(text)
    if args.csv:
        stem, ext = os.path.splitext(args.csv)
        atomic_write_text(args.csv, to_csv(header, rows))
        atomic_write_text(f"{stem}-table2{ext or '.csv'}", raw_to_csv(table["header"], table["raw"]))
    return text


if __name__ == "__main__":
    from recbole_bbqrec.cli import run_cli

    run_cli(main)  # expected errors: one line on stderr, exit 2
