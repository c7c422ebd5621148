"""modules/cpu_linear.py: oneDNN Linear for CPU inference, PyTorch's kernel everywhere else."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from recbole_bbqrec.modules.beam_search import PrefixIndex
from recbole_bbqrec.modules.cpu_linear import (InferenceLinear, linear, onednn_linear_available,
                                               set_onednn)
from recbole_bbqrec.modules.generator import SemanticIDGenerator
from tests.test_beam_search import random_codes

pytestmark = [pytest.mark.usefixtures("single_thread"),
              pytest.mark.skipif(not onednn_linear_available(), reason="torch without oneDNN")]
ONEDNN_OP = "mkldnn::_linear_pointwise"


def ops_run(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def test_same_parameters_and_state_dict_as_nn_linear():
    torch.manual_seed(0)
    plain = nn.Linear(32, 48)
    fast = InferenceLinear(32, 48)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(4, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-6, atol=1e-6)


def test_onednn_runs_only_without_autograd_on_cpu_float32():
    layer = InferenceLinear(128, 512)
    x = torch.randn(300, 128)
    with torch.no_grad():
        assert ONEDNN_OP in ops_run(lambda: layer(x))
        assert ONEDNN_OP not in ops_run(lambda: layer.double()(x.double()))   # float64: aten
        layer.float()
    with torch.inference_mode():
        assert ONEDNN_OP in ops_run(lambda: layer(x))
    # Training: aten's kernel, whose backward autograd knows.
    assert ONEDNN_OP not in ops_run(lambda: layer(x))
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    set_onednn(layer, False)
    with torch.no_grad():
        assert ONEDNN_OP not in ops_run(lambda: layer(x))


@pytest.mark.parametrize("k", [128, 512])
def test_as_accurate_as_pytorchs_kernel(k):
    # Same fp32 product, maybe another accumulation order: against the float64 product its
    # error is of the size of PyTorch's own kernel's.
    gen = torch.Generator().manual_seed(k)
    x, w, b = (torch.randn(1000, k, generator=gen), torch.randn(256, k, generator=gen),
               torch.randn(256, generator=gen))
    exact = F.linear(x.double(), w.double(), b.double())
    with torch.no_grad():
        fast, aten = linear(x, w, b), F.linear(x, w, b)
        assert fast.shape == aten.shape == (1000, 256)
        assert (fast - exact).abs().max() <= 2 * (aten - exact).abs().max() + 1e-6
        torch.testing.assert_close(linear(x[:, None], w, None), F.linear(x[:, None], w),
                                   rtol=1e-4, atol=1e-4)      # 3-D input, no bias


def test_reference_step_functions_run_on_the_same_kernel_as_generate():
    # bench/decode.py compares generate's search with the reference driven by make_step_fn:
    # both must run the model's products on the same kernel.
    torch.manual_seed(0)
    model = SemanticIDGenerator(3, 2, 16, 32, 2, 1, 1, 64, 0.0, 10, 8, use_similarity=False).eval()
    codes = random_codes(50, 3, 2, 16, seed=0)
    mask = torch.ones(4, 10, dtype=torch.bool)
    with torch.no_grad():
        memory = model.encode(codes[torch.randint(0, 50, (4, 10))], mask)
        prefix = codes[:4, None, :1]                                          # [B, 1, 1, S]
        step = model.make_step_fn(memory, mask)
        step(prefix[:, :, :0], None)
        ops = ops_run(lambda: step(prefix, torch.zeros(4, 1, dtype=torch.long)))
        assert ONEDNN_OP in ops and "aten::bmm" in ops and "aten::addmm" not in ops
        ops = ops_run(lambda: model.step_log_probs(memory, mask, prefix))
        assert ONEDNN_OP in ops and "aten::addmm" not in ops


def test_generator_decodes_the_same_items_on_either_kernel():
    torch.manual_seed(0)
    codes = random_codes(400, 3, 2, 16, seed=0)
    model = SemanticIDGenerator(3, 2, 16, 32, 2, 1, 1, 64, 0.0, 10, 8, use_similarity=True).eval()
    hist = (codes[torch.randint(0, 400, (12, 10))], torch.ones(12, 10, dtype=torch.bool),
            torch.randn(12, 10, 16))
    index = PrefixIndex.from_codes(codes)
    with torch.no_grad():
        assert ONEDNN_OP in ops_run(lambda: model.generate(*hist, index, 10))
        fast = model.generate(*hist, index, 10)
        set_onednn(model, False)
        assert model.onednn is False and ONEDNN_OP not in ops_run(
            lambda: model.generate(*hist, index, 10))
        slow = model.generate(*hist, index, 10)
    assert torch.equal(fast[0], slow[0])
    torch.testing.assert_close(fast[1], slow[1], rtol=1e-5, atol=1e-5)
