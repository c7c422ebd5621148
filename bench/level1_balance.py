"""What forcing every signal onto more of the shared level-1 codebook would cost.

Issue 9 asks each signal to use at least half of the shared codebook at level 1. BBQ's
trained quantizer gives each item's signal its nearest level-1 code; this bench re-assigns
the level-1 codes of a trained stage-1 checkpoint under a per-signal capacity (no code takes
more than ``factor * n_items / N`` items of one signal, nearest free code first), which
guarantees usage >= 1 / factor, and measures what the codes then say about behavior: held-out
bits about the next item's code given the previous item's (``code_predictability``), against
the same codes shuffled. Nothing is retrained; it answers "is the target worth its price".

    .venv/bin/python bench/level1_balance.py --dataset=Beauty \\
        --config_files=properties/overrides/cpu_budget.yaml --factors 2 1.5 1.2

The checkpoint is the stage-1 one this config's hash names (run ``--stage=tokenizer`` first).
Last line: ``level-1 usage at factor <f>: <signal> <usage> ...``.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from recbole.data import data_preparation  # noqa: E402

from recbole_bbqrec.modules.quantizer import squared_distances  # noqa: E402
from recbole_bbqrec.quick_start import build_config  # noqa: E402
from recbole_bbqrec.tokenizers.diagnostics import code_predictability  # noqa: E402
from recbole_bbqrec.tokenizers.stage1 import (artifact_paths, build_tokenizer,  # noqa: E402
                                              stage1_identity, standardize, training_sequences)
from recbole_bbqrec.tokenizers.trainer import load_tokenizer_checkpoint  # noqa: E402
from recbole_bbqrec.utils import create_dataset  # noqa: E402


def capacity_assign(dist: torch.Tensor, capacity: int) -> torch.Tensor:
    """Codes [n] for distances [n, N]: nearest code, except that a code holding more than
    ``capacity`` items keeps its nearest ones and sends the others to their next choice."""
    dist = dist.clone()
    n, n_codes = dist.shape
    while True:
        codes = dist.argmin(1)                                                  # [n]
        order = torch.argsort(dist.gather(1, codes[:, None]).squeeze(1))        # nearest first
        by_code = torch.argsort(codes[order], stable=True)                      # grouped by code
        grouped = codes[order][by_code]
        counts = torch.bincount(grouped, minlength=n_codes)
        rank = torch.arange(n) - (torch.cumsum(counts, 0) - counts)[grouped]  # place in its code
        over = order[by_code[rank >= capacity]]
        if over.numel() == 0:
            return codes
        dist[over, codes[over]] = float("inf")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="Beauty")
    parser.add_argument("--config_files", default="properties/overrides/cpu_budget.yaml")
    parser.add_argument("--factors", type=float, nargs="+", default=[2.0, 1.5, 1.2])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = build_config("BBQRec", args.dataset, args.config_files.split(),
                          {"show_progress": False, "state": "WARNING"})
    train, _, _ = data_preparation(config, create_dataset(config))
    dataset = train._dataset
    sid_hash, params = stage1_identity(config, dataset)
    n_items = dataset.item_num - 1
    masks = {m: dataset.item_features(m)[1][1:] for m in params["modalities"]}
    features = {m: standardize(dataset.item_features(m)[0][1:], masks[m]) for m in masks}
    tokenizer = build_tokenizer(config, n_items, {m: f.shape[1] for m, f in features.items()})
    tokenizer.set_features(features, masks)
    load_tokenizer_checkpoint(artifact_paths(dataset, sid_hash)["checkpoint"], tokenizer)
    tokenizer.eval()
    sequences = [seq - 1 for seq in training_sequences(dataset)]
    n_codes = config["codebook_size"]
    print(f"stage 1 {sid_hash}: {n_items} items, level-1 codebook of {n_codes}")
    print("| signal | factor | usage | bits | shuffled bits | items moved |")
    print("|---|---|---|---|---|---|")
    last = {}
    for signal, vectors in tokenizer.all_signal_vectors().items():
        dist = squared_distances(vectors, tokenizer.quantizer.codebooks[tokenizer.codebook_set(signal), 0])
        nearest = dist.argmin(1)
        for factor in [None, *args.factors]:
            codes = nearest if factor is None else capacity_assign(
                dist, int(np.ceil(factor * n_items / n_codes)))
            bits = code_predictability(codes.numpy(), sequences, n_codes)
            usage = codes.unique().numel() / n_codes
            print(f"| {signal} | {'nearest' if factor is None else factor} | {usage:.3f} | "
                  f"{bits['bits']:.3f} | {bits['shuffled_bits']:.3f} | "
                  f"{float((codes != nearest).float().mean()):.2f} |", flush=True)
            last[signal] = usage
    print(f"level-1 usage at factor {args.factors[-1]}: "
          + " ".join(f"{s} {u:.2f}" for s, u in last.items()))


if __name__ == "__main__":
    main()
