"""A Ray Tune search space read from YAML (``properties/hyper/*.yaml``), checked key by key.

``key: {sampler: args}`` per searched config key, an optional ``fixed:`` dict, and an optional
``one_at_a_time: true`` for the paper's Figure-3 protocol (vary one key, the rest at ``base``),
whose trials carry their whole point under ``POINT_KEY``. ``tune.py`` runs the search;
``sweep_results.py`` reads the space back to redraw a finished sweep.
"""

from __future__ import annotations

import os
import re

import yaml

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def parse_number(value):
    """A number written as text (YAML 1.1 reads ``1e-4`` as a string; CSV cells are text)
    becomes an int or float; anything else is returned unchanged."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return int(value) if re.fullmatch(r"[+-]?\d+", value.strip()) else float(value)
    return value


POINT_KEY = "point"  # one_at_a_time spaces: the whole trial config lives under this key


def trial_params(trial_config: dict) -> dict:
    """The searched values of one trial, flat (undoes the one_at_a_time nesting)."""
    if POINT_KEY in trial_config and isinstance(trial_config[POINT_KEY], dict):
        rest = {k: v for k, v in trial_config.items() if k != POINT_KEY}
        return {**trial_config[POINT_KEY], **rest}
    return dict(trial_config)


SAMPLERS = ("choice", "grid", "uniform", "loguniform", "quniform", "randint", "qrandint")


class SearchSpace:
    """A parsed space file: searched keys, their samplers, fixed values, protocol."""

    def __init__(self, path: str, params: dict, fixed: dict, one_at_a_time: bool):
        self.path, self.params, self.fixed, self.one_at_a_time = path, params, fixed, one_at_a_time

    @property
    def keys(self) -> list[str]:
        return list(self.params)

    def points(self) -> list[dict]:
        """one_at_a_time: the base point, then each other value of one key at a time."""
        base = {key: spec["base"] for key, spec in self.params.items()}
        points = [dict(base)]
        for key, spec in self.params.items():
            points += [{**base, key: value} for value in spec["values"] if value != spec["base"]]
        return points

    def ray_space(self) -> dict:
        from ray import tune

        if self.one_at_a_time:
            return {POINT_KEY: tune.grid_search(self.points())}
        space = {}
        for key, spec in self.params.items():
            kind, args = spec["kind"], spec["args"]
            if kind == "grid":
                space[key] = tune.grid_search(spec["values"])
            elif kind == "choice":
                space[key] = tune.choice(spec["values"])
            else:
                space[key] = getattr(tune, kind)(*args)
        return space

    def is_log(self, key: str) -> bool:
        return self.params[key]["kind"] == "loguniform"


def load_space(path: str) -> SearchSpace:
    """Parse a space file; every mistake names the file and the key."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Search space file not found: {path}")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys to samplers")
    fixed = data.pop("fixed", None) or {}
    one_at_a_time = bool(data.pop("one_at_a_time", False))
    if not isinstance(fixed, dict):
        raise ValueError(f"{path}: `fixed` must be a mapping of config keys to values")
    params = {}
    for key, spec in data.items():
        sampler = [k for k in (spec or {}) if k in SAMPLERS] if isinstance(spec, dict) else []
        if len(sampler) != 1 or set(spec) - {sampler[0], "base"}:
            raise ValueError(f"{path}: key {key!r} needs exactly one sampler of {SAMPLERS} "
                             f"(plus an optional `base`), got {spec!r}")
        kind, args = sampler[0], spec[sampler[0]]
        if not isinstance(args, list) or not args:
            raise ValueError(f"{path}: {key}.{kind} needs a non-empty list, got {args!r}")
        args = [parse_number(a) for a in args]
        entry = {"kind": kind, "args": args, "values": args if kind in ("choice", "grid") else None}
        if kind not in ("choice", "grid"):
            expected = 3 if kind.startswith("q") else 2
            if len(args) != expected or not all(isinstance(a, (int, float)) for a in args):
                raise ValueError(f"{path}: {key}.{kind} needs {expected} numbers, got {args!r}")
            if kind == "loguniform" and min(args[:2]) <= 0:
                raise ValueError(f"{path}: {key}.loguniform bounds must be > 0, got {args!r}")
        if "base" in spec:
            entry["base"] = parse_number(spec["base"])
        if one_at_a_time:
            if kind not in ("choice", "grid") or "base" not in entry:
                raise ValueError(f"{path}: one_at_a_time needs `grid`/`choice` values and a "
                                 f"`base` for every key; {key!r} has {spec!r}")
            if entry["base"] not in args:
                raise ValueError(f"{path}: {key}.base={entry['base']!r} is not one of {args!r}")
        params[key] = entry
    if not params:
        raise ValueError(f"{path}: no searched keys (write e.g. `hidden_size: {{grid: [32, 64]}}`)")
    overlap = set(params) & set(fixed)
    if overlap:
        raise ValueError(f"{path}: {sorted(overlap)} are both searched and fixed")
    return SearchSpace(path, params, fixed, one_at_a_time)
