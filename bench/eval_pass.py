"""One RecBole evaluation pass of a finished run, timed: what a user waits for when a trained
generative model (BBQRec, TIGER) is evaluated on its whole test (or validation) set.

The run is rebuilt from its results JSON, its checkpoint loaded weights-only, and
``trainer.evaluate`` timed as the run itself calls it (full ranking, RecBole's metrics). The
metrics are then checked against those the run recorded, so a faster pass that changed what
it computes does not pass unnoticed.

    .venv/bin/python bench/eval_pass.py --result results/Beauty/<run>.json --threads 2 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from recbole_bbqrec.checkpoints import load_model_weights  # noqa: E402
from recbole_bbqrec.quick_start import build_run  # noqa: E402
from recbole_bbqrec.recommend import read_result_run  # noqa: E402

# Metrics agree with the run's record when they differ by at most this: the record rounds
# them to 4 decimals, and grouped inference may move a score's last bits.
METRIC_TOLERANCE = 1e-4


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--result", required=True, help="a finished run's results JSON")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="passes to time (each is printed)")
    p.add_argument("--split", choices=["test", "valid"], default="test")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    with open(args.result, encoding="utf-8") as f:
        recorded = json.load(f).get(args.split) or {}
    config, checkpoint = read_result_run(args.result)
    parts = build_run(config, split=True, trainer=True)
    load_model_weights(parts.model, checkpoint, "cpu")
    parts.model.eval()
    data = parts.test_data if args.split == "test" else parts.valid_data
    n_users = len(data.dataset.inter_feat)
    for repeat in range(args.repeats):
        start = time.perf_counter()
        metrics = parts.trainer.evaluate(data, load_best_model=False, show_progress=False)
        seconds = time.perf_counter() - start
        metrics = {k: round(float(v), 4) for k, v in metrics.items()}
        print(f"eval pass {repeat + 1}: {seconds:.1f} s for {n_users} {args.split} users "
              f"({1e3 * seconds / n_users:.2f} ms per user, {args.threads} threads): {metrics}",
              flush=True)
    shared = sorted(set(metrics) & set(recorded))
    same = bool(shared) and all(abs(metrics[k] - float(recorded[k])) <= METRIC_TOLERANCE
                                for k in shared)
    print(f"same metrics as the run's record ({', '.join(shared) or 'none recorded'}): "
          f"{'yes' if same else 'no'}")


if __name__ == "__main__":
    main()
