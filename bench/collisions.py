"""Semantic-ID collisions at L = 2, 3, 4 (paper Table 5) for the BBQRec, TIGER and LETTER tokenizers.

Runs stage 1 only (``--stage=tokenizer``, cached by config hash, so a rerun reuses IDs) for each
tokenizer and code length, and reports, per run, the items that share a full ID before
uniqueness is enforced (the paper's count), after it (always 0: ``make_unique`` moves one
signal's last-level code to the nearest free one), code usage per level and training time.

    .venv/bin/python bench/collisions.py --dataset=Beauty --config_files=properties/overrides/cpu_budget.yaml
    .venv/bin/python bench/collisions.py --dataset=Beauty --tokenizers letter \
        --config_files=properties/overrides/cpu_budget.yaml --letter_cf_checkpoint=saved/SASRec-....pth

Writes ``results/<dataset>/stage1-collisions.json`` (read by ``recbole_bbqrec.experiments.report``; rows of
tokenizers not run this time are kept) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from recbole_bbqrec.atomic_io import atomic_write_json  # noqa: E402
from recbole_bbqrec.cli import parse_with_config_keys  # noqa: E402
from recbole_bbqrec.quick_start import run  # noqa: E402
from recbole_bbqrec.results import command_line  # noqa: E402
from recbole_bbqrec.tokenizers.semantic_ids import CollisionError  # noqa: E402

# LETTER's IDs feed TIGER's generator (LETTER-TIGER); the tokenizer key selects the IDs.
TOKENIZER_MODELS = {"bbq": "BBQRec", "tiger": "TIGER", "letter": "TIGER"}
DEFAULT_TOKENIZERS = ["bbq", "tiger"]  # letter also needs --letter_cf_checkpoint


def merge_rows(path: str, new_rows: list[dict]) -> list[dict]:
    """Earlier rows of ``path`` for the tokenizers not rerun, then ``new_rows``."""
    if not os.path.isfile(path):
        return new_rows
    with open(path, encoding="utf-8") as f:
        old_rows = json.load(f)
    rerun = {row["tokenizer"] for row in new_rows}
    return [row for row in old_rows if row.get("tokenizer") not in rerun] + new_rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--levels", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--tokenizers", nargs="+", default=DEFAULT_TOKENIZERS,
                        choices=list(TOKENIZER_MODELS))
    parser.add_argument("--config_files", default=None, help="space-separated YAML files")
    parser.add_argument("--results_dir", default="results")
    args, extra = parse_with_config_keys(parser, argv)
    files = args.config_files.split() if args.config_files else None
    rows, command = [], command_line()
    for tokenizer in args.tokenizers:
        for levels in args.levels:
            try:
                record = run(model=TOKENIZER_MODELS[tokenizer], dataset=args.dataset,
                             config_file_list=files, argv=extra,
                             config_dict={"stage": "tokenizer", "n_levels": levels,
                                          "tokenizer": tokenizer, "show_progress": False})
            except CollisionError as err:  # a prefix with no free code left: report, go on
                rows.append({"tokenizer": tokenizer, "L": levels, "items": err.n_items,
                             "raw_collisions": err.raw_collisions, "collisions_after_fix": None,
                             "error": str(err), "command": command})
                print(rows[-1], flush=True)
                continue
            s = record["stage1"]
            rows.append({
                "tokenizer": tokenizer, "L": levels, "signals": "+".join(s["signals"]),
                "items": s["n_items"], "raw_collisions": s["raw_collisions"],
                "collisions_after_fix": s["collisions"],
                "min_code_usage": round(min(min(v) for v in s["code_usage"].values()), 3),
                "stage1_s": s["train_s"], "epochs": s["epochs_run"], "hash": s["hash"],
                "command": command,
            })
            print(rows[-1], flush=True)
    path = os.path.join(args.results_dir, args.dataset, "stage1-collisions.json")
    rows = merge_rows(path, rows)
    atomic_write_json(path, rows, sort_keys=False)
    header = ["tokenizer", "L", "signals", "items", "raw_collisions", "collisions_after_fix",
              "min_code_usage", "stage1_s"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row.get(h, "-")) for h in header) + " |")
    print(path)
    return rows


if __name__ == "__main__":
    main()
