"""Find a dataset's raw files: ml-100k from RecBole's wheel, else Amazon raw, else sequence form."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recbole_bbqrec.preprocess.amazon2014 import expected_raw_files, first_existing
from recbole_bbqrec.preprocess.errors import RawDataNotFoundError
from recbole_bbqrec.preprocess.movielens import ML100K, ml100k_dir
from recbole_bbqrec.preprocess.sequence_form import expected_sequence_files

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RawSource:
    """Where one dataset's inputs are. ``kind``: reviews | ratings | sequence | ml-100k."""

    kind: str
    interactions: Path
    meta: Path | None = None
    image: Path | None = None

    @property
    def category_modality(self) -> bool:
        # ml-100k genres are part of its text; the paper's category signal is Amazon's.
        return self.kind != ML100K

    def describe(self) -> str:
        paths = [self.interactions, self.meta, self.image]
        return ", ".join(str(p) for p in paths if p is not None)


def candidate_raw_dirs(name: str, out_dir: str | Path, raw_dir: str | Path | None) -> list[Path]:
    """``raw_dir`` if given; else the shared data folder (from cwd, then repo), then dataset/raw."""
    if raw_dir is not None:
        return [Path(raw_dir)]
    shared = Path("shared") / "data" / "amazon2014" / name
    candidates = [
        Path.cwd().parent / shared,
        REPO_ROOT.parent / shared,
        Path(out_dir) / "raw" / name,
        Path("dataset") / "raw" / name,
    ]
    unique: list[Path] = []
    for path in candidates:
        if path.resolve() not in [u.resolve() for u in unique]:
            unique.append(path)
    return unique


def _source_in(directory: Path, name: str, notes: list[str]) -> RawSource | None:
    roles = expected_raw_files(directory, name)
    reviews = first_existing(roles["reviews"])
    ratings = first_existing(roles["ratings"])
    meta = first_existing(roles["meta"])
    image = first_existing(roles["image"])
    if (reviews or ratings) and meta:
        kind = "reviews" if reviews else "ratings"
        return RawSource(kind, reviews or ratings, meta, image)
    if (reviews or ratings) and not meta:
        notes.append(f"found {reviews or ratings} but no metadata file ({roles['meta'][0].name})")
    if meta and not (reviews or ratings):
        notes.append(f"found {meta} but no reviews/ratings file ({roles['reviews'][0].name})")

    seq = expected_sequence_files(directory, name)
    if seq["sequences"].is_file() and seq["meta"].is_file():
        return RawSource("sequence", seq["sequences"], seq["meta"], image)
    for role, path in seq.items():
        other = seq["meta" if role == "sequences" else "sequences"]
        if path.is_file() and not other.is_file():
            notes.append(f"found {path} but not {other.name}")
    return None


def locate_source(name: str, out_dir: str | Path = "dataset", raw_dir: str | Path | None = None) -> RawSource:
    if name == ML100K:
        directory = ml100k_dir()
        return RawSource(ML100K, directory / f"{ML100K}.inter", directory / f"{ML100K}.item")
    notes: list[str] = []
    tried: list[str] = []
    directories = candidate_raw_dirs(name, out_dir, raw_dir)
    for directory in directories:
        if directory.is_dir():
            source = _source_in(directory, name, notes)
            if source is not None:
                return source
        else:
            notes.append(f"{directory} does not exist")
        roles = expected_raw_files(directory, name)
        seq = expected_sequence_files(directory, name)
        tried += [str(p) for p in roles["reviews"] + roles["ratings"] + roles["meta"]]
        tried += [str(seq["sequences"]), str(seq["meta"])]
    cat = name
    where = Path(raw_dir) if raw_dir is not None else Path(out_dir) / "raw" / name
    raise RawDataNotFoundError(
        f"no raw data for dataset '{name}'. Put reviews_{cat}_5.json.gz (or ratings_{cat}.csv) + "
        f"meta_{cat}.json.gz [+ image_features_{cat}.b], or {cat}.seq.txt + {cat}.meta.jsonl, in "
        f"{where}" + (" or pass --raw_dir DIR" if raw_dir is None else "") + ". "
        + ("; ".join(notes) + ". " if notes else "")
        + "Expected one of: " + ", ".join(tried)
    )
