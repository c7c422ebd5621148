"""The paper's ablations (Tables 3-4, Fig. 4) as one command:

``python -m recbole_bbqrec.experiments.ablation --dataset=Beauty [--variants full,no_mim,...]
[--config_files a.yaml,b.yaml] [--variants_file FILE] [--list] [--key=value ...]``

Every variant of ``properties/ablations.yaml`` (format documented there) is one
``quick_start.run`` with ``run_tag: ablation-<name>`` plus the variant's config overrides, so
its result record is what ``compare``/``report`` already read as an ablation. Drop-one-signal
variants are expanded from the full model's signals (``id`` + the dataset's modalities). A
variant that fails is reported and the others still run. Finally the table of this
invocation's variants (test R@10/N@10, the validation score that picked the checkpoint, the
relative change against ``full``, and the command reproducing the variant alone) is written to
``<results_dir>/<dataset>/ablation.md`` and ``ablation.csv``.

Precedence per variant: config files < ``--key=value`` (or ``config_dict``) < the variant's
overrides and its run_tag: an ablation switch is never silently undone by a shared flag.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from dataclasses import dataclass, field

from recbole_bbqrec.experiments import tables
from recbole_bbqrec.atomic_io import atomic_write_text
from recbole_bbqrec.cli import parse_with_config_keys

RUN_TAG_PREFIX = tables.ABLATION_PREFIX  # "ablation-": what compare/report look for
FULL = "full"
TABLE_METRICS = ("recall@10", "ndcg@10")
_NAME = re.compile(r"^[A-Za-z0-9_.{}-]+$")


@dataclass
class Variant:
    name: str
    description: str
    config: dict = field(default_factory=dict)

    @property
    def run_tag(self) -> str:
        return RUN_TAG_PREFIX + self.name


@dataclass
class Outcome:
    variant: Variant
    status: str                 # "ok" or "failed: <why>"
    command: str                # reproduces this variant alone
    record: dict | None = None  # quick_start.run's record when ok


# --- variant definitions --------------------------------------------------------------------------
def variants_file() -> str:
    from recbole_bbqrec.config import properties_dir

    return os.path.join(properties_dir(), "ablations.yaml")


def load_variant_specs(path: str | None = None) -> list[dict]:
    """The raw entries of an ablations YAML, validated (templates not yet expanded)."""
    from recbole_bbqrec.config import load_yaml_section

    path = path or variants_file()
    entries = load_yaml_section(path, "ablations", list,
                                "list of {name, description, config} entries")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                or not _NAME.match(entry["name"]):
            raise ValueError(f"{path}: entry {i} needs a `name` of letters, digits, _ - . "
                             f"(got {entry!r})")
        if not isinstance(entry.get("config", {}) or {}, dict):
            raise ValueError(f"{path}: entry {entry['name']!r}: `config` must be a mapping, "
                             f"got {entry['config']!r}")
        if entry.get("drop_signal") and "{signal}" not in entry["name"]:
            raise ValueError(f"{path}: drop_signal entry {entry['name']!r} needs `{{signal}}` "
                             f"in its name (one variant per signal)")
    return entries


def expand_variants(specs: list[dict], signals: list[str] | None) -> list[Variant]:
    """Concrete variants; a ``drop_signal`` template becomes one variant per signal.

    ``signals``: the full model's signals (None: no drop-one-signal variants, e.g. TIGER).
    """
    variants: list[Variant] = []
    for spec in specs:
        config = dict(spec.get("config") or {})
        description = str(spec.get("description", ""))
        if not spec.get("drop_signal"):
            variants.append(Variant(spec["name"], description, config))
            continue
        for signal in signals or []:
            kept = [s for s in signals if s != signal]
            variants.append(Variant(spec["name"].replace("{signal}", signal),
                                    description.replace("{signal}", signal),
                                    {**config, "signals": kept}))
    names = [v.name for v in variants]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"ablation variant names must be unique; repeated: {repeated}")
    return variants


def full_signals(config, modalities: list[str]) -> list[str] | None:
    """The full model's signals: the configured ones, else ``id`` (with use_rec) + modalities."""
    if config["tokenizer"] != "bbq":
        return None  # TIGER/LETTER quantize one embedding: no signals to drop
    if config["signals"]:
        return list(config["signals"])
    return (["id"] if config["use_rec"] else []) + list(modalities)


def dataset_modalities(config) -> list[str]:
    """The modalities stage 1 would use: the configured ones, else every feature file found."""
    from recbole_bbqrec.layout import modalities_on_disk

    if config["modalities"]:
        return list(config["modalities"])
    return modalities_on_disk(config["data_path"], config["dataset"])  # the dataset's rule


def select_variants(variants: list[Variant], names: list[str] | None) -> list[Variant]:
    if not names:
        return variants
    by_name = {v.name: v for v in variants}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown ablation variant(s) {unknown}; defined for this dataset: "
                         f"{', '.join(by_name)}")
    return [by_name[n] for n in names]


# --- running -----------------------------------------------------------------------------------
def _argv_keys(argv: list[str]) -> dict[str, str]:
    return {a[2:].split("=", 1)[0]: a for a in argv if a.startswith("--") and "=" in a}


def _flag(key: str, value) -> str:
    if isinstance(value, (list, tuple, dict)):
        return f"--{key}=\"{value!r}\""
    return f"--{key}={value}"


def variant_command(model: str, dataset: str, variant: Variant, config_file_list, config_dict,
                    argv: list[str]) -> str:
    """A ``run_recbole_bbqrec.py`` line that reproduces this one variant."""
    parts = ["python run_recbole_bbqrec.py", f"--model={model}", f"--dataset={dataset}"]
    if config_file_list:
        parts.append(f"--config_files=\"{' '.join(config_file_list)}\"")
    overridden = set(variant.config) | {"run_tag"}
    parts += [_flag(k, v) for k, v in (config_dict or {}).items() if k not in overridden]
    parts += [a for k, a in _argv_keys(argv).items() if k not in overridden]
    parts += [_flag("run_tag", variant.run_tag)]
    parts += [_flag(k, v) for k, v in variant.config.items()]
    return " ".join(parts)


def base_config(model, dataset, config_file_list=None, config_dict=None, argv=None):
    """The shared config of every variant (preprocessing the dataset if it is missing)."""
    from recbole_bbqrec.quick_start import build_config, ensure_dataset

    config = build_config(model, dataset, config_file_list, dict(config_dict or {}), list(argv or []))
    ensure_dataset(config)
    return config


def run_ablations(dataset: str, variants: list[str] | None = None, model: str = "BBQRec",
                  config_file_list=None, config_dict=None, argv=None, variants_path=None,
                  runner=None) -> tuple[list[Outcome], str]:
    """Run the chosen variants one after another; return the outcomes and the table's path."""
    argv = list(argv or [])
    config = base_config(model, dataset, config_file_list, config_dict, argv)
    signals = full_signals(config, dataset_modalities(config))
    chosen = select_variants(expand_variants(load_variant_specs(variants_path), signals), variants)
    if runner is None:
        from recbole_bbqrec.quick_start import run as runner
    outcomes = []
    for variant in chosen:
        command = variant_command(model, dataset, variant, config_file_list, config_dict, argv)
        # The variant's own keys win over the shared ones (argv would otherwise beat config_dict).
        shared_argv = [a for k, a in _argv_keys(argv).items()
                       if k not in variant.config and k != "run_tag"]
        run_dict = {**(config_dict or {}), **variant.config, "run_tag": variant.run_tag}
        print(f"[ablation] {variant.name}: {variant.description}")
        started = time.time()
        try:
            record = runner(model=model, dataset=dataset, config_file_list=config_file_list,
                            config_dict=run_dict, argv=shared_argv)
        except Exception as err:  # one broken variant must not cost the others
            print(f"[ablation] {variant.name} FAILED: {type(err).__name__}: {err}")
            outcomes.append(Outcome(variant, f"failed: {type(err).__name__}: {err}", command))
            continue
        print(f"[ablation] {variant.name} done in {time.time() - started:.0f}s: "
              f"{record.get('result_file')}")
        outcomes.append(Outcome(variant, "ok", command, record))
    path = write_ablation_table(outcomes, config["results_dir"], dataset)
    return outcomes, path


# --- the table ---------------------------------------------------------------------------------
def _relative(value, reference) -> str:
    if value is None or not reference:
        return "n/a"
    return f"{(value - reference) / reference * 100:+.2f}%"


def ablation_rows(outcomes: list[Outcome]) -> tuple[list[str], list[list[str]]]:
    """One row per variant: test metrics, valid score, change vs ``full``, status, command."""
    full = next((o.record for o in outcomes if o.variant.name == FULL and o.record), None)
    valid_metric = next((str(o.record["config"].get("valid_metric", "")).lower()
                         for o in outcomes if o.record), "") or "score"
    names = [tables.metric_name(m) for m in TABLE_METRICS]
    header = ["variant", "description", *[f"test {n}" for n in names], f"valid {valid_metric}",
              *[f"Δ{n} vs full" for n in names], "status", "command"]
    rows = []
    for o in outcomes:
        test = (o.record or {}).get("test", {})
        values = [test.get(m) for m in TABLE_METRICS]
        reference = [(full or {}).get("test", {}).get(m) for m in TABLE_METRICS]
        rows.append([
            o.variant.name, o.variant.description.replace("|", "/"),
            *[tables.fmt_value(v) for v in values],
            tables.fmt_value((o.record or {}).get("best_valid_score")),
            *[_relative(v, r) if o.record and full else "n/a" for v, r in zip(values, reference)],
            o.status.replace("|", "/").replace("\n", " "),
            f"`{o.command}`",
        ])
    return header, rows


def write_ablation_table(outcomes: list[Outcome], results_dir: str, dataset: str) -> str:
    """``<results_dir>/<dataset>/ablation.md`` (+ ``ablation.csv`` beside it); returns the .md."""
    header, rows = ablation_rows(outcomes)
    folder = os.path.join(results_dir, dataset)
    os.makedirs(folder, exist_ok=True)
    md_path = os.path.join(folder, "ablation.md")
    failed = [o for o in outcomes if o.status != "ok"]
    text = (f"# Ablations on {dataset} (paper Tables 3-4, Fig. 4)\n\n"
            f"Test split, leave-one-out, full ranking. Δ = relative change of the variant "
            f"against `{FULL}` (negative: the ablated part helps). Written "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}.\n\n" + tables.to_markdown(header, rows) + "\n")
    if failed:
        text += "\n" + "\n".join(f"- {o.variant.name} {o.status}" for o in failed) + "\n"
    sources = [f"- {o.variant.name}: `{o.record['result_file']}`" for o in outcomes if o.record]
    if sources:
        text += "\nResult files:\n" + "\n".join(sources) + "\n"
    atomic_write_text(md_path, text)
    atomic_write_text(os.path.join(folder, "ablation.csv"), tables.to_csv(header, rows))
    return md_path


# --- CLI ---------------------------------------------------------------------------------------
def main(argv=None) -> list[Outcome]:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", default="BBQRec")
    parser.add_argument("--variants", default=None,
                        help="comma-separated variant names, in this order (default: all)")
    parser.add_argument("--config_files", default=None,
                        help="YAML files for every variant, comma- or space-separated")
    parser.add_argument("--variants_file", default=None,
                        help="another ablations YAML (default: properties/ablations.yaml)")
    parser.add_argument("--list", action="store_true", help="print the variants and stop")
    args, extra = parse_with_config_keys(parser, argv)
    files = [p for p in re.split(r"[,\s]+", args.config_files or "") if p] or None
    names = [n.strip() for n in (args.variants or "").split(",") if n.strip()] or None
    # Bad variant names, variants file or config: nothing was run; the ValueError reaches
    # cli.run_cli, which prints it in one line and exits 2.
    if args.list:
        config = base_config(args.model, args.dataset, files, None, extra)
        signals = full_signals(config, dataset_modalities(config))
        for v in select_variants(expand_variants(load_variant_specs(args.variants_file),
                                                 signals), names):
            print(f"{v.name:<20} {v.description}  {v.config}")
        return []
    outcomes, path = run_ablations(args.dataset, names, args.model, files, None, extra,
                                   args.variants_file)
    header, rows = ablation_rows(outcomes)
    print(tables.to_markdown(header[:-1], [row[:-1] for row in rows]))  # commands: in the file
    print(path)
    failed = [o.variant.name for o in outcomes if o.status != "ok"]
    if failed:
        print(f"[ablation] failed: {', '.join(failed)}")
    return outcomes


if __name__ == "__main__":
    from recbole_bbqrec.cli import run_cli

    run_cli(main)  # expected errors: one line on stderr, exit 2
