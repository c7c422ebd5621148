"""The results file every run writes: ``results/<dataset>/<label>-<time>.json``.

One flat JSON object per run, so ``compare`` and ``report`` read runs without RecBole:
``{"model", "label", "dataset", "command", "config", "valid", "test", "train_s", "eval_s",
"peak_rss_mb", ...}``; metric keys exactly as RecBole's evaluator prints them (``recall@10``).
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import sys
import time

import numpy as np

from recbole_bbqrec.atomic_io import atomic_save_npz, atomic_write_json


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def plain_metrics(result) -> dict:
    """RecBole's OrderedDict of metrics -> ``{name: float}`` (None stays None)."""
    if result is None:
        return {}
    return {str(k): float(v) for k, v in dict(result).items()}


def write_result(results_dir: str, record: dict, per_user: dict | None = None) -> str:
    """Write one run's record under ``results_dir/<dataset>/`` and return the path.

    ``per_user`` (test metric per user, in RecBole's evaluation order) goes to a sibling
    ``.users.npz`` named in the record, for paired significance tests between runs.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    stem = os.path.join(results_dir, record["dataset"], f"{record['label']}-{stamp}")
    path, n = stem + ".json", 1
    while os.path.exists(path):  # the same label twice within a second: never overwrite
        path, n = f"{stem}-{n}.json", n + 1
    if per_user:
        npz_path = path[: -len(".json")] + ".users.npz"
        atomic_save_npz(npz_path, per_user)
        record["per_user_file"] = os.path.basename(npz_path)
    atomic_write_json(path, record, sort_keys=False)
    return path


def load_per_user(record: dict) -> dict[str, np.ndarray]:
    """The per-user test metrics saved beside a result record ({} when there are none)."""
    name = record.get("per_user_file")
    if not name:
        return {}
    path = os.path.join(os.path.dirname(record["_path"]), name)
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def command_line() -> str:
    """How this process was started, for the record (``python run_recbole_bbqrec.py ...``)."""
    argv = list(getattr(sys, "orig_argv", sys.argv))  # keeps "-m module" as typed
    if argv and os.path.basename(argv[0]).startswith("python"):
        argv = argv[1:]
    if argv and argv[0] != "-m" and os.path.isfile(argv[0]):
        argv[0] = os.path.relpath(argv[0])
    return shlex.join(["python", *argv])  # quoted so that it can be pasted into a shell


SWEEPS_DIR = "sweeps"  # results/<dataset>/sweeps/<name>/: run_hyper.py outputs


def load_results(folder: str) -> list[dict]:
    """All result records under ``folder`` (recursively), oldest first; bad files named.

    ``sweeps/`` folders are skipped: they hold Ray Tune's experiment state (JSON lines,
    pickles), read by ``report`` through their ``sweep.json``.
    """
    records = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != SWEEPS_DIR)
        for name in sorted(files):
            if not name.endswith(".json") or name.startswith(".tmp-"):
                continue
            path = os.path.join(root, name)
            try:
                with open(path, encoding="utf-8") as f:
                    record = json.load(f)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(f"Cannot read result file {path}: {err}") from err
            if not isinstance(record, dict) or "test" not in record or "model" not in record:
                continue  # other JSON (stats, sweeps) living beside results
            record["_path"] = path
            records.append(record)
    records.sort(key=lambda r: (r.get("finished_at", ""), r["_path"]))
    return records
