"""One RecBole evaluation pass of a finished run, timed: what a user waits for when a trained
model is evaluated on its whole test (or validation) set.

The run is rebuilt from its results JSON (``decode.load_trained_run``: its cached stage-1 IDs,
its checkpoint loaded weights-only) and ``trainer.evaluate`` timed as the run itself called it:
full ranking, RecBole's metrics, the test set decoded at ``beam_size`` and the validation set
at ``valid_beam_size`` (as ``BBQRecTrainer`` validates). The metrics are then checked against
those the run recorded, so a faster pass that changed what it computes does not pass
unnoticed: it prints "no" and exits with status 1. Building RecBole's trainer creates its
usual ``log_tensorboard/`` folder; nothing is trained or saved.

    .venv/bin/python bench/eval_pass.py --result results/Beauty/<run>.json --threads 2 --repeats 2
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.decode import load_trained_run  # noqa: E402


def _recorded(result: str, split: str) -> dict:
    with open(result, encoding="utf-8") as f:
        record = json.load(f)
    if not isinstance(record, dict):
        raise ValueError(f"{result} is not a result record (a JSON object).")
    metrics = record.get(split)
    if not isinstance(metrics, dict) or not metrics:
        raise ValueError(f"{result} records no {split} metrics to check a pass against")
    return metrics


def same_metrics(measured: dict, recorded: dict, places: int = 4) -> bool:
    """Equal key sets, and values equal at ``places`` decimals (RecBole rounds to
    ``metric_decimal_place``; compared as integers, so no float edge decides)."""
    if set(measured) != set(recorded):
        return False
    scale = 10 ** places
    return all(round(float(measured[k]) * scale) == round(float(recorded[k]) * scale)
               for k in measured)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--result", required=True, help="a finished run's results JSON")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: the run's torch_threads, else torch's own)")
    p.add_argument("--repeats", type=int, default=1, help="passes to time (each is printed)")
    p.add_argument("--split", choices=["test", "valid"], default="test")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")

    recorded = _recorded(args.result, args.split)           # before the minutes of loading
    parts, _checkpoint = load_trained_run(args.result, trainer=True)
    data = parts.test_data if args.split == "test" else parts.valid_data
    model = parts.model
    beam = getattr(model, "valid_beam_size", None) if args.split == "valid" else None
    decoding = model.decoding(beam_size=beam) if beam else contextlib.nullcontext()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads or parts.config["torch_threads"] or threads_before)
    try:
        with decoding:
            for repeat in range(args.repeats):
                start = time.perf_counter()
                metrics = parts.trainer.evaluate(data, load_best_model=False, show_progress=False)
                seconds = time.perf_counter() - start
                metrics = {k: float(v) for k, v in metrics.items()}
                threads = torch.get_num_threads()
                print(f"eval pass {repeat + 1}: {seconds:.1f} s for {data.sample_size} "
                      f"{args.split} users ({1e3 * seconds / data.sample_size:.2f} ms per user, "
                      f"{threads} thread{'s' * (threads != 1)}): {metrics}", flush=True)
    finally:
        torch.set_num_threads(threads_before)
    same = same_metrics(metrics, recorded)
    print(f"same metrics as the run's record ({', '.join(sorted(recorded))}): "
          f"{'yes' if same else 'no'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
