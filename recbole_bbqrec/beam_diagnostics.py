"""Where the beam loses the target: per decoding step, the share of users whose target's
prefix is still among the beams, and recall at the beam's full width.

A generative recommender can fail in two places: the model ranks the target low at some
step (its prefix falls out of the beam there and no later step can bring it back), or the
target survives every step but ends below the top-k. The first is read per step here; the
second is recall@W (the last step's share) against recall@k.

The beams kept after step l of a trie-constrained search depend only on steps 1..l, so step
l's beams are the final beams of the same search over the trie of length-l prefixes (every
distinct prefix a leaf). That reuses the exact search (``constrained_beam_search``) instead
of instrumenting it, at the price of L searches per batch: a diagnostic, run on a sample.
"""

from __future__ import annotations

import torch

from recbole_bbqrec.modules.beam_search import PrefixIndex, constrained_beam_search


def prefix_tries(item_codes: torch.Tensor) -> list[tuple[PrefixIndex, torch.Tensor]]:
    """For l = 1..L: (trie whose leaves are the distinct length-l prefixes, [n_items] leaf id
    of each item's prefix). item_codes: [n_items, L, S]."""
    out = []
    for level in range(1, item_codes.shape[1] + 1):
        prefixes, leaf_of_item = torch.unique(item_codes[:, :level], dim=0, return_inverse=True)
        out.append((PrefixIndex.from_codes(prefixes), leaf_of_item))
    return out


@torch.no_grad()
def prefix_survival(step_factory, tries: list[tuple[PrefixIndex, torch.Tensor]],
                    targets: torch.Tensor, beam_size: int) -> torch.Tensor:
    """[B, L] bool: is user b's target prefix of length l+1 among the beams after step l+1.

    step_factory: () -> a fresh step function for the batch (KV caches are per search);
    targets: [B] item rows of ``item_codes`` (0-based)."""
    kept = []
    for index, leaf_of_item in tries:
        index = index.to(targets.device)
        leaves, _ = constrained_beam_search(step_factory(), index, targets.shape[0], beam_size,
                                            targets.device, topk=beam_size)   # [B, W]
        kept.append((leaves == leaf_of_item.to(targets.device)[targets][:, None]).any(1))
    return torch.stack(kept, 1)


@torch.no_grad()
def beam_report(model, eval_data, beam_size: int, max_users: int) -> dict:
    """Share of evaluated users whose target prefix survives each step, on up to
    ``max_users`` users of ``eval_data`` (RecBole's full-sort loader), at ``beam_size``."""
    model.eval()
    codes = model.item_codes[1:]                                  # [n_items, L, S]; row k = id k+1
    tries = prefix_tries(codes.cpu())
    kept, seen = [], 0
    for batch in eval_data:
        if seen >= max_users:
            break
        interaction = batch[0] if isinstance(batch, (tuple, list)) else batch
        interaction = interaction.to(model.item_codes.device)
        take = min(max_users - seen, len(interaction))
        hist_codes, hist_mask, hist_zq = model._history(interaction)
        hist_codes, hist_mask = hist_codes[:take], hist_mask[:take]
        hist_zq = hist_zq[:take] if hist_zq is not None else None
        targets = interaction[model.POS_ITEM_ID][:take] - 1
        memory = model.generator.encode(hist_codes, hist_mask, hist_zq)
        factory = lambda: model.generator.make_batched_step_fn(memory, hist_mask)  # noqa: E731
        kept.append(prefix_survival(factory, tries, targets, beam_size).cpu())
        seen += take
    if not kept:
        return {}
    share = torch.cat(kept).float().mean(0)
    return {"beam": int(beam_size), "users": int(seen),
            "target_prefix_kept_per_step": [round(float(v), 4) for v in share],
            "recall_at_beam": round(float(share[-1]), 4)}
