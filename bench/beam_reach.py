"""How many beams each decoding level could leave out of the model: the bound behind the
pruned search (``constrained_beam_search(prune=True)``), on a trained run's test users.

No child scores above its beam (log-probs are <= 0). So at the step that scores the beams of
level l, a beam whose score is below that step's final cut (the ``keep``-th best child:
``beam_size`` at an inner level, ``topk`` at the last) cannot place a child in the cut, and
an exact search may skip it. The beams at or above the cut are "in reach": their scores alone
cannot rule them out (a beam level with the cut may hold the cut's own item). The rest is the
most that pruning on scores can save at that level. ``generate`` prunes the last level only
(this bench is why: see README "Decoding speed").

Only public pieces are used: the beams after level l, with their scores, are the result of
the same search over the trie of length-l prefixes (``beam_diagnostics.prefix_tries``).

    .venv/bin/python bench/beam_reach.py --result results/Beauty/<run>.json --n_users 1024
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.decode import trained_run  # noqa: E402
from recbole_bbqrec.beam_diagnostics import prefix_tries  # noqa: E402
from recbole_bbqrec.modules.beam_search import constrained_beam_search  # noqa: E402
from recbole_bbqrec.modules.tuple_topk import rank_key  # noqa: E402


@torch.no_grad()
def beams_in_reach(step_factory, item_codes: torch.Tensor, n_users: int, beam_size: int,
                   topk: int) -> list[torch.Tensor]:
    """Per scored level l = 1..L-1 (the root step is one row per user), [B] the number of
    level-l beams whose score is not below the cut of level l + 1: the beam_size-th best child
    at an inner level, the topk-th at the last. A beam level with the cut may hold the cut's
    own item, so it counts. step_factory: () -> a fresh step function for the batch;
    item_codes [n_items, L, S]."""
    level_keys = []
    for index, _ in prefix_tries(item_codes.cpu()):
        leaves, scores = constrained_beam_search(step_factory(), index.to(item_codes.device),
                                                 n_users, beam_size, item_codes.device,
                                                 topk=beam_size)              # [B, W] sorted
        # As the search ranks them: padding (leaf -1) -inf, a live -inf score the minimum.
        level_keys.append(rank_key(scores, leaves >= 0))
    n_levels, counts = len(level_keys), []
    for level in range(1, n_levels):
        keep = topk if level == n_levels - 1 else beam_size
        cut = level_keys[level][:, keep - 1]             # -inf where fewer than keep children
        beams = level_keys[level - 1]                                         # [B, W]
        counts.append(((beams >= cut[:, None]) & (beams > float("-inf"))).sum(1))  # live only
    return counts


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--result", required=True, help="a finished generative run's results JSON")
    p.add_argument("--n_users", type=int, default=1024, help="its first test users")
    p.add_argument("--batch_size", type=int, default=256, help="users per search")
    p.add_argument("--beam", type=int, default=50)
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if not 1 <= args.topk <= args.beam:
        p.error(f"--topk must be in [1, --beam={args.beam}], got {args.topk}")
    torch.set_num_threads(args.threads)
    model, index, hist, label = trained_run(args.result, args.n_users)
    hist_codes, mask, zq = hist
    per_level: list[list[torch.Tensor]] = []
    with torch.inference_mode():
        for lo in range(0, hist_codes.shape[0], args.batch_size):
            sl = slice(lo, lo + args.batch_size)
            memory = model.encode(hist_codes[sl], mask[sl], zq[sl])
            counts = beams_in_reach(lambda: model.make_batched_step_fn(memory, mask[sl]),
                                    index.item_codes, memory.shape[0], args.beam, args.topk)
            per_level.append(counts)
    print(f"{label}: {hist_codes.shape[0]} test users, beam {args.beam}, top {args.topk}")
    rows, n_levels = [], len(per_level[0]) + 1
    for level, parts in enumerate(zip(*per_level), start=1):
        reach = torch.cat(parts).float()
        cut = args.topk if level == n_levels - 1 else args.beam
        rows.append({"level": level, "cut": cut, "mean_in_reach": round(float(reach.mean()), 2),
                     "p90_in_reach": float(reach.quantile(0.9))})
        print(f"step {level + 1} of {n_levels} (cut at the {cut}th child): beams in reach "
              f"{reach.mean():.1f} on average (p90 {reach.quantile(0.9):.0f}) of up to "
              f"{args.beam}", flush=True)
    return rows


if __name__ == "__main__":
    main()
