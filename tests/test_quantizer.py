import math

import pytest
import torch

from recbole_bbqrec.modules.quantizer import ResidualQuantizer, kmeans


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: see conftest


def clustered_data(n=600, dim=8, n_centers=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(n_centers, dim, generator=g)
    labels = torch.randint(0, n_centers, (n,), generator=g)
    return centers[labels] + 0.3 * torch.randn(n, dim, generator=g)


def test_shapes_codes_range_and_decode_matches_forward():
    torch.manual_seed(0)
    rq = ResidualQuantizer(n_levels=3, codebook_size=16, code_dim=8)
    x = torch.randn(32, 8)
    out = rq(x)
    assert out.z_q.shape == (32, 8)
    assert out.codes.shape == (32, 3) and out.codes.dtype == torch.long
    assert out.codes.min() >= 0 and out.codes.max() < 16
    assert out.distances.shape == (32, 3, 16)
    assert out.loss.dim() == 0 and out.loss > 0
    # forward value of the STE output is the sum of the chosen codes
    assert torch.allclose(out.z_q, rq.decode(out.codes), atol=1e-5)
    assert torch.equal(rq.encode(x), out.codes)
    # the chosen code is the nearest one at every level
    assert torch.equal(out.distances.argmin(-1), out.codes)


def test_straight_through_gradient_reaches_input_and_codebooks():
    torch.manual_seed(0)
    rq = ResidualQuantizer(2, 8, 4)
    x = torch.randn(10, 4, requires_grad=True)
    out = rq(x)
    # a downstream loss on z_q alone: the STE passes its gradient unchanged to x
    (out.z_q * torch.arange(4.0)).sum().backward()
    assert torch.allclose(x.grad, torch.arange(4.0).expand(10, 4))
    x.grad = None
    rq.zero_grad()
    rq(x).loss.backward()
    assert x.grad.abs().sum() > 0  # commitment term
    assert rq.codebooks.grad.abs().sum() > 0  # codebook term


def test_loss_decreases_when_fitting():
    torch.manual_seed(0)
    x = clustered_data()
    rq = ResidualQuantizer(2, 16, 8)
    opt = torch.optim.Adam(rq.parameters(), lr=0.05)
    first = None
    for _ in range(100):
        loss = rq(x).loss
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(rq(x).loss.detach()) < 0.5 * first


def test_kmeans_init_beats_random_and_is_deterministic():
    x = clustered_data()
    torch.manual_seed(1)
    random_rq = ResidualQuantizer(2, 16, 8)
    torch.manual_seed(1)
    init_rq = ResidualQuantizer(2, 16, 8)
    init_rq.init_from_data(x)
    assert bool(init_rq.initialized.all())
    err_random = float(random_rq(x).quant_error)
    err_init = float(init_rq(x).quant_error)
    assert err_init < 0.2 * err_random
    torch.manual_seed(1)
    again = ResidualQuantizer(2, 16, 8)
    again.init_from_data(x)
    assert torch.equal(again.codebooks, init_rq.codebooks)
    # random-sample seeding works too and also beats the random codebook
    torch.manual_seed(1)
    rnd_seed = ResidualQuantizer(2, 16, 8, kmeans_seeding="random")
    rnd_seed.init_from_data(x)
    assert float(rnd_seed(x).quant_error) < 0.2 * err_random


def test_kmeans_handles_fewer_points_than_clusters():
    torch.manual_seed(0)
    x = torch.randn(5, 3)
    centroids = kmeans(x, 8, n_iters=3)
    assert centroids.shape == (8, 3) and torch.isfinite(centroids).all()


def test_shared_vs_per_signal_codebook_sets():
    torch.manual_seed(0)
    a, b = clustered_data(seed=1), clustered_data(seed=2) + 10.0
    shared = ResidualQuantizer(2, 16, 8, n_codebook_sets=1)
    shared.init_from_data(torch.cat([a, b]))
    per_signal = ResidualQuantizer(2, 16, 8, n_codebook_sets=2)
    per_signal.init_from_data(a, 0)
    per_signal.init_from_data(b, 1)
    assert per_signal.codebooks.shape == (2, 2, 16, 8)
    assert not torch.equal(per_signal.codebooks[0], per_signal.codebooks[1])
    # each signal has its own full set, so it is quantized more finely than with a shared one
    err_own = float(per_signal(a, 0).quant_error + per_signal(b, 1).quant_error)
    err_shared = float(shared(a, 0).quant_error + shared(b, 0).quant_error)
    assert err_own < err_shared
    try:
        shared(a, codebook_set=1)
    except IndexError as err:
        assert "codebook_set 1" in str(err)
    else:
        raise AssertionError("an out-of-range codebook set must fail")


def test_dead_code_reseeding_revives_unused_codes():
    torch.manual_seed(0)
    x = clustered_data()
    rq = ResidualQuantizer(1, 16, 8)
    rq.init_from_data(x)
    # move half of the codes far away: nothing picks them any more
    rq.codebooks.data[0, 0, :8] += 100.0
    rq.train()
    rq(x)
    assert rq.code_usage()[0] <= 0.5
    assert rq.code_usage(x)[0] <= 0.5
    err_before = float(rq(x).quant_error)
    reseeded = rq.reseed_dead_codes(x)
    assert reseeded == [8]
    assert float(rq.usage_counts.sum()) == 0  # window restarts
    assert rq.code_usage(x)[0] > 0.5
    assert float(rq(x).quant_error) < err_before


def test_usage_balance_is_zero_for_uniform_use_and_its_gradient_spreads_codes():
    from recbole_bbqrec.modules.quantizer import usage_balance

    torch.manual_seed(0)
    # every point equally far from every code: the soft usage is uniform, the term is 0
    assert float(usage_balance(torch.ones(8, 2, 16))) == pytest.approx(0.0, abs=1e-6)
    # all points sit on code 0: the term is near its maximum log N at a sharp temperature
    books = torch.randn(16, 4)
    x = books[0].repeat(32, 1) + 0.01 * torch.randn(32, 4)
    x.requires_grad_(True)
    dist = ((x[:, None] - books[None]) ** 2).sum(-1)[:, None]  # [B, 1, N]
    crowded = usage_balance(dist, temperature_scale=0.05)
    assert crowded.item() > 0.5 * math.log(16)
    # one gradient step on the points lowers it (they move off the crowded code)
    crowded.backward()
    with torch.no_grad():
        moved = x - 0.5 * x.grad
    after = usage_balance(((moved[:, None] - books[None]) ** 2).sum(-1)[:, None], 0.05)
    assert float(after) < crowded.item()
    with pytest.raises(ValueError, match="temperature_scale"):
        usage_balance(dist, temperature_scale=0.0)
    with pytest.raises(ValueError, match=r"\[B, L, N\]"):
        usage_balance(dist[:, 0])
