"""Checks of a final config that stop a run before any work when it cannot produce a result.

Today's failure modes these close: ``epochs=0`` trains nothing and leaves a result with a
``-Infinity`` validation score; ``eval_step > epochs`` never validates (no checkpoint can be
chosen); a negative or zero size crashes deep inside torch (or silently builds an empty
layer); a beam narrower than ``max(topk)`` fails only after stage 1 trained; a ``run_tag`` or
dataset name with ``/`` or ``..`` writes results and checkpoints outside their folders.

Sizes are recognised by name (``*_size``, ``*_dim``, ``n_*`` ...), so a key a model YAML adds
later is checked without being listed here.
"""

from __future__ import annotations

import math
import os
import re
from numbers import Real

from recbole_bbqrec.errors import ConfigError

# Names of integer sizes/counts that must be >= 1 (a model YAML's new keys match these too).
_SIZE_NAME = re.compile(r"(_size|_dim|_layers|_heads|epochs|_steps_per_epoch|_buckets|_levels"
                        r"|_LENGTH)$|^(n|d)_")
# RecBole keys matching the pattern whose negative values mean something (FEARec's facets).
_SIZE_EXCEPTIONS = {"n_facet_MLP", "n_facet_window", "world_size"}  # world_size -1: = nproc
# Sizes that may not be None either: RecBole does arithmetic on them unconditionally.
_REQUIRED_SIZES = ("epochs", "train_batch_size", "eval_batch_size", "MAX_ITEM_LIST_LENGTH")
# Learning rates: every key named like one must be a positive, finite number.
_RATE_NAME = re.compile(r"(^|_)(learning_rate|lr)$")
# Config values that become file or folder names (results/<dataset>/<model>-<run_tag>-....json).
PATH_NAME_KEYS = ("model", "dataset", "run_tag")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


# Keys a RecBole model passes to eval() itself (KD_DAGFM: ``eval(config['teacher'])``): a bare
# class name is looked up, anything else would run as code when the model is built.
EVALUATED_BY_RECBOLE = ("teacher",)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_evaluated_names(config: dict) -> None:
    for key in EVALUATED_BY_RECBOLE:
        value = config.get(key)
        if value is not None and not (isinstance(value, str) and _IDENTIFIER.fullmatch(value)):
            raise ConfigError(f"{key}={value!r} must be a bare model name (RecBole evaluates "
                              f"it as Python), e.g. CrossNet.")


def check_path_name(key: str, value) -> None:
    """``value`` becomes part of a file name: no separators, no ``..``, nothing empty."""
    if value is None or not isinstance(value, str):
        return  # model classes, None run_tag: nothing to check
    bad = [sep for sep in {"/", "\\", os.sep, os.altsep} if sep and sep in value]
    if bad or ".." in value or "\x00" in value or value.strip() in ("", "."):
        raise ConfigError(f"{key}={value!r} cannot be used: it becomes part of a file or folder "
                          f"name, so it may not be empty or contain '/', '\\' or '..'. Use "
                          f"letters, digits, '_', '-' and '.'.")


def check_sizes(config: dict) -> None:
    """Every size-like integer is >= 1; required ones are present."""
    for key, value in config.items():
        if not _SIZE_NAME.search(key) or key in _SIZE_EXCEPTIONS:
            continue
        if value is None:
            if key in _REQUIRED_SIZES:
                raise ConfigError(f"{key} must be an integer >= 1, got None.")
            continue
        if isinstance(value, (list, tuple, dict)):
            continue  # layer-width lists (tokenizer_hidden, mlp_hidden_size ...)
        if not _is_int(value):
            raise ConfigError(f"{key} must be an integer >= 1, got {value!r} "
                              f"({type(value).__name__}).")
        if value < 1:
            raise ConfigError(f"{key} must be an integer >= 1, got {value}"
                              + (" (a run that does not train is not a result)."
                                 if key == "epochs" else "."))


def check_rates(config: dict) -> None:
    """Learning rates are numbers in (0, inf)."""
    for key, value in config.items():
        if not _RATE_NAME.search(key) or value is None:
            continue
        if not isinstance(value, Real) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a number > 0 (e.g. 0.001), got {value!r} "
                              f"({type(value).__name__}).")
        if not math.isfinite(float(value)) or value <= 0:
            raise ConfigError(f"{key} must be a finite number > 0, got {value!r}.")


ID_LAYOUTS = ("tuple", "flat")  # the model's id_layout values (checked here, before any work)


def check_stage_choices(config: dict) -> None:
    """The generator's ID layout is known; the stage-1 usage term has a usable weight and
    temperature (before any stage-1 work is spent)."""
    layout = config.get("id_layout")
    if layout is not None and layout not in ID_LAYOUTS:
        raise ConfigError(f"id_layout must be one of {ID_LAYOUTS}, got {layout!r}.")
    for key, low, strict in (("code_usage_weight", 0.0, False), ("code_usage_temperature", 0.0, True)):
        value = config.get(key)
        if value is None:
            continue
        if not _is_finite_number(value) or value < low or (strict and value == low):
            raise ConfigError(f"{key} must be a finite number {'>' if strict else '>='} {low:g}, "
                              f"got {value!r}.")


# Switches read as plain booleans by the model (None: the YAML default applies).
BOOL_KEYS = ("onednn_inference",)


def check_switches(config: dict) -> None:
    """Boolean switches are booleans: ``--onednn_inference=no`` is a typo, not False."""
    for key in BOOL_KEYS:
        value = config.get(key)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{key} must be True or False, got {value!r}.")


def max_topk(config: dict) -> int | None:
    topk = config.get("topk")
    if _is_int(topk):
        return topk
    if isinstance(topk, (list, tuple)) and topk and all(_is_int(k) for k in topk):
        return max(topk)
    return None


def check_validation(config: dict) -> None:
    """Validation runs at least once (it picks the checkpoint the test uses)."""
    eval_step, epochs = config.get("eval_step"), config.get("epochs")
    if eval_step is None:
        return
    if not _is_int(eval_step) or eval_step < 1:
        raise ConfigError(f"eval_step must be an integer >= 1 (validate every eval_step epochs; "
                          f"validation chooses the checkpoint), got {eval_step!r}.")
    if _is_int(epochs) and eval_step > epochs:
        raise ConfigError(f"eval_step={eval_step} > epochs={epochs}: no validation would run, so "
                          f"no checkpoint could be chosen. Set eval_step <= epochs.")


def check_beams(config: dict) -> None:
    """Generative models keep at least max(topk) beams (a beam ranks only what it keeps)."""
    top = max_topk(config)
    if top is None:
        return
    for key in ("beam_size", "valid_beam_size"):
        beam = config.get(key)
        if beam is None:
            continue
        if not _is_int(beam) or beam < top:
            raise ConfigError(f"{key}={beam!r} is smaller than max(topk)={top}: a beam search "
                              f"cannot rank more items than it keeps. Set {key} >= {top}.")


def check_budget(config: dict) -> None:
    """``time_budget`` is a positive number of minutes (or None); ``budget_clock`` is known."""
    from recbole_bbqrec.budget import CLOCKS

    minutes = config.get("time_budget")
    if minutes is not None and (not _is_finite_number(minutes) or minutes <= 0):
        raise ConfigError(f"time_budget must be a number of minutes > 0 (or None for no "
                          f"budget), got {minutes!r}.")
    nproc = config.get("nproc")
    if minutes is not None and _is_int(nproc) and nproc > 1:
        # each rank would stop at its own batch and the others wait in an all-reduce until
        # ddp_timeout: the stop decision is not yet broadcast from rank 0
        raise ConfigError("time_budget is not supported with nproc > 1 yet; run the budget "
                          "comparison in one process per model.")
    clock = config.get("budget_clock")
    if clock is not None and clock not in CLOCKS:
        raise ConfigError(f"budget_clock must be one of {CLOCKS}, got {clock!r}.")


def check_devices(config: dict) -> None:
    """Mixed precision, NaN-check interval, learning-rate schedule and torch.distributed keys."""
    from recbole_bbqrec.device import AMP_DTYPES
    from recbole_bbqrec.schedule import LR_DECAYS

    amp_dtype = config.get("amp_dtype")
    if amp_dtype is not None and amp_dtype not in AMP_DTYPES:
        raise ConfigError(f"amp_dtype must be one of {AMP_DTYPES}, got {amp_dtype!r}.")
    decay, floor = config.get("lr_decay"), config.get("lr_min_ratio")
    if decay is not None and decay not in LR_DECAYS:
        raise ConfigError(f"lr_decay must be one of {LR_DECAYS}, got {decay!r}.")
    if floor is not None and (not _is_finite_number(floor) or not 0 <= floor <= 1):
        raise ConfigError(f"lr_min_ratio must be a number in [0, 1], got {floor!r}.")
    for key, low in (("nan_check_steps", 0), ("warmup_steps", 0), ("nproc", 1),
                     ("ddp_timeout", 1), ("offset", 0)):
        value = config.get(key)
        if value is not None and (not _is_int(value) or value < low):
            raise ConfigError(f"{key} must be an integer >= {low}, got {value!r}.")
    world_size, nproc = config.get("world_size"), config.get("nproc")
    if _is_int(world_size) and world_size > 0 and _is_int(nproc) and world_size < nproc:
        raise ConfigError(f"world_size={world_size} is smaller than nproc={nproc}: world_size "
                          f"counts the processes of all nodes (-1: nproc, one node).")


def check_config(config: dict) -> None:
    """All checks above on a final config dict; raises ``ConfigError`` naming the key."""
    for key in PATH_NAME_KEYS:
        check_path_name(key, config.get(key))
    check_evaluated_names(config)
    check_sizes(config)
    check_rates(config)
    check_validation(config)
    check_beams(config)
    check_stage_choices(config)
    check_switches(config)
    check_devices(config)
    check_budget(config)
