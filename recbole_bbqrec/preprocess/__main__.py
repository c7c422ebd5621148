"""CLI: ``python -m recbole_bbqrec.preprocess --dataset NAME``; prints the stats JSON last."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from recbole_bbqrec.cli import one_line
from recbole_bbqrec.config_checks import check_path_name
from recbole_bbqrec.preprocess.errors import FeatureWidthError, MalformedInputError
from recbole_bbqrec.preprocess.pipeline import preprocess_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_bbqrec.preprocess",
        description="Turn raw Amazon 2014 files (reviews_<Cat>_5.json.gz or ratings_<Cat>.csv + "
        "meta_<Cat>.json.gz [+ image_features_<Cat>.b]), the sequence form (<Cat>.seq.txt + "
        "<Cat>.meta.jsonl), or ml-100k into RecBole atomic files and per-item feature matrices.",
    )
    parser.add_argument("--dataset", required=True, help="Beauty, Sports, ..., or ml-100k")
    parser.add_argument("--raw_dir", default=None, help="folder with the raw files (default: "
                        "../shared/data/amazon2014/<NAME>, then <out_dir>/raw/<NAME>)")
    parser.add_argument("--out_dir", default="dataset", help="writes <out_dir>/<NAME>/ (default: dataset)")
    parser.add_argument("--text_model", default=None, help="local sentence-transformers folder, or "
                        "'hash:<dim>' for the hashing encoder (default: packaged all-MiniLM-L6-v2)")
    parser.add_argument("--max_bad_fraction", type=float, default=0.01,
                        help="abort when more than this fraction of a file's lines is malformed")
    parser.add_argument("--image_dim", type=int, default=None, help="floats per image feature record (4096)")
    parser.add_argument("--min_meta_coverage", type=float, default=0.8,
                        help="stop when fewer of the items than this share have metadata (0.8)")
    parser.add_argument("--kcore", type=int, default=5, help="min interactions per user and item (5)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    parser.add_argument("--log_level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_path_name("dataset", args.dataset)  # it becomes <out_dir>/<NAME>/
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        stats = preprocess_dataset(
            args.dataset, out_dir=args.out_dir, raw_dir=args.raw_dir, text_model=args.text_model,
            show_progress=not args.no_progress, max_bad_fraction=args.max_bad_fraction,
            image_dim=args.image_dim, kcore=args.kcore, min_meta_coverage=args.min_meta_coverage,
        )
    except (FileNotFoundError, MalformedInputError, FeatureWidthError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    print(json.dumps(stats, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    from recbole_bbqrec.cli import run_cli

    sys.exit(run_cli(main))  # other expected errors: one line on stderr, exit 2
