import pytest
import torch

from recbole_bbqrec.modules.whitening import SignalWhitening, whiteness_loss

pytestmark = pytest.mark.usefixtures("single_thread")


def test_calibrated_whitening_gives_white_vectors_on_one_sphere():
    torch.manual_seed(0)
    mixing = torch.randn(8, 8)
    x = torch.randn(5000, 8) @ mixing + 3.0  # correlated, off-centre
    white = SignalWhitening(8, shrinkage=1e-4)
    white.calibrate(x)
    y = white(x)
    assert torch.allclose(y.norm(dim=1), torch.full((5000,), 8 ** 0.5), atol=1e-4)
    assert y.mean(0).abs().max() < 0.1
    assert torch.allclose(torch.cov(y.t()), torch.eye(8), atol=0.15)
    assert whiteness_loss(y) < 0.05 < whiteness_loss(x / x.norm(dim=1, keepdim=True) * 8 ** 0.5)


def test_whiteness_loss_sees_folding_and_a_drifting_mean():
    torch.manual_seed(0)
    white = torch.nn.functional.normalize(torch.randn(4000, 16), dim=1) * 4.0
    folded = torch.nn.functional.normalize(torch.randn(4000, 2) @ torch.randn(2, 16), dim=1) * 4.0
    drifted = torch.nn.functional.normalize(torch.randn(4000, 16) + 3.0, dim=1) * 4.0
    assert whiteness_loss(white) < 0.05
    assert whiteness_loss(folded) > 1.0 and whiteness_loss(drifted) > 1.0


def test_shrinkage_bounds_the_gain_of_empty_directions_and_shapes_are_checked():
    x = torch.zeros(100, 4)
    x[:, 0] = torch.randn(100)  # three directions carry nothing
    white = SignalWhitening(4, shrinkage=0.01)
    white.calibrate(x)
    assert torch.isfinite(white.matrix).all() and white.matrix.abs().max() < 30.0
    with pytest.raises(ValueError, match=r"\[M >= 2, 4\]"):
        white.calibrate(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="shrinkage"):
        SignalWhitening(4, shrinkage=0.0)
