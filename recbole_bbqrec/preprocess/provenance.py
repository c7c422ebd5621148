"""What produced a preprocessed dataset, and whether it is still what a run asks for.

``NAME.stats.json`` carries a ``provenance`` block: the format version of the files, every raw
file's size, modification time and SHA-256, the text model asked for, and the k-core and
malformed-line settings. ``stale_reasons`` compares it with the raw files and settings of a
new run; ``ensure_dataset`` stops with those reasons (it does not rebuild on its own: another
run may be reading the folder) and ``--stage=preprocess`` rebuilds.

Also here: the writer's lock of a dataset folder, and the clean-up of temp files a killed
writer left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

# Bump when the files' layout or content rules change (2: strict UTF-8, provenance block).
FORMAT_VERSION = 2
_CHUNK = 1 << 20
_log = logging.getLogger(__name__)


def file_fingerprint(path: Path) -> dict:
    """``{"size", "mtime_ns", "sha256"}`` of one raw file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    info = path.stat()
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256": digest.hexdigest()}


def raw_paths(source) -> list[Path]:
    """The raw files a ``RawSource`` reads (interactions, metadata, image features)."""
    return [Path(p) for p in (source.interactions, source.meta, source.image) if p is not None]


def make_provenance(source, text_model: str | None, kcore: int, max_bad_fraction: float,
                    min_meta_coverage: float) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "raw_files": {str(p.resolve()): file_fingerprint(p) for p in raw_paths(source)},
        "text_model": text_model,  # as asked for; None = the packaged default
        "kcore": kcore,
        "max_bad_fraction": max_bad_fraction,
        "min_meta_coverage": min_meta_coverage,
    }


def _same_file(path: Path, recorded: dict) -> bool:
    """Size first; the hash only when the modification time moved (hashing costs a second
    per few hundred MB, paid only after the file was touched)."""
    info = path.stat()
    if info.st_size != recorded.get("size"):
        return False
    if info.st_mtime_ns == recorded.get("mtime_ns"):
        return True
    return file_fingerprint(path)["sha256"] == recorded.get("sha256")


def stale_reasons(stats: dict, source, text_model: str | None) -> list[str]:
    """Why the files described by ``stats`` are not what ``source`` + ``text_model`` would
    produce now ([] when they are, or when the stats predate provenance: nothing to check).

    ``text_model`` None means "whatever the folder was built with" (the default when
    building); a model named explicitly must be the one recorded.
    """
    recorded = stats.get("provenance")
    if not isinstance(recorded, dict):
        _log.warning("%s: built before provenance was recorded, so whether its raw files or "
                     "text model changed cannot be checked; rebuild with --stage=preprocess to "
                     "record it.", stats.get("dataset"))
        return []
    reasons = []
    if recorded.get("format_version") != FORMAT_VERSION:
        reasons.append(f"file format version {recorded.get('format_version')} (now "
                       f"{FORMAT_VERSION})")
    if text_model is not None and text_model != recorded.get("text_model"):
        reasons.append(f"text model {recorded.get('text_model') or 'default'!r} (asked for "
                       f"{text_model!r})")
    files = recorded.get("raw_files") or {}
    now = {str(p.resolve()): p for p in raw_paths(source)}
    for name in sorted(set(files) | set(now)):
        if name not in now:
            reasons.append(f"raw file {name} is no longer the one used")
        elif name not in files:
            reasons.append(f"raw file {name} was not used to build it")
        elif not _same_file(now[name], files[name]):
            reasons.append(f"raw file {name} changed since (size or content)")
    return reasons


@contextlib.contextmanager
def writer_lock(folder: Path, what: str, lock_name: str = ".lock") -> Iterator[None]:
    """Hold ``folder/<lock_name>`` exclusively: a second writer of the same folder (or of the
    same artifact, with a per-artifact ``lock_name``) waits (and says so) instead of
    interleaving its files with the first one's."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / lock_name, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log.warning("%s: another process is writing %s; waiting for it to finish.",
                         what, folder)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def remove_stale_temp_files(folder: Path, name: str, suffixes: list[str]) -> list[Path]:
    """Delete the temp files (``atomic_io``: ``.<target>.<random>.tmp``) of this writer's
    outputs that a killed run left behind. Call while holding ``writer_lock``: no other writer
    of these outputs is running then. Other writers' temp files (stage 1) are left alone."""
    removed = []
    prefixes = tuple(f".{name}.{suffix}." for suffix in suffixes)
    for directory in (folder, folder / ".cache"):
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            is_ours = path.name.startswith(prefixes) or (directory.name == ".cache"
                                                         and path.name.startswith(".emb-"))
            if is_ours and path.name.endswith(".tmp") and path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    if removed:
        _log.warning("removed %d temp file(s) left by an interrupted run in %s: %s",
                     len(removed), folder, [p.name for p in removed[:5]])
    return removed


def describe_stale(name: str, folder: Path, reasons: list[str]) -> str:
    return (f"{folder} is stale for this run: {'; '.join(reasons)}. Rebuild it with "
            f"--stage=preprocess (or python -m recbole_bbqrec.preprocess --dataset {name}), or "
            f"point data_path elsewhere.")
