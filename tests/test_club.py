import pytest
import torch

from recbole_bbqrec.modules.club import CLUB


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: see conftest


def fit_q(club: CLUB, b: torch.Tensor, s: torch.Tensor, steps: int = 200) -> CLUB:
    """Fit q(s|b) by maximum likelihood on minibatches of the pairs."""
    opt = torch.optim.Adam(club.parameters(), lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, len(b), (128,))
        loss = club.learning_loss(b[idx], s[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return club


def fit_and_estimate(b: torch.Tensor, s: torch.Tensor, sampled: bool = False, steps: int = 200) -> float:
    club = fit_q(CLUB(b.shape[1], s.shape[1], hidden_dim=32, sampled=sampled), b, s, steps)
    with torch.no_grad():
        return float(club(b, s))


def test_estimate_high_for_dependent_low_for_independent():
    torch.manual_seed(0)
    b = torch.randn(1000, 4)
    mixing = torch.randn(4, 4)
    dependent = b @ mixing + 0.1 * torch.randn(1000, 4)
    independent = torch.randn(1000, 4)
    mi_dep = fit_and_estimate(b, dependent)
    mi_ind = fit_and_estimate(b, independent)
    # true I for s = Ab + noise is several nats; independent pairs give ~0
    assert mi_dep > 5.0
    assert abs(mi_ind) < 0.5
    torch.manual_seed(0)
    mi_dep_sampled = fit_and_estimate(b, dependent, sampled=True)
    assert mi_dep_sampled > 5.0


def test_learning_loss_only_trains_q_and_bound_reaches_inputs():
    torch.manual_seed(0)
    club = CLUB(3, 2)
    b = torch.randn(16, 3, requires_grad=True)
    s = torch.randn(16, 2, requires_grad=True)
    club.learning_loss(b, s).backward()
    assert b.grad is None and s.grad is None
    assert all(p.grad is not None for p in club.parameters())
    club(b, s).backward()
    assert b.grad.abs().sum() > 0 and s.grad.abs().sum() > 0


def test_full_bound_matches_explicit_pairwise_mean():
    torch.manual_seed(0)
    club = CLUB(3, 2)
    b, s = torch.randn(7, 3), torch.randn(7, 2)
    mu, logvar = club._params(b)
    # log q(s_l | b_k) up to terms that depend on k only: [k, l]
    pair = -0.5 * (((s[None, :, :] - mu[:, None, :]) ** 2) / logvar.exp()[:, None, :]).sum(-1)
    expected = pair.diagonal().mean() - pair.mean()
    assert torch.allclose(club(b, s), expected, atol=1e-5)


def test_shape_errors_are_clear():
    club = CLUB(3, 2)
    with pytest.raises(ValueError, match="b as"):
        club(torch.randn(4, 5), torch.randn(4, 2))
    with pytest.raises(ValueError, match="s as"):
        club(torch.randn(4, 3), torch.randn(4, 6))


def test_unit_variance_q_fits_and_bounds_dependence():
    torch.manual_seed(0)
    b = torch.randn(2000, 6)
    s_dep = b[:, :3] + 0.3 * torch.randn(2000, 3)
    club = CLUB(6, 3, hidden_dim=32, learn_variance=False)
    assert club.logvar_net is None
    with torch.no_grad():
        before = float(club.learning_loss(b, s_dep))
    fit_q(club, b, s_dep)
    with torch.no_grad():
        after = float(club.learning_loss(b, s_dep))
        dependent = float(club(b, s_dep))
        independent = float(club(b, torch.randn(2000, 3)))
    assert after < before - 1.0  # q's likelihood is fitted
    assert dependent > 1.0 and abs(independent) < 0.3  # positive for dependence, ~0 without
