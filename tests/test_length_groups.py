"""modules/length_groups.py: users grouped by history extent, encoded on their real positions."""
import pytest
import torch

from recbole_bbqrec.modules import length_groups
from recbole_bbqrec.modules.length_groups import encode_in_length_groups, history_groups


def _mask() -> torch.Tensor:
    mask = torch.zeros(7, 6, dtype=torch.bool)
    mask[0, :6] = True                      # full: extent 6
    mask[1, :2] = True                      # extent 2
    mask[2, :1] = True                      # extent 1
    mask[3, 3:] = True                      # left-padded: extent 6
    mask[4, [0, 3]] = True                  # a hole: extent 4
    mask[6, :3] = True                      # extent 3; user 5 has no real item: full width
    return mask


def test_history_groups_sort_users_by_extent_and_cut_each_group_to_its_longest():
    mask = _mask()
    groups = history_groups(mask, 3)
    # [2, 1, 6] cut at 3; [4, 0, 3] and [5] are both 6 wide, so they are merged
    assert [(g.tolist(), width) for g, width in groups] == [([2, 1, 6], 3), ([4, 0, 3, 5], 6)]
    assert [width for _, width in history_groups(mask, 2)] == [2, 4, 6]
    assert [width for _, width in history_groups(mask, 1)] == [1, 2, 3, 4, 6]
    for users, width in history_groups(mask, 2):       # no real item is ever cut
        assert not mask[users, width:].any()
    assert sorted(torch.cat([g for g, _ in groups]).tolist()) == list(range(7))
    assert [(g.tolist(), w) for g, w in history_groups(mask[:0], 4)] == [([], 6)]
    with pytest.raises(ValueError, match="group_users"):
        history_groups(mask, 0)
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        history_groups(mask[0], 2)


def test_encode_in_length_groups_runs_each_group_at_its_width_and_zeros_the_rest(monkeypatch):
    """A stand-in encoder whose output at a position depends only on that position's inputs:
    the grouped result is then exactly the full-width one on every position a group keeps."""
    mask = _mask()
    codes = torch.arange(7 * 6, dtype=torch.float32).view(7, 6, 1)
    zq = -codes
    calls = []

    def rows(hist_codes, hist_mask, hist_zq):
        calls.append(tuple(hist_codes.shape[:2]))
        return (hist_codes + (0 if hist_zq is None else 2 * hist_zq)).expand(-1, -1, 4) \
            * hist_mask[..., None]
    full = rows(codes, mask, zq)
    calls.clear()
    out = encode_in_length_groups(rows, codes, mask, zq, group_users=3)
    assert calls == [(3, 3), (4, 6)]
    assert torch.equal(out, full)       # zeros where the stand-in masks, and at cut positions
    calls.clear()
    out = encode_in_length_groups(rows, codes, mask, None, group_users=2)
    assert calls == [(2, 2), (2, 4), (3, 6)]
    assert torch.equal(out, rows(codes, mask, None))
    # nothing to cut (every history full): one call on the batch as given
    calls.clear()
    encode_in_length_groups(rows, codes, torch.ones(7, 6, dtype=torch.bool), zq,
                            group_users=2)
    assert calls == [(7, 6)]
    # the default group size is read when called (generator tests patch it)
    calls.clear()
    monkeypatch.setattr(length_groups, "ENCODE_GROUP_USERS", 1)
    encode_in_length_groups(rows, codes, mask, zq)
    assert calls == [(1, 1), (1, 2), (1, 3), (1, 4), (3, 6)]
