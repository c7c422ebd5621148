"""One markdown report per dataset from everything run so far:
``python -m recbole_bbqrec.experiments.report --dataset=Beauty`` -> ``reports/Beauty.md``.

Sections (each table or figure is followed by the files and commands that produced it; a
missing piece becomes a line naming the command that produces it):

- overall comparison in the paper's Table-2 layout, plus the per-run table (``compare.py``);
- equal-budget comparisons (``budget_compare.py``): table, learning curves, learned SimEmb;
- ablations: runs whose ``run_tag`` starts with ``ablation-``, against the full target model;
- stage-1 codebook statistics (``results/<dataset>/stage1-*.json``) and speed measurements
  (``results/<dataset>/bench-*.json``): any JSON list of dicts (or one dict) becomes a table;
- hyper-parameter sweeps: ``sweep.json`` + ``sweep.png`` written by ``run_hyper.py`` under
  ``ray_results/`` or ``results/<dataset>/sweeps/``; figures are copied next to the report.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import time

from recbole_bbqrec.experiments import compare, tables
from recbole_bbqrec.atomic_io import atomic_write_text
from recbole_bbqrec.config_checks import check_path_name
from recbole_bbqrec.results import SWEEPS_DIR, ResultScan, scan_results

# Config keys that define what a test number means; a report lists each distinct setting.
PROTOCOL_KEYS = ("eval_args", "MAX_ITEM_LIST_LENGTH", "topk", "valid_metric")
# Config keys that set how long and how large a run trained (the ablation studies' grouping).
BUDGET_KEYS = ("epochs", "tokenizer_epochs", "tokenizer_steps_per_epoch", "tokenizer_batch_size",
               "train_batch_size", "d_model", "n_heads", "d_ff", "n_encoder_layers",
               "n_decoder_layers", "n_levels", "codebook_size", "code_dim", "n_buckets")


def _rel(path: str, start: str) -> str:
    try:
        return os.path.relpath(path, start)
    except ValueError:  # another drive
        return path


def _sources(records: list[dict], out_dir: str) -> str:
    lines = ["Produced by:"]
    for r in records:
        lines.append(f"- `{_rel(r['_path'], out_dir)}`: `{r.get('command') or '(no command recorded)'}`")
    return "\n".join(lines)


def protocol_section(records: list[dict]) -> str:
    """The evaluation protocol, read from the runs' own recorded configs (not assumed)."""
    head = "## Protocol\n\n"
    settings = {}
    for r in records:
        config = r.get("config") or {}
        key = json.dumps({k: config.get(k) for k in PROTOCOL_KEYS}, sort_keys=True)
        settings.setdefault(key, []).append(tables.label_of(r))
    if not settings:
        return head + "No runs yet.\n"
    lines = []
    for key, labels in settings.items():
        values = json.loads(key)
        lines.append("- " + ", ".join(f"`{k}`={json.dumps(values[k])}" for k in PROTOCOL_KEYS)
                     + f": {', '.join(sorted(set(labels)))}")
    note = ("Every run is scored by RecBole's evaluator on the test split after early stopping "
            "on the validation split; `split` LS = leave-one-out (last item test, second-last "
            "validation), `mode` full = ranked against every item of the catalogue.")
    if len(settings) > 1:
        note += " **The runs differ in protocol**: compare only runs of the same line."
    return head + note + "\n\n" + "\n".join(lines) + "\n"


def overall_section(records: list[dict], dataset: str, target: str, out_dir: str) -> str:
    head = "## Overall performance (paper Table 2)\n\n"
    runs = [r for r in tables.select_runs(records) if not tables.is_ablation(r)]
    if not runs:
        return head + (f"No results for {dataset} yet. Produce them with "
                       f"`python -m recbole_bbqrec.experiments.compare results/{dataset} "
                       f"--run table2 --dataset={dataset}` (or `python run_recbole_bbqrec.py --model=<Model> "
                       f"--dataset={dataset}` per model).\n")
    chosen = compare.order_records(runs, preferred=compare.table2_order())
    header, rows = tables.table_rows(chosen)
    # one column per model: the run a user would cite, chosen by validation (budget variants
    # and ablations keep their own tables below and in the equal-budget section)
    cited = compare.order_records(tables.cited_runs(records), preferred=compare.table2_order())
    text = head + "One column per model: its run with the best validation NDCG@10 (runs "
    text += "of different budgets: see each run's epochs below and the equal-budget section "
    text += "for the like-for-like comparison). Test split, leave-one-out, full ranking; best "
    text += "per row in bold, second underlined; Improv. and the paired t-test are target vs "
    text += "the best other column.\n\n"
    text += tables.table2_markdown(tables.paper_table(cited, target=target)) + "\n\n"
    text += "Columns: " + "; ".join(
        f"{r['label']} = `{r['cited_label']}` (valid N@10 {tables.fmt_value((r.get('valid') or {}).get('ndcg@10'))}, "
        f"{r.get('epochs_trained', '?')} epochs)" for r in cited) + ".\n\n"
    text += "### Every run (newest per label)\n\n" + tables.to_markdown(header, rows) + "\n\n"
    return text + _sources(chosen, out_dir) + "\n"


def equal_budget_section(records: list[dict], dataset: str, results_dir: str,
                         out_dir: str) -> str:
    """The equal-budget comparisons (``budget_compare``): their tables, curves and what the
    similarity tables of the target learned there."""
    head = "## Equal budget (same minutes per model, stage 1 included)\n\n"
    budget_tables = sorted(glob.glob(os.path.join(results_dir, dataset, "budget*m.md")))
    if not budget_tables:
        return head + (f"None yet: `python -m recbole_bbqrec.experiments.budget_compare "
                       f"--dataset={dataset} --minutes=20` trains SASRec, TIGER and BBQRec for 20 minutes each.\n")
    parts = [head]
    for path in budget_tables:
        tag = os.path.basename(path)[:-3]
        with open(path, encoding="utf-8") as f:
            body = f.read().split("\n", 1)[1].strip()  # its own title becomes ours
        parts.append(f"### {tag}\n\n{body}\n")
        png = os.path.join(out_dir, f"{dataset}-{tag}.png")
        if os.path.isfile(png):
            parts.append(f"![validation NDCG@10 against charged minutes]({_rel(png, out_dir)})\n")
        for r in records:
            scales = (r.get("model_diagnostics") or {}).get("similarity_scale_by_bucket_decile")
            if scales and str((r.get("config") or {}).get("run_tag", "")).startswith(tag):
                rows = [[f"layer {i}", *[f"{v:.3f}" for v in layer]] for i, layer in enumerate(scales)]
                header = ["SimEmb mean", *[f"sim decile {d}" for d in range(1, len(scales[0]) + 1)]]
                parts.append(f"Learned value scales of {tables.label_of(r)} (1.0 everywhere = "
                             f"plain attention; decile 1 = least similar item pairs):\n\n"
                             + tables.to_markdown(header, rows) + "\n")
    return "\n".join(parts)


def budget_of(record: dict) -> str:
    """The training budget a run was made with (see ``BUDGET_KEYS``), as a sortable string."""
    config = record.get("config") or {}
    return json.dumps({k: config.get(k) for k in BUDGET_KEYS if config.get(k) is not None},
                      sort_keys=True)


def ablation_section(records: list[dict], dataset: str, target: str, out_dir: str) -> str:
    head = "## Ablations (paper Tables 3-4)\n\n"
    # One study per training budget: a variant is compared only with the full model trained at
    # the same budget, never with a longer or shorter run.
    studies: dict[str, list[dict]] = {}
    for r in records:
        if tables.is_ablation(r) or tables.label_of(r) == target:
            studies.setdefault(budget_of(r), []).append(r)
    parts = []
    for budget, runs in studies.items():
        newest = tables.select_runs(runs)
        variants = [r for r in newest if tables.is_ablation(r)]
        if not variants:
            continue
        # `python -m recbole_bbqrec.experiments.ablation` tags its reference run `ablation-full`.
        reference = target
        tagged_full = f"{target}-{tables.ABLATION_PREFIX}full"
        full = [r for r in newest if tables.label_of(r) == tagged_full]
        if full:
            variants, reference = [r for r in variants if r not in full], tagged_full
        else:
            full = [r for r in newest if tables.label_of(r) == target]
        title = "### Budget: " + ", ".join(f"{k}={v}" for k, v in json.loads(budget).items())
        if not full:
            labels = ", ".join(tables.label_of(r) for r in variants)
            parts.append(f"{title}\n\nNo full {target} run at this budget to compare "
                         f"{labels} with.\n\n" + _sources(variants, out_dir) + "\n")
            continue
        table = tables.paper_table(variants + full, target=reference)
        parts.append(f"{title}\n\nVariants against the full {reference} (Improv. = full model "
                     f"vs best variant).\n\n" + tables.table2_markdown(table) + "\n\n"
                     + _sources(variants + full, out_dir) + "\n")
    if not parts:
        return head + (f"No ablation runs for {dataset}. Produce them with `python -m "
                       f"recbole_bbqrec.experiments.ablation --dataset={dataset}` (or `python "
                       f"run_recbole_bbqrec.py --model={target} --dataset={dataset} "
                       f"--run_tag=ablation-<variant> --<switch>=<value>`).\n")
    return head + "\n".join(parts)


def json_rows(data) -> list[dict]:
    """A JSON list of dicts, ``{"rows": [...]}``, or one flat dict -> rows of plain cells."""
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        data = data["rows"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise ValueError("expected a list of objects, {\"rows\": [...]} or one object")
    return data


def rows_markdown(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row if k != "command"))

    def cell(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, (dict, list)):
            return json.dumps(value, sort_keys=True)
        return "-" if value is None else str(value)

    return tables.to_markdown(columns, [[cell(row.get(c)) for c in columns] for row in rows])


def json_tables_section(title: str, pattern: str, folder: str, out_dir: str, how: str) -> str:
    head = f"## {title}\n\n"
    paths = sorted(glob.glob(os.path.join(folder, pattern)))
    if not paths:
        return head + f"No `{pattern}` files in `{_rel(folder, out_dir)}`. {how}\n"
    parts = [head]
    for path in paths:
        name = os.path.basename(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            rows = json_rows(data)
        except (OSError, ValueError) as err:
            parts.append(f"`{name}` could not be read: {err}\n\n")
            continue
        parts.append(f"### {name}\n\n{rows_markdown(rows)}\n\n")
        commands = [r["command"] for r in rows if r.get("command")]
        if isinstance(data, dict) and data.get("command"):
            commands.insert(0, data["command"])
        parts.append(f"Produced by: `{_rel(path, out_dir)}`")
        for command in dict.fromkeys(commands):
            parts.append(f"; `{command}`")
        parts.append("\n\n")
    return "".join(parts).rstrip() + "\n"


def find_sweeps(dataset: str, results_dir: str, ray_results: str) -> list[dict]:
    """``sweep.json`` summaries for ``dataset``, plus bare PNGs under results/<dataset>/sweeps."""
    sweeps, seen = [], set()
    roots = [os.path.join(results_dir, dataset, SWEEPS_DIR), ray_results]
    for root in roots:
        for path in sorted(glob.glob(os.path.join(root, "**", "sweep.json"), recursive=True)):
            try:
                with open(path, encoding="utf-8") as f:
                    summary = json.load(f)
            except (OSError, ValueError):
                continue
            if summary.get("dataset") != dataset:
                continue
            folder = os.path.dirname(path)
            plot = os.path.join(folder, "sweep.png")
            summary.update(_folder=folder, plot=plot if os.path.isfile(plot) else None,
                           csv=os.path.join(folder, "trials.csv"))
            sweeps.append(summary)
            seen.add(os.path.abspath(folder))
    bare = os.path.join(results_dir, dataset, SWEEPS_DIR)
    for png in sorted(glob.glob(os.path.join(bare, "**", "*.png"), recursive=True)):
        if os.path.abspath(os.path.dirname(png)) not in seen:
            sweeps.append({"_folder": os.path.dirname(png), "plot": png, "name": png})
    return sweeps


def sweeps_section(dataset: str, results_dir: str, ray_results: str, out_dir: str,
                   figures_dir: str) -> str:
    head = "## Hyper-parameter sweeps (paper Figure 3)\n\n"
    sweeps = find_sweeps(dataset, results_dir, ray_results)
    if not sweeps:
        return head + (f"No sweeps for {dataset}. Produce one with `python run_hyper.py "
                       f"--dataset={dataset} --model=BBQRec --space "
                       f"properties/hyper/bbqrec_lndk.yaml`.\n")
    parts = [head]
    for i, sweep in enumerate(sweeps):
        name = os.path.basename(os.path.normpath(sweep["_folder"]))
        parts.append(f"### {name}\n\n")
        if sweep.get("plot"):
            os.makedirs(figures_dir, exist_ok=True)
            target = os.path.join(figures_dir, f"{i:02d}-{name}.png")
            tmp = os.path.join(figures_dir, f".tmp-{os.getpid()}.png")
            shutil.copyfile(sweep["plot"], tmp)
            os.replace(tmp, target)
            parts.append(f"![{name}]({_rel(target, out_dir)})\n\n")
        else:
            parts.append("No plot: no trial of this sweep reported a validation score.\n\n")
        if sweep.get("fixed") or sweep.get("epochs"):
            budget = {"epochs": sweep.get("epochs"), **(sweep.get("fixed") or {})}
            parts.append("Every trial: " + ", ".join(f"{k}={v}" for k, v in budget.items())
                         + f" (space `{sweep.get('space')}`).\n\n")
        best = sweep.get("best")
        if best:
            params = ", ".join(f"{k}={best.get(k)}" for k in sweep.get("searched", []))
            parts.append(f"Best valid NDCG@10 {best.get('ndcg@10')} ({params}); "
                         f"{sweep.get('n_trials')} trials, {sweep.get('n_errors')} errored.\n\n")
        sources = [f"`{_rel(p, out_dir)}`" for p in (sweep.get("csv"), sweep.get("plot"))
                   if p and os.path.isfile(p)]
        parts.append("Produced by: " + ", ".join(sources or ["(files moved)"]))
        if sweep.get("command"):
            parts.append(f"; `{sweep['command']}`")
        parts.append("\n\n")
    return "".join(parts).rstrip() + "\n"


def build_report(dataset: str, results_dir: str = "results", out_dir: str = "reports",
                 ray_results: str = "ray_results", target: str = "BBQRec") -> str:
    """Write ``<out_dir>/<dataset>.md`` and return its path."""
    folder = os.path.join(results_dir, dataset)
    scan = scan_results(folder) if os.path.isdir(folder) else ResultScan()
    records = scan.records
    os.makedirs(out_dir, exist_ok=True)
    sections = [
        f"# {dataset}: recbole_bbqrec results\n\nGenerated {time.strftime('%Y-%m-%d %H:%M')} "
        f"from `{folder}` by `python -m recbole_bbqrec.experiments.report --dataset={dataset}`.\n",
        skipped_section(scan),
        protocol_section(records),
        overall_section(records, dataset, target, out_dir),
        equal_budget_section(records, dataset, results_dir, out_dir),
        ablation_section(records, dataset, target, out_dir),
        json_tables_section("Stage-1 semantic IDs: collisions and codebook use", "stage1-*.json",
                            folder, out_dir, f"They are written by stage 1 (`python "
                            f"run_recbole_bbqrec.py --model={target} --dataset={dataset} "
                            f"--stage=tokenizer`)."),
        json_tables_section("Speed (paper Table 6)", "bench-*.json", folder, out_dir,
                            "They are written by the benchmarks in `bench/`."),
        sweeps_section(dataset, results_dir, ray_results, out_dir,
                       os.path.join(out_dir, f"{dataset}-figures")),
    ]
    path = os.path.join(out_dir, f"{dataset}.md")
    atomic_write_text(path, "\n".join(section for section in sections if section))
    if scan.skipped:
        print(f"[report] {len(scan.skipped)} result file(s) skipped, listed in {path}",
              file=sys.stderr)
    return path


def skipped_section(scan: ResultScan) -> str:
    """Result files that are in no table, each with the reason ('' when there are none)."""
    if not scan.skipped:
        return ""
    return "## Skipped result files\n\n" + scan.skipped_note() + "\n"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", "-d", required=True)
    parser.add_argument("--results", default="results", help="results root (results/<dataset>)")
    parser.add_argument("--out", default="reports", help="where <dataset>.md is written")
    parser.add_argument("--ray_results", default="ray_results", help="run_hyper.py outputs")
    parser.add_argument("--target", default="BBQRec", help="the model Improv./p-value are for")
    args = parser.parse_args(argv)
    check_path_name("dataset", args.dataset)  # it becomes <out>/<dataset>.md
    path = build_report(args.dataset, args.results, args.out, args.ray_results, args.target)
    print(path)
    return path


if __name__ == "__main__":
    from recbole_bbqrec.cli import run_cli

    run_cli(main)  # expected errors: one line on stderr, exit 2
