"""Models compared at equal cost: the same minutes of training each (stage 1 included).

One command trains every model for ``--minutes`` on its own process and thread
(``time_budget``, ``torch_threads: 1``; see ``recbole_bbqrec/budget.py`` for what the clock
counts), validating along the way, tests each at its best validation, then writes

* ``results/<dataset>/budget<m>m.md``: test metrics, the budget spent (stage 1 / training),
  epochs, and paired t-tests over users of the target against every other row;
* ``reports/<dataset>-budget<m>m.png``: validation NDCG@10 against charged seconds.

All runs of one comparison carry ``run_tag: budget<m>m`` (variants ``budget<m>m-<name>``),
so tables and later checks find them. ``--seeds=2020,2,3`` runs every model once per seed
(the configured seed's runs keep the plain tag, the others add ``-seed<k>``) and the markdown
then also holds the spread over seeds and tests that see it (``experiments/seeds.py``).

    python -m recbole_bbqrec.experiments.budget_compare --dataset=Beauty --minutes=20
    python -m recbole_bbqrec.experiments.budget_compare --dataset=Beauty --minutes=20 --variants=no_id
    python -m recbole_bbqrec.experiments.budget_compare --dataset=Beauty --minutes=20 --models=TIGER,BBQRec --seeds=2020,2,3 --jobs=2
    python -m recbole_bbqrec.experiments.budget_compare --dataset=Beauty --minutes=20 --plot_only
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

from recbole_bbqrec.experiments import seeds as seed_runs
from recbole_bbqrec.experiments import tables
from recbole_bbqrec.atomic_io import atomic_write_text
from recbole_bbqrec.budget import curve_points
from recbole_bbqrec.cli import parse_with_config_keys
from recbole_bbqrec.results import load_results
from recbole_bbqrec.utils import repo_root

RECBOLE_DEFAULT_SEED = 2020  # recbole/properties/overall.yaml

DEFAULT_MODELS = ("SASRec", "TIGER", "BBQRec")
DEFAULT_FILES = ("properties/overrides/cpu_budget.yaml",)
METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
RUNNER = os.path.join(repo_root(), "run_recbole_bbqrec.py")


def budget_tag(minutes: float) -> str:
    return f"budget{minutes:g}m"


def variant_flags(dataset: str, names: list[str], files: list[str], extra: list[str]) -> dict:
    """BBQRec ablation variants (``properties/ablations.yaml``) -> {name: [--key=value ...]}."""
    from recbole_bbqrec.experiments.ablation import (base_config, dataset_modalities,
                                                     expand_variants, full_signals,
                                                     load_variant_specs, select_variants)

    config = base_config("BBQRec", dataset, files, None, extra)
    signals = full_signals(config, dataset_modalities(config))
    chosen = select_variants(expand_variants(load_variant_specs(), signals), names)
    # argv goes to the run without a shell: no quotes around values (a list is its repr)
    return {v.name: [f"--{k}={val!r}" if isinstance(val, (list, tuple, dict)) else f"--{k}={val}"
                     for k, val in v.config.items()] for v in chosen}


def configured_seed(files: list[str]) -> int:
    """The seed a run gets without ``--seed``: the last config file that sets one, else
    RecBole's default."""
    from recbole_bbqrec.config import value_in_config_files

    return int(value_in_config_files(files, "seed", RECBOLE_DEFAULT_SEED))


def run_commands(dataset: str, minutes: float, models, variants: dict, files, extra,
                 python: str = sys.executable, seeds: list[int] | None = None
                 ) -> list[tuple[str, list[str]]]:
    """(label, argv) of every run: one per model, one per BBQRec variant; with ``seeds``,
    all of them once per seed. The configured seed's runs keep the plain tags (they are the
    runs a one-seed comparison makes); every other seed's runs are tagged ``-seed<k>``."""
    tag = budget_tag(minutes)
    common = [f"--dataset={dataset}", f"--time_budget={minutes:g}", "--torch_threads=1",
              "--epochs=100000", "--show_progress=False"]  # the budget ends the run, not epochs
    if files:
        common.append(f"--config_files={' '.join(files)}")
    common += list(extra)
    runs = []
    plain_seed = configured_seed(files)
    for seed in seeds or [None]:
        seed_flag = [] if seed is None else [f"--seed={seed}"]
        suffix = seed_runs.seed_tag("", None if seed in (None, plain_seed) else seed)
        runs += [(f"{m}-{tag}{suffix}", [python, RUNNER, f"--model={m}", *common, *seed_flag,
                                         f"--run_tag={tag}{suffix}"]) for m in models]
        runs += [(f"BBQRec-{tag}-{name}{suffix}",
                  [python, RUNNER, "--model=BBQRec", *common, *flags, *seed_flag,
                   f"--run_tag={tag}-{name}{suffix}"]) for name, flags in variants.items()]
    return runs


def launch(runs: list[tuple[str, list[str]]], jobs: int, log_dir: str, dataset: str) -> dict:
    """Run at most ``jobs`` at once (each on one thread); logs in ``log_dir``. -> {label: rc}."""
    os.makedirs(log_dir, exist_ok=True)
    pending, active, codes = list(runs), {}, {}
    while pending or active:
        while pending and len(active) < max(1, jobs):
            label, argv = pending.pop(0)
            log = open(os.path.join(log_dir, f"{dataset}-{label}.log"), "w", encoding="utf-8")
            print(f"[budget] start {label}: {' '.join(argv[1:])}", flush=True)
            active[label] = (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), log)
        for label, (proc, log) in list(active.items()):
            if proc.poll() is not None:
                log.close()
                codes[label] = proc.returncode
                print(f"[budget] {label} finished with exit code {proc.returncode}", flush=True)
                del active[label]
        time.sleep(1.0)
    return codes


def budget_records(results_dir: str, dataset: str, tag: str) -> list[dict]:
    """The newest finished record of each label tagged ``tag`` or ``tag-<variant>``."""
    folder = os.path.join(results_dir, dataset)
    pattern = re.compile(rf"^{re.escape(tag)}(-.+)?$")
    latest: dict[str, dict] = {}
    for record in load_results(folder) if os.path.isdir(folder) else []:
        run_tag = str((record.get("config") or {}).get("run_tag") or "")
        if pattern.match(run_tag) and record.get("status", "ok") == "ok" and record.get("test"):
            latest[tables.label_of(record)] = record  # load_results is oldest first
    return list(latest.values())


def budget_table(records: list[dict], tag: str, target: str = "BBQRec") -> str:
    """Markdown: one row per run, the target's paired p-values against each other row."""
    target_record = next((r for r in records if tables.label_of(r) == f"{target}-{tag}"), None)
    header = ["run", *[tables.metric_name(m) for m in METRICS], "valid N@10", "stage 1 min",
              "training min", "epochs", f"p {target} vs row (R@10 / N@10)"]
    rows = []
    for r in records:
        budget = r.get("budget") or {}
        p_cells = "-"
        if target_record is not None and r is not target_record:
            ps = [tables.paired_pvalue(target_record, r, m)[0] for m in ("recall@10", "ndcg@10")]
            p_cells = " / ".join(tables.fmt_pvalue(p) for p in ps)
        rows.append([tables.label_of(r), *[tables.fmt_value(r["test"].get(m)) for m in METRICS],
                     tables.fmt_value(r.get("valid", {}).get("ndcg@10")),
                     f"{budget.get('stage1_s', 0) / 60:.1f}", f"{budget.get('train_s', 0) / 60:.1f}",
                     str(r.get("epochs_trained", "")), p_cells])
    return tables.to_markdown(header, rows)


def plot_curves(records: list[dict], path: str, title: str, metric: str = "ndcg@10") -> str:
    """Validation ``metric`` against charged minutes, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for r in records:
        points = curve_points(r, metric)
        if points:
            ax.plot([s / 60 for s, _ in points], [v for _, v in points], marker="o",
                    label=tables.label_of(r))
    minutes = max(((r.get("budget") or {}).get("minutes") or 0) for r in records) if records else 0
    if minutes:
        ax.axvline(minutes, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("charged minutes (stage 1 + training, one core)")
    ax.set_ylabel(f"validation {tables.metric_name(metric)}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_outputs(dataset: str, minutes: float, results_dir: str, out_dir: str) -> tuple[str, str]:
    tag = budget_tag(minutes)
    records = budget_records(results_dir, dataset, tag)
    if not records:
        raise FileNotFoundError(f"no finished runs tagged {tag} under {results_dir}/{dataset}")
    png = plot_curves(records, os.path.join(out_dir, f"{dataset}-{tag}.png"),
                      f"{dataset}: {minutes:g} minutes per model")
    text = (f"# {dataset}: {minutes:g} minutes per model\n\nTest split (leave-one-out, full "
            f"ranking), each run tested at its best validation NDCG@10. The budget counts stage 1 "
            f"and training batches on one thread (CPU seconds; see `recbole_bbqrec/budget.py`), "
            f"not validation. Curves: `{os.path.relpath(png, os.path.join(results_dir, dataset))}`."
            f"\n\n{budget_table(records, tag)}\n")
    spread = seed_runs.seed_table(records, f"BBQRec-{tag}")
    if spread:
        text += (f"\n## Over seeds\n\nRuns that differ only in `--seed` (labels ending in "
                 f"`-seed<k>`, the plain label is the configured seed). p over runs: Welch's "
                 f"t-test of the run means; over users: paired t-test of each user's metric "
                 f"averaged over the runs.\n\n{spread}\n")
    text += "\nCommands:\n" + "".join(f"- {tables.label_of(r)}: `{r.get('command', '')}`\n"
                                       for r in records)
    md = os.path.join(results_dir, dataset, f"{tag}.md")
    atomic_write_text(md, text)
    return md, png


def main(argv=None) -> tuple[str, str]:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--minutes", type=float, required=True, help="budget per model")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated")
    parser.add_argument("--variants", default="", help="BBQRec ablation variants, e.g. no_id")
    parser.add_argument("--config_files", default=" ".join(DEFAULT_FILES))
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one core each)")
    parser.add_argument("--seeds", default="",
                        help="comma-separated seeds: every run once per seed (the configured "
                             "seed keeps the plain tag, others get -seed<k>), e.g. 2020,2,3; "
                             "default: the configured seed only")
    parser.add_argument("--results_dir", default="results")
    parser.add_argument("--out_dir", default="reports")
    parser.add_argument("--plot_only", action="store_true", help="tables and plot of past runs")
    args, extra = parse_with_config_keys(parser, argv)
    if not args.minutes > 0:
        parser.error(f"--minutes must be > 0, got {args.minutes}")
    files = [p for p in re.split(r"[,\s]+", args.config_files) if p]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if len(set(seeds)) != len(seeds):
        parser.error(f"--seeds repeats a seed: {args.seeds!r}")
    if any("--seed=" in a for a in extra) and seeds:
        parser.error("give the seeds with --seeds, not also --seed")
    if not args.plot_only:
        models = [m for m in args.models.split(",") if m]
        names = [n for n in args.variants.split(",") if n]
        variants = variant_flags(args.dataset, names, files, extra) if names else {}
        runs = run_commands(args.dataset, args.minutes, models, variants, files,
                            [*extra, f"--results_dir={args.results_dir}"], seeds=seeds)
        codes = launch(runs, args.jobs, os.path.join(args.results_dir, "logs"), args.dataset)
        failed = sorted(label for label, rc in codes.items() if rc != 0)
    else:
        failed = []
    md, png = write_outputs(args.dataset, args.minutes, args.results_dir, args.out_dir)
    print(open(md, encoding="utf-8").read())
    print(png)
    if failed:  # the table holds the others; the exit code must still say it is incomplete
        print(f"[budget] failed: {', '.join(failed)} (see results/logs)", file=sys.stderr)
        sys.exit(1)
    return md, png


if __name__ == "__main__":
    from recbole_bbqrec.cli import run_cli

    run_cli(main)
