"""Atomic file writes for every artifact of the pipeline (atomic: all or nothing).

Bytes go to a temporary file in the *same* folder (so ``os.replace`` is a rename on one file
system, atomic on POSIX and Windows) and are renamed onto the target only once fully written
and flushed. An exception or a kill in the middle leaves the old target (or nothing) in
place, never a truncated file: caches, results and checkpoints can be trusted when present.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; outputs should get the ordinary permissions of a new file.
_FILE_MODE = 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``target``; rename it onto ``target`` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The suffix keeps numpy from appending ".npy" to a name that lacks it.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # make the bytes durable before they become visible
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)


def atomic_write_lines(target: str | os.PathLike, lines: Iterator[str] | list[str]) -> None:
    """Write ``lines`` (without newlines) one per line, streaming into the temp file."""
    with atomic_path(target) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            for line in lines:
                fh.write(line)
                fh.write("\n")


def atomic_write_json(target: str | os.PathLike, obj: Any, sort_keys: bool = True,
                      allow_nan: bool = True) -> None:
    """``allow_nan=False``: strict JSON (a NaN/Infinity raises instead of being written)."""
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=sort_keys,
                                         allow_nan=allow_nan) + "\n")


def atomic_save_npy(target: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def atomic_save_npz(target: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def atomic_torch_save(obj: Any, target: str | os.PathLike) -> None:
    """``torch.save`` of tensors and plain data (load it back with ``weights_only=True``)."""
    import torch

    with atomic_path(target) as tmp:
        torch.save(obj, tmp)
