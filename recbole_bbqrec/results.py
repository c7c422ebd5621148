"""The results file every run writes: ``results/<dataset>/<label>-<time>.json``.

One flat JSON object per run, so ``compare`` and ``report`` read runs without RecBole:
``{"model", "label", "dataset", "command", "config", "status", "valid", "test", "train_s",
"eval_s", "peak_rss_mb", ...}``; metric keys exactly as RecBole's evaluator prints them
(``recall@10``). The file is strict JSON (a non-finite number is written as null). A run that
ended without a validation score, or with a non-finite metric, is written with
``"status": "failed"`` and a ``"failure"`` reason: it is kept for the record, never read as a
result. Readers (``scan_results``) list every file they cannot use, with the reason.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shlex
import sys
import time
import zipfile
from dataclasses import dataclass, field

import numpy as np

from recbole_bbqrec.atomic_io import atomic_save_npz, atomic_write_json
from recbole_bbqrec.errors import ConfigError


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def plain_metrics(result) -> dict:
    """RecBole's OrderedDict of metrics -> ``{name: float}`` (None stays None)."""
    if result is None:
        return {}
    return {str(k): float(v) for k, v in dict(result).items()}


def strict_json(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN/Infinity)."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _is_finite_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def record_problem(record) -> str | None:
    """Why ``record`` cannot be used as a result (None when it can)."""
    if not isinstance(record, dict):
        return f"not a JSON object but a {type(record).__name__}"
    if record.get("status") == "failed":
        return f"the run failed: {record.get('failure') or 'no reason recorded'}"
    if not isinstance(record.get("model"), str):
        return f"model is {record.get('model')!r}, not a name"
    for section in ("valid", "test"):
        metrics = record.get(section)
        if not isinstance(metrics, dict) or not metrics:
            what = "validation score (the run never validated)" if section == "valid" else \
                "test metrics"
            return f"no {what}"
        for key, value in metrics.items():
            if not _is_finite_number(value):
                return f"{section} {key} is {value!r}, not a finite number"
    if "best_valid_score" in record and not _is_finite_number(record["best_valid_score"]):
        return f"best_valid_score is {record['best_valid_score']!r}, not a finite number"
    return None


def write_result(results_dir: str, record: dict, per_user: dict | None = None) -> str:
    """Write one run's record under ``results_dir/<dataset>/`` and return the path.

    ``per_user`` (test metric per user, in RecBole's evaluation order) goes to a sibling
    ``.users.npz`` named in the record, for paired significance tests between runs. The
    record is written as strict JSON; ``record_problem`` decides ``status`` unless the caller
    already marked the run failed.
    """
    problem = record_problem(record)
    if problem and record.get("status") != "failed":
        record["status"], record["failure"] = "failed", problem
    elif not problem:
        record["status"] = "ok"
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    folder = os.path.join(results_dir, record["dataset"])
    stem = os.path.join(folder, f"{record['label']}-{stamp}")
    if os.path.dirname(os.path.abspath(stem)) != os.path.abspath(folder):
        raise ConfigError(f"A result named {record['label']!r} for dataset "
                          f"{record['dataset']!r} would land outside {folder}; names may not "
                          f"contain '/', '\\' or '..'.")
    path, n = stem + ".json", 1
    while os.path.exists(path):  # the same label twice within a second: never overwrite
        path, n = f"{stem}-{n}.json", n + 1
    if per_user and record["status"] == "ok":
        npz_path = path[: -len(".json")] + ".users.npz"
        atomic_save_npz(npz_path, per_user)
        record["per_user_file"] = os.path.basename(npz_path)
    atomic_write_json(path, strict_json(record), sort_keys=False, allow_nan=False)
    return path


def load_per_user(record: dict) -> dict[str, np.ndarray]:
    """The per-user test metrics saved beside a result record ({} when there are none)."""
    name = record.get("per_user_file")
    if not name:
        return {}
    if not isinstance(name, str) or os.path.basename(name) != name or name in (".", ".."):
        raise ValueError(f"per_user_file {name!r} is not a file name beside the record")
    path = os.path.join(os.path.dirname(record["_path"]), name)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (zipfile.BadZipFile, EOFError) as err:  # a truncated .npz is not an OSError
        raise ValueError(f"{path} is damaged ({err})") from err


def command_line() -> str:
    """How this process was started, for the record (``python run_recbole_bbqrec.py ...``)."""
    argv = list(getattr(sys, "orig_argv", sys.argv))  # keeps "-m module" as typed
    if argv and os.path.basename(argv[0]).startswith("python"):
        argv = argv[1:]
    if argv and argv[0] != "-m" and os.path.isfile(argv[0]):
        argv[0] = os.path.relpath(argv[0])
    return shlex.join(["python", *argv])  # quoted so that it can be pasted into a shell


SWEEPS_DIR = "sweeps"  # results/<dataset>/sweeps/<name>/: run_hyper.py outputs


@dataclass
class ResultScan:
    """What a results folder holds: usable records, and the files skipped with the reason."""

    records: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def skipped_note(self) -> str:
        """Markdown lines naming every skipped file ('' when none was skipped)."""
        if not self.skipped:
            return ""
        lines = [f"Skipped {len(self.skipped)} result file(s) (not in any table):"]
        lines += [f"- `{path}`: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


def _no_constants(name: str):
    raise ValueError(f"contains {name}, which is not JSON")


def _looks_like_result(data) -> bool:
    """Other JSON lives beside results (stage-1 and bench tables, stats): those have no model
    name together with test metrics or a run status."""
    return isinstance(data, dict) and "model" in data and ("test" in data or "status" in data)


def scan_results(folder: str) -> ResultScan:
    """All result records under ``folder`` (recursively), oldest first, and every ``.json``
    that cannot be used, with the reason: not JSON (truncated, damaged), NaN/Infinity,
    a failed run, missing or non-numeric metrics.

    ``sweeps/`` folders are skipped: they hold Ray Tune's experiment state (JSON lines,
    pickles), read by ``report`` through their ``sweep.json``.
    """
    scan = ResultScan()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != SWEEPS_DIR)
        for name in sorted(files):
            if not name.endswith(".json") or name.startswith((".tmp-", ".")):
                continue
            path = os.path.join(root, name)
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f, parse_constant=_no_constants)
            except UnicodeDecodeError as err:
                scan.skipped.append((path, f"not UTF-8 text ({err.reason})"))
                continue
            except json.JSONDecodeError as err:
                scan.skipped.append((path, f"not valid JSON, truncated or damaged ({err.msg} "
                                           f"at line {err.lineno})"))
                continue
            except ValueError as err:  # NaN / Infinity
                scan.skipped.append((path, str(err)))
                continue
            except OSError as err:
                scan.skipped.append((path, f"cannot be read ({err.strerror or err})"))
                continue
            if not _looks_like_result(data):
                continue  # other JSON living beside results (stats, bench tables)
            problem = record_problem(data)
            if problem:
                scan.skipped.append((path, problem))
                continue
            data["_path"] = path
            scan.records.append(data)
    scan.records.sort(key=lambda r: (str(r.get("finished_at", "")), r["_path"]))
    return scan


def load_results(folder: str) -> list[dict]:
    """The usable result records under ``folder``, oldest first (see ``scan_results`` for
    the files that were skipped and why)."""
    return scan_results(folder).records
