"""Similarity-enhanced self-attention: bucketing, equivalence to standard attention, masking."""
import math

import pytest
import torch
from torch import nn

from recbole_bbqrec.modules import attention as attention_module
from recbole_bbqrec.modules.attention import (SimilarityEncoder, SimilarityEnhancedAttention,
                                              bucketize_similarity)

D_MODEL, HEADS, K = 16, 4, 10



pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: see conftest

def _copy_into_torch_mha(ours: SimilarityEnhancedAttention) -> nn.MultiheadAttention:
    mha = nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight,
                                            ours.v_proj.weight]))
        mha.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        mha.out_proj.weight.copy_(ours.out_proj.weight)
        mha.out_proj.bias.copy_(ours.out_proj.bias)
    return mha.eval()


def _inputs(bsz=3, seq=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(bsz, seq, D_MODEL, generator=gen)
    buckets = torch.randint(0, K, (bsz, seq, seq), generator=gen)
    pad = torch.zeros(bsz, seq, dtype=torch.bool)
    pad[0, seq - 2:] = True
    pad[-1, 2:] = True
    return x, buckets, pad


def test_bucket_edges_and_formula():
    base = torch.tensor([1.0, 2.0, -0.5])
    orth = torch.tensor([2.0, -1.0, 0.0])                   # base . orth = 0
    zq = torch.stack([base, -3 * base, 5 * base, orth])[None]  # [1, 4, 3]
    buckets = bucketize_similarity(zq, K)[0]
    assert buckets[0, 0] == K - 1          # sim = 1 -> last bucket, not K
    assert buckets[0, 1] == 0              # sim = -1 -> bucket 0
    assert buckets[0, 2] == K - 1          # scale-invariant cosine
    assert buckets[0, 3] == K // 2         # sim = 0 -> floor(K / 2)
    zq = torch.randn(2, 7, 5)
    sim = torch.nn.functional.cosine_similarity(zq[:, :, None], zq[:, None], dim=-1)
    expected = torch.clamp(torch.floor((sim + 1) / 2 * K), max=K - 1).long()
    got = bucketize_similarity(zq, K)
    # Float rounding may move a value sitting on a bucket edge by one.
    assert (got - expected).abs().max() <= 1 and (got == expected).float().mean() > 0.95
    assert got.min() >= 0 and got.max() < K


def test_switch_off_equals_torch_multihead_attention():
    torch.manual_seed(0)
    ours = SimilarityEnhancedAttention(D_MODEL, HEADS, 0.0, K, enabled=False).eval()
    assert ours.sim_embedding is None and not any("sim" in n for n, _ in ours.named_parameters())
    x, _, pad = _inputs()
    expected, _ = _copy_into_torch_mha(ours)(x, x, x, key_padding_mask=pad)
    torch.testing.assert_close(ours(x, None, pad), expected, atol=1e-6, rtol=1e-5)


def test_all_ones_table_equals_standard_and_other_tables_differ():
    torch.manual_seed(0)
    enhanced = SimilarityEnhancedAttention(D_MODEL, HEADS, 0.0, K, enabled=True).eval()
    plain = SimilarityEnhancedAttention(D_MODEL, HEADS, 0.0, K, enabled=False).eval()
    plain.load_state_dict({k: v for k, v in enhanced.state_dict().items() if k != "sim_embedding"})
    x, buckets, pad = _inputs()
    assert torch.equal(enhanced.sim_embedding.detach(), torch.ones(K, D_MODEL))
    torch.testing.assert_close(enhanced(x, buckets, pad), plain(x, None, pad), atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        enhanced.sim_embedding.uniform_(0.0, 2.0)
    assert (enhanced(x, buckets, pad) - plain(x, None, pad)).abs().max() > 1e-2


def test_enhanced_matches_hand_written_loops():
    torch.manual_seed(1)
    attn = SimilarityEnhancedAttention(D_MODEL, HEADS, 0.0, K, enabled=True).eval()
    with torch.no_grad():
        attn.sim_embedding.normal_()
    x, buckets, pad = _inputs(bsz=2, seq=4)
    dh = D_MODEL // HEADS
    q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    out = torch.zeros_like(x)
    for b in range(2):
        for h in range(HEADS):
            sl = slice(h * dh, (h + 1) * dh)
            for i in range(4):
                logits = torch.stack([q[b, i, sl] @ k[b, j, sl] / math.sqrt(dh) for j in range(4)])
                logits = logits.masked_fill(pad[b], float("-inf"))
                weights = torch.softmax(logits, 0)
                for j in range(4):
                    out[b, i, sl] += weights[j] * v[b, j, sl] * attn.sim_embedding[buckets[b, i, j], sl]
    torch.testing.assert_close(attn(x, buckets, pad), attn.out_proj(out), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("enabled", [True, False])
def test_padding_is_masked(enabled):
    torch.manual_seed(2)
    attn = SimilarityEnhancedAttention(D_MODEL, HEADS, 0.0, K, enabled=enabled).eval()
    if enabled:
        with torch.no_grad():
            attn.sim_embedding.normal_()
    x, buckets, pad = _inputs()
    x2, buckets2 = x.clone(), buckets.clone()
    x2[pad] = torch.randn(int(pad.sum()), D_MODEL) * 10      # garbage in padded slots
    buckets2.masked_fill_(pad[:, None, :], 3)                # and in their key buckets
    real = ~pad
    out, out2 = attn(x, buckets, pad), attn(x2, buckets2, pad)
    torch.testing.assert_close(out[real], out2[real], atol=1e-5, rtol=1e-5)
    # Without the mask the garbage does leak in, so the check above is meaningful.
    assert (attn(x, buckets, None)[real] - attn(x2, buckets2, None)[real]).abs().max() > 1e-3


def test_gradients_reach_bucket_table_only_where_used():
    torch.manual_seed(3)
    attn = SimilarityEnhancedAttention(D_MODEL, HEADS, 0.0, K, enabled=True)
    x, _, pad = _inputs()
    buckets = torch.randint(0, K // 2, x.shape[:1] + (x.shape[1], x.shape[1]))  # upper half unused
    attn(x, buckets, pad).pow(2).sum().backward()
    grad = attn.sim_embedding.grad
    assert grad[: K // 2].abs().sum() > 0
    assert torch.equal(grad[K // 2:], torch.zeros_like(grad[K // 2:]))


def test_chunked_value_mixing_matches_whole_batch(monkeypatch):
    """Users mixed in chunks (here 1-3 per chunk) give the whole-batch output and value
    gradient bit for bit, including a last chunk shorter than the others."""
    torch.manual_seed(4)
    x, buckets, pad = _inputs()
    attn = SimilarityEnhancedAttention(D_MODEL, HEADS, 0.0, K, enabled=True)
    with torch.no_grad():
        attn.sim_embedding.normal_()

    def run(chunk_elements):
        monkeypatch.setattr(attention_module, "MIX_CHUNK_ELEMENTS", chunk_elements)
        attn.zero_grad()
        out = attn(x, buckets, pad)
        out.pow(2).sum().backward()
        return out.detach(), attn.sim_embedding.grad.clone(), attn.v_proj.weight.grad.clone()

    seq = x.shape[1]
    whole = run(10 ** 9)
    assert x.shape[0] == 3                           # 2 users per chunk leaves a remainder
    for users in (1, 2, 3):
        out, sim_grad, v_grad = run(users * seq * seq * D_MODEL)
        assert torch.equal(out, whole[0]) and torch.equal(v_grad, whole[2])
        # the table's gradient sums its uses chunk by chunk: the same up to summation order
        torch.testing.assert_close(sim_grad, whole[1], atol=1e-6, rtol=1e-6)


def test_encoder_stack_shapes_and_switch():
    x, buckets, pad = _inputs()
    on = SimilarityEncoder(2, D_MODEL, HEADS, 32, 0.1, K, enabled=True).eval()
    off = SimilarityEncoder(2, D_MODEL, HEADS, 32, 0.1, K, enabled=False).eval()
    assert on(x, buckets, pad).shape == x.shape and off(x, None, pad).shape == x.shape
    assert sum("sim_embedding" in n for n, _ in on.named_parameters()) == 2
    assert not any("sim_embedding" in n for n, _ in off.named_parameters())
    with pytest.raises(ValueError, match="needs buckets"):
        on(x, None, pad)
