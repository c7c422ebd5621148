"""Semantic IDs: collision counting and fixing, the stage-1 cache key, and the .sid / .zq.npy formats.

An ID is codes[i] of shape [L, S]: L positions, position l holding one code per signal.
Collision fixing keeps the length L (so the stage-2 generator is unchanged): in each group of
items sharing a full ID, the item closest to its codes keeps the ID and every other item
moves ONE signal's LAST-level code to the cheapest alternative (smallest increase of squared
distance to its last residual) that no other item holds. Only the last level changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from recbole_bbqrec.atomic_io import atomic_save_npy, atomic_write_text


def _check_codes(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 3 or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be an integer array [n_items, L, S], got {codes.dtype} {codes.shape}")
    return codes


class CollisionError(ValueError):
    """Stage-1 IDs that cannot be made unique at this L/N; keeps the paper's Table-5 count."""

    def __init__(self, reason: str, raw_collisions: int, n_items: int):
        super().__init__(f"{reason} ({raw_collisions} of {n_items} items collided before "
                         f"uniqueness)")
        self.raw_collisions, self.n_items = raw_collisions, n_items


def count_collisions(codes: np.ndarray) -> int:
    """Number of items whose full ID is shared with at least one other item (paper Table 5)."""
    codes = _check_codes(codes)
    if len(codes) == 0:
        return 0
    _, inverse, counts = np.unique(codes.reshape(len(codes), -1), axis=0, return_inverse=True, return_counts=True)
    return int((counts[inverse.reshape(-1)] > 1).sum())


def make_unique(codes: np.ndarray, last_distances: np.ndarray) -> np.ndarray:
    """Collision-free copy of codes [n, L, S]; last_distances [n, S, N] are the squared
    distances of each item's last-level residual to every last-level code, per signal.

    Raises ValueError when an item finds no free last-level code (all S * (N-1) alternatives
    under its prefix are taken): use a larger codebook (N) or more levels (L)."""
    codes = _check_codes(codes).astype(np.int64, copy=True)
    n, levels, n_signals = codes.shape
    last_distances = np.asarray(last_distances, dtype=np.float64)
    if last_distances.ndim != 3 or last_distances.shape[:2] != (n, n_signals):
        raise ValueError(f"last_distances must be [n={n}, S={n_signals}, N], got {last_distances.shape}")
    n_codes = last_distances.shape[2]
    if codes.size and (codes.min() < 0 or codes.max() >= n_codes):
        raise ValueError(f"codes must lie in [0, {n_codes}) to match last_distances")
    flat = [tuple(row) for row in codes.reshape(n, -1)]
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(flat):
        groups.setdefault(key, []).append(i)
    taken = set(groups)
    last = codes[:, -1, :]  # [n, S]
    current_cost = last_distances[np.arange(n)[:, None], np.arange(n_signals)[None, :], last].sum(1)  # [n]
    for key in sorted(k for k, members in groups.items() if len(members) > 1):
        members = sorted(groups[key], key=lambda i: (current_cost[i], i))
        for item in members[1:]:  # the best-fitting item keeps the ID
            base = last_distances[item, np.arange(n_signals), last[item]]  # [S]
            extra = last_distances[item] - base[:, None]  # [S, N] cost of each move
            extra[np.arange(n_signals), last[item]] = np.inf
            moved = False
            for pos in np.argsort(extra, axis=None, kind="stable"):
                sig, code = divmod(int(pos), n_codes)
                if not np.isfinite(extra[sig, code]):
                    break
                candidate = codes[item].copy()
                candidate[-1, sig] = code
                cand_key = tuple(candidate.reshape(-1))
                if cand_key not in taken:
                    codes[item], moved = candidate, True
                    taken.add(cand_key)
                    break
            if not moved:
                raise ValueError(
                    f"cannot make item {item}'s semantic ID unique: every last-level code under its prefix "
                    f"{codes[item, :-1].tolist()} is taken (N={n_codes}, L={levels}); use a larger "
                    "codebook_size N or more levels L"
                )
    return codes


def _canonical(obj):
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"stage1_hash: {type(obj).__name__} is not JSON-like; pass a fingerprint string instead")


def stage1_hash(params: dict) -> str:
    """Short sha256 of a canonical JSON of the stage-1 config and input fingerprints."""
    text = json.dumps(_canonical(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def fingerprint_array(array: np.ndarray) -> str:
    """Content hash of an array (shape, dtype and bytes), for stage1_hash inputs."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.shape}|{array.dtype}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def sid_columns(n_levels: int, signal_names: Sequence[str]) -> list[str]:
    return [f"l{level + 1}_{sig}" for level in range(n_levels) for sig in signal_names]


def write_sid_file(path: str | os.PathLike, item_tokens: Sequence[str], codes: np.ndarray, signal_names: Sequence[str]) -> None:
    """TSV: header ``item_id:token  l1_<sig> ...`` (level-major, signal-minor), one row per item."""
    codes = _check_codes(codes)
    if len(item_tokens) != len(codes) or codes.shape[2] != len(signal_names):
        raise ValueError(
            f"write_sid_file: {len(item_tokens)} item tokens, codes {codes.shape}, signals {list(signal_names)} disagree"
        )
    bad = [t for t in item_tokens if not str(t) or any(c in str(t) for c in "\t\n\r")]
    if bad:
        raise ValueError(f"write_sid_file: item tokens must be non-empty without tabs/newlines, e.g. {bad[:3]!r}")
    lines = ["\t".join(["item_id:token", *sid_columns(codes.shape[1], signal_names)])]
    for token, row in zip(item_tokens, codes.reshape(len(codes), -1)):
        lines.append("\t".join([str(token), *map(str, row.tolist())]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_sid_file(path: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str]]:
    """(item_tokens, codes [n, L, S] int64, signal_names) from a file written by write_sid_file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"semantic-ID file {path} does not exist (run stage 1 first)")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise ValueError(f"{path}: empty semantic-ID file")
    header = lines[0].split("\t")
    if header[0] != "item_id:token" or len(header) < 2:
        raise ValueError(f"{path}: header must start with 'item_id:token' and list code columns, got {header[:4]}")
    names = header[1:]
    first_level = [c.split("_", 1)[1] for c in names if c.startswith("l1_")]
    n_signals = len(first_level)
    if n_signals == 0 or len(names) % n_signals:
        raise ValueError(f"{path}: code columns {names} do not form L x S blocks")
    n_levels = len(names) // n_signals
    if names != sid_columns(n_levels, first_level):
        raise ValueError(f"{path}: code columns {names} are not {sid_columns(n_levels, first_level)}")
    tokens, rows = [], []
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ValueError(f"{path}:{lineno}: {len(fields)} fields, expected {len(header)}")
        try:
            values = [int(v) for v in fields[1:]]
        except ValueError:
            raise ValueError(f"{path}:{lineno}: codes must be integers, got {fields[1:]}") from None
        if min(values) < 0:
            raise ValueError(f"{path}:{lineno}: negative code in {values}")
        tokens.append(fields[0])
        rows.append(values)
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"{path}: duplicate item tokens")
    codes = np.asarray(rows, dtype=np.int64).reshape(len(rows), n_levels, n_signals)
    return tokens, codes, first_level


def save_zq(path: str | os.PathLike, zq: np.ndarray) -> None:
    zq = np.asarray(zq, dtype=np.float32)
    if zq.ndim != 2 or not np.isfinite(zq).all():
        raise ValueError(f"zq must be a finite [n_items, S*D] matrix, got shape {zq.shape}")
    atomic_save_npy(path, zq)


def load_zq(path: str | os.PathLike, n_items: int | None = None) -> np.ndarray:
    zq = np.load(Path(path), allow_pickle=False)
    if zq.ndim != 2 or (n_items is not None and zq.shape[0] != n_items):
        raise ValueError(f"{path}: zq has shape {zq.shape}, expected [{n_items}, S*D]")
    return zq
