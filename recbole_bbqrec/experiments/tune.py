"""Hyper-parameter search with Ray Tune over the plugin pipeline (``run_hyper.py`` is the CLI).

A search space is a YAML file (format documented at the top of ``properties/hyper/*.yaml``):
``key: {sampler: args}`` per searched config key, an optional ``fixed:`` dict, and an optional
``one_at_a_time: true`` for the paper's Figure-3 protocol (vary one key, the rest at ``base``).

Each trial builds config -> dataset -> (stage 1) -> model -> trainer with
``quick_start.build_run``, as ``quick_start.run`` does, and reports the validation metrics
after every validation round, so
ASHA can stop weak trials early; a trial that trains to the end also reports its test metrics.
The output folder (Ray's experiment folder) receives ``trials.csv`` (one row per trial, errors
included), ``sweep.png`` (best validation NDCG@10 against each searched key) and
``sweep.json`` (what ran and where, read by ``report.py``).

GPUs: ``gpus_per_trial`` (fractions share a card: 0.25 runs four trials per GPU) is asked of
Ray with the CPUs; each trial then trains on the GPU Ray assigned to it (``ray.get_gpu_ids()``
becomes RecBole's ``gpu_id``), and a trial given no GPU trains on the CPU even on a GPU node,
so it never takes a card Ray handed to another trial.
"""

from __future__ import annotations

import math
import os
import time

from recbole_bbqrec.atomic_io import atomic_write_json
from recbole_bbqrec.experiments.search_space import SearchSpace, load_space, trial_params
from recbole_bbqrec.experiments.sweep_results import (TARGET_METRIC, plot_sweep, trial_row,
                                                      write_trials_csv)
from recbole_bbqrec.results import command_line

PATH_KEYS = ("data_path", "checkpoint_dir", "results_dir", "raw_dir")


# --- resources and devices ----------------------------------------------------------------
DEVICE_KEYS = ("use_gpu", "gpu_id")


def trial_resources(cpus_per_trial: float, gpus_per_trial: float = 0) -> dict:
    """What each trial asks Ray for: CPUs, plus a (possibly fractional) GPU share."""
    if cpus_per_trial <= 0:
        raise ValueError(f"cpus_per_trial must be > 0, got {cpus_per_trial}")
    if gpus_per_trial < 0:
        raise ValueError(f"gpus_per_trial must be >= 0, got {gpus_per_trial}")
    resources = {"cpu": cpus_per_trial}
    if gpus_per_trial:
        resources["gpu"] = gpus_per_trial
    return resources


def trial_device_keys(gpu_ids, gpus_per_trial: float = 0) -> dict:
    """RecBole's device keys for a trial Ray gave ``gpu_ids`` (``ray.get_gpu_ids()``): that
    GPU, or the CPU when the trial asked for none or got none."""
    ids = [str(i) for i in (gpu_ids or [])]
    if gpus_per_trial and ids:
        return {"use_gpu": True, "gpu_id": ",".join(ids)}
    return {"use_gpu": False, "gpu_id": ""}


# --- one trial (runs inside a Ray worker) ---------------------------------------------------
def run_trial(trial_config: dict, setup: dict, report=None) -> dict:
    """Train one configuration; call ``report(metrics)`` after each validation round.

    ``setup``: model, dataset, config_file_list, config_dict (absolute paths), argv,
    cpus, checkpoint_file. Returns the final metrics (best valid + test).
    """
    import torch
    from recbole.utils import init_logger

    from recbole_bbqrec.quick_start import build_config, build_run
    from recbole_bbqrec.results import plain_metrics
    from recbole_bbqrec.utils import disable_anomaly_detection

    report = report or (lambda metrics: None)
    torch.set_num_threads(max(1, int(setup.get("cpus", 1))))
    config_dict = {**setup["config_dict"], **trial_params(trial_config)}
    argv = setup["argv"]
    if "gpu_ids" in setup:  # inside Ray: the device is the one Ray assigned
        config_dict.update(trial_device_keys(setup["gpu_ids"], setup.get("gpus", 0)))
        argv = [a for a in argv if not a.startswith(tuple(f"--{k}=" for k in DEVICE_KEYS))]
    config = build_config(setup["model"], setup["dataset"], setup["config_file_list"],
                          config_dict, argv)
    init_logger(config)
    disable_anomaly_detection()  # Ray workers import RecBole on their own

    # stage 1 is cached by config hash under the shared (absolute) paths
    parts = build_run(config)
    trainer, train_data, valid_data, test_data = (parts.trainer, parts.train_data,
                                                  parts.valid_data, parts.test_data)
    if setup.get("checkpoint_file"):  # RecBole names checkpoints by the second: trials collide
        trainer.saved_model_file = setup["checkpoint_file"]

    last_valid = {}
    valid_epoch = trainer._valid_epoch

    def capture_valid(*args, **kwargs):  # RecBole's callback gets the score only
        score, result = valid_epoch(*args, **kwargs)
        last_valid.update(plain_metrics(result))
        return score, result

    trainer._valid_epoch = capture_valid

    def on_valid(epoch_idx, valid_score):
        report({**last_valid, "valid_score": float(valid_score), "epoch": int(epoch_idx)})

    trainer.fit(train_data, valid_data, verbose=False, saved=True, show_progress=False,
                callback_fn=on_valid)
    test_result = plain_metrics(trainer.evaluate(test_data, load_best_model=True))
    final = {**plain_metrics(trainer.best_valid_result),
             "valid_score": float(trainer.best_valid_score),
             "epoch": len(trainer.train_loss_dict) - 1,
             **{f"test_{k}": v for k, v in test_result.items()},
             "finished": 1, "checkpoint": trainer.saved_model_file}
    report(final)
    return final


def ray_trainable(trial_config: dict, setup: dict | None = None) -> None:
    """Ray Tune function trainable: ``run_trial`` reporting through ``session.report``."""
    import ray
    from ray.air import session

    setup = dict(setup)
    setup["gpu_ids"] = ray.get_gpu_ids()  # the GPU(s) Ray assigned to this trial, or []
    trial_id = session.get_trial_id()
    setup["checkpoint_file"] = os.path.join(setup["trial_checkpoint_dir"],
                                            f"{setup['model']}-{trial_id}.pth")
    run_trial(trial_config, setup, report=session.report)


# --- the driver -------------------------------------------------------------------------
def prepare_setup(model, dataset, space: SearchSpace, config_file_list=None, config_dict=None,
                  argv=None, epochs=None, output_dir=None) -> dict:
    """Check the space against the config and resolve every path before Ray moves cwd."""
    from recbole_bbqrec.config import known_config_keys
    from recbole_bbqrec.quick_start import build_config, ensure_dataset

    argv = list(argv or [])
    searched = set(space.keys)
    given = {a[2:].split("=", 1)[0] for a in argv if a.startswith("--") and "=" in a}
    clash = sorted(searched & given)
    if clash:  # the command line outranks the config dict, so it would pin the key
        raise ValueError(f"{clash} are searched in {space.path} and also given on the command "
                         f"line; drop them from the command line or from the space.")
    unknown = sorted((searched | set(space.fixed)) - known_config_keys())
    if unknown:
        raise ValueError(f"{space.path}: {unknown} are not defined by any RecBole or "
                         f"recbole_bbqrec YAML (misspelt? a model's keys live in "
                         f"properties/model/<Model>.yaml)")
    config_dict = {**(config_dict or {}), **space.fixed}
    if epochs is not None:
        config_dict["epochs"] = int(epochs)
    files = [os.path.abspath(p) for p in config_file_list or []]
    config = build_config(model, dataset, files, config_dict, argv)
    ensure_dataset(config)  # once here, not racing in every trial
    resolved = dict(config_dict)
    root = config.external_config_dict.get("data_path", config.internal_config_dict["data_path"])
    resolved["data_path"] = os.path.abspath(root)
    for key in ("checkpoint_dir", "results_dir", "raw_dir"):
        if config[key]:
            resolved[key] = os.path.abspath(config[key])
    resolved["show_progress"] = False
    return {"model": config["model"], "dataset": config["dataset"], "config_file_list": files,
            "config_dict": resolved, "argv": [a for a in argv if not a.startswith(
                tuple(f"--{k}=" for k in PATH_KEYS))],
            "epochs": int(config["epochs"]), "eval_step": max(1, int(config["eval_step"])),
            "trial_checkpoint_dir": os.path.join(os.path.abspath(output_dir), "checkpoints")}


def init_ray(address: str | None = None, num_cpus: int | None = None, verbose: bool = True) -> bool:
    """Connect to ``address`` (``auto``, ``ray://host:10001``) or start a local Ray.

    Returns whether this call started Ray (and so should shut it down).
    """
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=verbose)
    else:
        # Ray starts trial workers at nice 15: beside any other job on the machine (a training,
        # a test run) the trials would get almost no CPU. Local trials run at normal priority.
        os.environ.setdefault("RAY_worker_niceness", "0")  # read by the raylet
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 log_to_driver=verbose, configure_logging=False)
    return True


def run_search(model, dataset, space_path, config_file_list=None, config_dict=None, argv=None,
               num_samples=1, max_concurrent=None, output_dir=None, address=None,
               resume=False, epochs=None, cpus_per_trial=1, num_cpus=None, grace_period=1,
               reduction_factor=3, scheduler="asha", max_failures=0, verbose=1,
               gpus_per_trial=0) -> dict:
    """Run (or resume) a search; write trials.csv, sweep.png, sweep.json; return the summary."""
    from ray import air, tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    space = load_space(space_path)
    name = f"{model}-{dataset}-{os.path.splitext(os.path.basename(space_path))[0]}"
    output_dir = os.path.abspath(output_dir or os.path.join("ray_results", name))
    setup = prepare_setup(model, dataset, space, config_file_list, config_dict, argv, epochs,
                          output_dir)
    resources = trial_resources(cpus_per_trial, gpus_per_trial)
    setup["cpus"], setup["gpus"] = cpus_per_trial, gpus_per_trial
    started = init_ray(address, num_cpus, verbose=verbose > 0)
    try:
        trainable = tune.with_resources(tune.with_parameters(ray_trainable, setup=setup),
                                        resources)
        if resume:
            if not os.path.isdir(output_dir):
                raise FileNotFoundError(f"--resume: no experiment at {output_dir}")
            tuner = tune.Tuner.restore(output_dir, trainable, resume_errored=True)
        else:
            rounds = math.ceil(setup["epochs"] / setup["eval_step"]) + 1  # + the final report
            sched = (ASHAScheduler(time_attr="training_iteration", max_t=rounds,
                                   grace_period=min(grace_period, rounds),
                                   reduction_factor=reduction_factor)
                     if scheduler == "asha" else FIFOScheduler())
            tuner = tune.Tuner(
                trainable, param_space=space.ray_space(),
                tune_config=tune.TuneConfig(metric=TARGET_METRIC, mode="max", scheduler=sched,
                                            num_samples=num_samples,
                                            max_concurrent_trials=max_concurrent),
                run_config=air.RunConfig(name=os.path.basename(output_dir),
                                         storage_path=os.path.dirname(output_dir),
                                         failure_config=air.FailureConfig(max_failures=max_failures),
                                         verbose=verbose))
        grid = tuner.fit()
        rows = [trial_row(result, space) for result in grid]
    finally:
        if started:
            import ray

            ray.shutdown()
    rows.sort(key=lambda r: r["trial"])
    csv_path = os.path.join(output_dir, "trials.csv")
    write_trials_csv(rows, space.keys, csv_path)
    plot_path = plot_sweep(rows, space, os.path.join(output_dir, "sweep.png"),
                           title=f"{setup['model']} on {setup['dataset']}")
    ok = [r for r in rows if isinstance(r.get(TARGET_METRIC), float)]
    summary = {"model": setup["model"], "dataset": setup["dataset"], "space": space_path,
               "searched": space.keys, "one_at_a_time": space.one_at_a_time,
               "fixed": space.fixed, "epochs": setup["epochs"],
               "command": command_line(), "output_dir": output_dir, "csv": csv_path,
               "plot": plot_path, "n_trials": len(rows),
               "n_errors": sum(r["status"] == "ERROR" for r in rows),
               "best": max(ok, key=lambda r: r[TARGET_METRIC]) if ok else None,
               "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(os.path.join(output_dir, "sweep.json"), summary)
    return summary
