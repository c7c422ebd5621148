"""Compare the runs on a dataset: ``python -m recbole_bbqrec.experiments.compare results/Beauty``.

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
import os


from recbole_bbqrec.atomic_io import atomic_write_text
from recbole_bbqrec.cli import parse_with_config_keys
from recbole_bbqrec.experiments.tables import (is_ablation, label_of, paper_table, raw_to_csv,
                                               select_runs, table2_markdown, table_rows,
                                               to_csv, to_markdown)
from recbole_bbqrec.results import scan_results


def compare_sets_file() -> str:
    from recbole_bbqrec.config import properties_dir

    return os.path.join(properties_dir(), "compare_sets.yaml")


def load_compare_sets(path: str | None = None) -> dict[str, list[dict]]:
    from recbole_bbqrec.config import load_yaml_section

    path = path or compare_sets_file()
    sets = load_yaml_section(path, "compare_sets", dict, "mapping of set names to lists of "
                             "{model, config_files, config, run_tag} entries")
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
    from recbole_bbqrec.config import value_in_config_files

    tag = entry.get("run_tag") or (entry.get("config") or {}).get("run_tag")
    if not tag:                      # the files' run_tag: the last file that sets it wins
        files = [resolve_config_file(path) for path in entry.get("config_files") or []]
        tag = value_in_config_files([f for f in files if f], "run_tag")
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
    args, extra = parse_with_config_keys(parser, argv)
    if extra and not args.run:
        parser.error(f"unrecognized arguments: {' '.join(extra)} (--key=value config keys are "
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
