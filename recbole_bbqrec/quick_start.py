"""The one pipeline behind the CLI, Ray Tune, ``recommend.py``, the benchmarks and tests.

``build_run(config)`` builds a run's pieces in the order that fixes its random numbers: seed
-> RecBole dataset and leave-one-out split -> stage 1 (semantic IDs, for models whose dataset
serves them) -> reseed -> model -> trainer. Every caller goes through it and keeps only what
is its own: ``run()`` fits, tests and writes the results JSON; ``experiments/tune.py``
reports to Ray; ``recommend.py`` loads weights; ``bench/train_speed.py`` times steps.

``run()``: config -> (preprocess if the atomic files are missing) -> ``build_run`` -> fit with
early stopping on validation -> test with RecBole's evaluator -> results JSON. ``--stage``
stops early: ``preprocess``, ``tokenizer`` (stage 1 only), ``all``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from logging import getLogger

import torch
from recbole.data import data_preparation
from recbole.utils import init_logger, set_color

from recbole_bbqrec import distributed
from recbole_bbqrec.config import Config
from recbole_bbqrec.errors import ConfigError, RunFailedError, StaleDatasetError
from recbole_bbqrec.results import (command_line, peak_rss_mb, plain_metrics,
                                    write_result)
from recbole_bbqrec.trainer import get_trainer
from recbole_bbqrec.utils import (create_dataset, create_run_dirs, disable_anomaly_detection,
                                  get_model, init_seed_and_determinism)

STAGES = ("all", "preprocess", "tokenizer")


def ensure_dataset(config) -> dict | None:
    """Run the preprocessing pipeline when ``config['data_path']`` lacks the dataset (or
    ``stage=preprocess`` asks for a rebuild); a ready dataset that is stale for this config
    stops the run (``check_not_stale``)."""
    from recbole_bbqrec.preprocess import dataset_ready, preprocess_dataset

    name = config["dataset"]
    out_dir = os.path.dirname(os.path.normpath(config["data_path"]))
    if dataset_ready(name, out_dir) and config["stage"] != "preprocess":
        check_not_stale(name, out_dir, config["raw_dir"], config["text_model"])
        return None
    getLogger().info(set_color("preprocess", "green") + f": building {name} under {out_dir}")
    return preprocess_dataset(name, out_dir=out_dir, raw_dir=config["raw_dir"],
                              text_model=config["text_model"],
                              show_progress=config["show_progress"],
                              min_meta_coverage=config["min_meta_coverage"])


def check_not_stale(name: str, out_dir: str, raw_dir: str | None,
                    text_model: str | None) -> None:
    """Stop when the ready dataset was built from other raw files, another text model or an
    older file format. It is not rebuilt here: another run may be reading it right now;
    ``--stage=preprocess`` rebuilds it."""
    import json

    from recbole_bbqrec.layout import dataset_dir, output_file
    from recbole_bbqrec.preprocess.locate import locate_source
    from recbole_bbqrec.preprocess.provenance import describe_stale, stale_reasons

    with open(output_file(out_dir, name, "stats.json"), encoding="utf-8") as f:
        stats = json.load(f)
    try:
        source = locate_source(name, out_dir, raw_dir)
    except FileNotFoundError:  # preprocessed files without their raw files: nothing to compare
        getLogger().info(f"{name}: raw files not found; using the preprocessed files as they are")
        return
    reasons = stale_reasons(stats, source, text_model)
    if reasons:
        raise StaleDatasetError(describe_stale(name, dataset_dir(out_dir, name), reasons))


def build_config(model=None, dataset=None, config_file_list=None, config_dict=None,
                 argv=None) -> Config:
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list,
                    config_dict=config_dict, argv=argv)
    if config["stage"] == "generator":  # it used to be accepted and ran every stage
        raise ConfigError("stage=generator does not exist: use stage=all, which reuses cached "
                          "stage-1 IDs (an unchanged stage-1 config never retrains).")
    if config["stage"] not in STAGES:
        raise ConfigError(f"stage must be one of {STAGES}, got {config['stage']!r}")
    create_run_dirs(config)  # before RecBole's racy ensure_dir in parallel ranks and trials
    return config


@dataclass
class RunParts:
    """What ``build_run`` made. ``train_data`` ... ``stage1`` are None without a split;
    ``model`` and ``trainer`` are None after ``stage=tokenizer`` (and ``trainer`` when not
    asked for)."""

    config: Config
    dataset: object                 # the filtered RecBole dataset
    train_data: object = None       # RecBole's data loaders
    valid_data: object = None
    test_data: object = None
    stage1: dict | None = None      # stage-1 summary (hash, files, reused ...)
    stage1_s: float | None = None   # its wall-clock seconds in this process
    model: object = None
    trainer: object = None


def build_run(config: Config, split: bool = True, trainer: bool = True) -> RunParts:
    """seed -> dataset -> split -> stage 1 -> reseed -> model -> trainer.

    split=False (inference): no split and no stage 1 (the run's stage-1 files must exist:
    the model reads them); the model is built on the whole dataset. trainer=False: no
    trainer. ``config['stage'] == 'tokenizer'`` stops after stage 1.
    """
    init_seed_and_determinism(config["seed"], config["reproducibility"])
    parts = RunParts(config, create_dataset(config))
    model_dataset = parts.dataset
    if split:
        parts.train_data, parts.valid_data, parts.test_data = data_preparation(config, parts.dataset)
        model_dataset = parts.train_data._dataset
    model_class = get_model(config["model"])
    prepare_stage1 = getattr(model_dataset, "prepare_stage1", None)
    if split and callable(prepare_stage1):  # generative models: IDs first (cached by hash)
        t0 = time.time()
        with distributed.rank_zero_first(config):  # under --nproc: trained once, on rank 0
            parts.stage1 = prepare_stage1()  # on the TRAINING split
        parts.stage1_s = round(time.time() - t0, 2)
        if config["stage"] == "tokenizer":
            return parts
    # every rank draws its own dropout masks, as RecBole seeds its DDP ranks
    init_seed_and_determinism(config["seed"] + config["local_rank"], config["reproducibility"])
    parts.model = model_class(config, model_dataset).to(config["device"])
    if trainer:
        parts.trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, parts.model)
    return parts


def run(model=None, dataset=None, config_file_list=None, config_dict=None, argv=None,
        saved: bool = True, verbose: bool = True) -> dict:
    """Train and test one model on one dataset; return the record written to ``results/``.

    Args:
        model, dataset, config_file_list, config_dict: as for RecBole's ``run_recbole``.
        argv: ``--key=value`` command-line arguments (the CLI passes ``sys.argv[1:]``).
        saved: keep the best checkpoint and test with it (RecBole's meaning).
        verbose: log per-epoch progress.
    """
    config = build_config(model, dataset, config_file_list, config_dict, argv)
    # preprocessing (below, when the files are missing) runs seeded and deterministic too
    init_seed_and_determinism(config["seed"], config["reproducibility"])
    init_logger(config)
    disable_anomaly_detection()
    if config["torch_threads"]:
        torch.set_num_threads(int(config["torch_threads"]))
    logger = getLogger()
    if config.unknown_keys:
        logger.warning(f"Unknown config key(s) {config.unknown_keys} were ignored.")
    logger.info(config)

    stats = ensure_dataset(config)
    if config["stage"] == "preprocess":
        return {"dataset": config["dataset"], "stage": "preprocess", "stats": stats}

    parts = build_run(config)
    record = {"model": config["model"], "label": run_label(config), "dataset": config["dataset"],
              "command": command_line()}
    if parts.stage1 is not None:
        record["stage1"], record["stage1_s"] = parts.stage1, parts.stage1_s
    if parts.model is None:  # --stage=tokenizer
        return record
    model, trainer = parts.model, parts.trainer
    train_data, valid_data, test_data = parts.train_data, parts.valid_data, parts.test_data
    logger.info(model)
    trainer.charge(stage1_cost(record.get("stage1"), trainer.clock.kind))
    # RecBole names checkpoints by the second; parallel runs (Ray, compare --run) need more.
    trainer.saved_model_file = os.path.join(
        trainer.checkpoint_dir, f"{run_label(config)}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.pth")
    trainer.saved_model_file = distributed.same_on_all_ranks(config, trainer.saved_model_file)

    t0 = time.time()
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, verbose=verbose, saved=saved, show_progress=config["show_progress"])
    train_s = time.time() - t0
    distributed.barrier(config)  # rank 0's best checkpoint is on disk before any rank tests
    if not best_valid_result or not math.isfinite(float(best_valid_score)):
        # No validation score: no checkpoint was chosen, so a test number would mean nothing.
        record.update({
            "config": config.plain_dict(), "status": "failed",
            "failure": (f"no validation score after training (best_valid_score="
                        f"{best_valid_score}); nothing chose a checkpoint to test"),
            "valid": plain_metrics(best_valid_result), "best_valid_score": None,
            "epochs_trained": len(trainer.train_loss_dict), "train_s": round(train_s, 2),
            "peak_rss_mb": peak_rss_mb(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        path = (write_result(config["results_dir"], record)
                if distributed.is_main(config) else None)  # one writer under --nproc
        raise RunFailedError(f"{record['label']} on {config['dataset']} ended without a "
                             f"validation score, so it is not a result; recorded as failed "
                             f"in {path}. Check eval_step, epochs and the validation split.")
    t0 = time.time()
    test_result = trainer.evaluate(test_data, load_best_model=saved,
                                   show_progress=config["show_progress"])
    eval_s = time.time() - t0
    beams = beam_diagnostics(config, model, test_data)
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")

    record.update({
        "config": config.plain_dict(),
        "valid": plain_metrics(best_valid_result),
        "test": plain_metrics(test_result),
        "best_valid_score": float(best_valid_score),  # finite: checked above
        "epochs_trained": len(trainer.train_loss_dict),
        "train_s": round(train_s, 2),
        "eval_s": round(eval_s, 2),
        "peak_rss_mb": peak_rss_mb(),
        "checkpoint": trainer.saved_model_file if saved else None,
        "budget": trainer.budget_summary(),
        "curve": trainer.curve,
        "model_diagnostics": model.diagnostics() if hasattr(model, "diagnostics") else {},
        "beam_diagnostics": beams,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    record["result_file"] = None if not distributed.is_main(config) else write_result(
        config["results_dir"], record, per_user=getattr(trainer, "last_per_user", None))
    if record.get("status") == "failed":  # e.g. a NaN test metric: kept, but never a result
        raise RunFailedError(f"{record['label']} on {config['dataset']} is not a result: "
                             f"{record['failure']}; recorded as failed in {record['result_file']}.")
    return record


def beam_diagnostics(config, model, test_data) -> dict:
    """Generative models: per decoding step, the share of test users whose target prefix is
    still in the test beam (``beam_diagnostics_users`` users; 0 = skip)."""
    users = config["beam_diagnostics_users"]
    if not users or not hasattr(model, "prefix_index"):
        return {}
    from recbole_bbqrec.beam_diagnostics import beam_report

    return beam_report(model, test_data, model.beam_size, int(users))


def stage1_cost(summary: dict | None, clock: str) -> float:
    """Seconds of stage 1 that a time budget charges: the CPU seconds its JSON records (also
    when the IDs were reused), or its wall-clock training time for a wall clock. IDs from
    before ``cpu_s`` was recorded fall back on ``train_s``."""
    if not summary:
        return 0.0
    if clock == "process" and summary.get("cpu_s") is not None:
        return float(summary["cpu_s"])
    return float(summary.get("train_s") or 0.0)


def run_label(config) -> str:
    """Name of a run in tables and file names: the model, plus ``run_tag`` when set."""
    tag = config["run_tag"]
    return f"{config['model']}-{tag}" if tag else config["model"]
