"""Inference over histories of many lengths: encode only each user's real positions.

RecBole hands a sequential model histories right-padded to MAX_ITEM_LIST_LENGTH, and most are
far shorter (Beauty's test users: 7 real items of 20 on average). A transformer encoder's
cost grows with the width it is run at, and its attention with the square of it. Sorting the
users by history extent and running them in groups cut to each group's longest history
skips the padded tail. Masked keys get exactly zero attention weight, so a real position's
output is the full-width one up to float rounding.

Measured on the trained tuple model's Beauty test users (256 users, d_model 128, 2 encoder
layers, T = 20): the encoder went from 0.18 to 0.096 ms per user at 1 thread and from 0.105
to 0.074 at 2; groups of 32 and 64 users tied, 16 and 128 were slower.
"""
from __future__ import annotations

from typing import Callable

import torch

# Users per group on a CPU. A GPU wants one large batch (and the grouping reads the extents
# on the host): it is not grouped there, until a GPU measurement says otherwise.
ENCODE_GROUP_USERS = 64

EncodeRows = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def history_groups(mask: torch.Tensor, group_users: int) -> list[tuple[torch.Tensor, int]]:
    """Users in groups of up to ``group_users`` by history extent (1 + the last real
    position): mask [B, T] (True = real item) -> [(users [g] long, width)], narrowest first;
    every position of a user at or past its group's ``width`` is padding. Neighbouring groups
    of the same width are merged into one. A history with no real item gets the full width
    T: all of its keys are masked, so the decoder attends evenly to every position of its
    memory, and its output must not depend on which users share its group."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T], got shape {tuple(mask.shape)}")
    if group_users < 1:
        raise ValueError(f"group_users must be >= 1, got {group_users}")
    bsz, seq = mask.shape
    if bsz == 0:
        return [(torch.arange(0, device=mask.device), seq)]
    real = mask.bool()
    last = seq - real.flip(1).to(torch.uint8).argmax(1)                # [B] 1 + last real
    extent = torch.where(real.any(1), last, torch.full_like(last, seq))
    order = torch.argsort(extent, stable=True)
    widths = extent[order].tolist()                                    # one host read
    groups: list[tuple[int, int, int]] = []                            # (lo, hi, width)
    for lo in range(0, bsz, group_users):
        hi = min(lo + group_users, bsz)
        if groups and groups[-1][2] == widths[hi - 1]:
            groups[-1] = (groups[-1][0], hi, widths[hi - 1])
        else:
            groups.append((lo, hi, widths[hi - 1]))
    return [(order[lo:hi], width) for lo, hi, width in groups]


def encode_in_length_groups(encode_rows: EncodeRows, hist_codes: torch.Tensor,
                            hist_mask: torch.Tensor, hist_zq: torch.Tensor | None,
                            group_users: int | None = None) -> torch.Tensor:
    """``encode_rows(hist_codes, hist_mask, hist_zq)`` -> memory [B, T, d], run per length
    group on the positions up to the group's width (hist_codes [B, T, ...], hist_mask [B, T],
    hist_zq [B, T, Dz] or None). Positions past a user's group width are 0 (every reader
    masks them). One call on the whole batch where nothing would be cut, or on a GPU.
    ``group_users`` defaults to ENCODE_GROUP_USERS."""
    bsz, seq = hist_mask.shape
    if hist_mask.device.type == "cuda":
        return encode_rows(hist_codes, hist_mask, hist_zq)
    groups = history_groups(hist_mask, group_users or ENCODE_GROUP_USERS)
    if groups[0][1] == seq:                      # the narrowest group is full width
        return encode_rows(hist_codes, hist_mask, hist_zq)
    memory = None
    for users, width in groups:
        out = encode_rows(hist_codes[users, :width], hist_mask[users, :width],
                          None if hist_zq is None else hist_zq[users, :width])  # [g, w, d]
        if memory is None:                       # d and dtype as the encoder gives them
            memory = out.new_zeros(bsz, seq, out.shape[-1])
        memory[users, :width] = out
    return memory
