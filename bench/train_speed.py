"""Stage-2 training speed against RecBole's SASRec on the same data and batches.

Times ``--steps`` optimisation steps of each model on the same training batches (after
``--warmup`` steps) and extrapolates to one epoch. BBQRec's stage-1 IDs are reused by hash
(or trained first, untimed, when this config has none yet).

    .venv/bin/python bench/train_speed.py --dataset=Beauty --config_files=properties/overrides/cpu_budget.yaml

Target (reported, not asserted): a BBQRec epoch <= 3x a SASRec epoch. The last line reads
``epoch time ratio BBQRec/SASRec: <r>x``. Updates ``results/<dataset>/bench-train_speed.json``:
a call replaces the rows of the models and settings it timed and keeps every other row.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from recbole_bbqrec.atomic_io import atomic_write_json  # noqa: E402
from recbole_bbqrec.cli import parse_with_config_keys  # noqa: E402
from recbole_bbqrec.quick_start import build_config, build_run  # noqa: E402


def time_model(model_name: str, dataset_name: str, files, extra, steps: int, warmup: int) -> dict:
    config = build_config(model_name, dataset_name, files,
                          {"show_progress": False, "state": "WARNING"}, extra)
    parts = build_run(config, trainer=False)  # the optimiser steps are timed here
    train_data, model = parts.train_data, parts.model
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    model.train()
    batches = itertools.islice(iter(train_data), warmup + steps)
    elapsed = 0.0
    for i, batch in enumerate(batches):
        batch = batch.to(config["device"])  # where build_run put the model
        start = time.perf_counter()
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
        if i >= warmup:
            elapsed += time.perf_counter() - start
    per_step = elapsed / steps
    n_batches = len(train_data)
    return {"model": model_name, "dataset": dataset_name,
            "config_files": list(files or []), "flags": list(extra),
            "step_s": round(per_step, 4),
            "batches_per_epoch": n_batches, "epoch_s_estimate": round(per_step * n_batches, 1),
            "train_batch_size": config["train_batch_size"], "torch_threads": torch.get_num_threads(),
            "parameters": sum(p.numel() for p in model.parameters())}


def merged_rows(path: str, rows: list[dict]) -> list[dict]:
    """The bench file's rows with this call's rows in place of those timed with the same
    model, config files and flags (older rows without those fields count as no files/flags)."""
    def key(row):
        return row["model"], tuple(row.get("config_files") or ()), tuple(row.get("flags") or ())

    old = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            old = json.load(handle)
    new_keys = {key(row) for row in rows}
    return [row for row in old if key(row) not in new_keys] + rows


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--models", nargs="+", default=["SASRec", "BBQRec"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config_files", default=None, help="space-separated YAML files")
    parser.add_argument("--results_dir", default="results")
    args, extra = parse_with_config_keys(parser, argv)
    torch.set_num_threads(args.threads)
    files = args.config_files.split() if args.config_files else None
    rows = [time_model(m, args.dataset, files, extra, args.steps, args.warmup) for m in args.models]
    for row in rows:
        print(row)
    ratio = rows[-1]["epoch_s_estimate"] / rows[0]["epoch_s_estimate"]
    path = os.path.join(args.results_dir, args.dataset, "bench-train_speed.json")
    atomic_write_json(path, merged_rows(path, rows), sort_keys=False)
    print(f"epoch time ratio {rows[-1]['model']}/{rows[0]['model']}: {ratio:.2f}x")
    return ratio


if __name__ == "__main__":
    main()
