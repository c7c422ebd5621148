"""Linear layers that run on oneDNN when the generator infers on a CPU.

PyTorch sends a CPU float32 ``nn.Linear`` to MKL's sgemm. On the AMD machine this project is
measured on (Zen 5, AVX-512), MKL takes a slower path: 86-97 GFLOP/s per core on the
generator's products. oneDNN, which ships inside the same torch wheel, reaches 150-224 on the
same shapes (``bench/linear_kernels.py``). Decoding is mostly these products, so evaluation
and ``generate`` run them on oneDNN.

The maths is the same fp32 product. Only the accumulation order may differ: results were
bit-identical at K = 128 and within 1e-6 relative at K = 512. So a model evaluated with
``onednn=False`` (PyTorch's default kernel) may differ in the last bits of its scores.

oneDNN is used only where nothing else changes:
- no autograd (``torch.no_grad`` or inference mode), so training keeps PyTorch's kernels and
  their backward;
- CPU float32 tensors;
- torch built with oneDNN.
Everything else goes through ``F.linear``.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


@functools.lru_cache(maxsize=None)
def onednn_linear_available() -> bool:
    """torch has oneDNN and its fused linear op (every x86/arm64 CPU wheel does)."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and hasattr(torch.ops.mkldnn, "_linear_pointwise"))
    except (AttributeError, RuntimeError):
        return False


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           onednn: bool = True) -> torch.Tensor:
    """``F.linear(x, weight, bias)``: x [..., in], weight [out, in], bias [out] -> [..., out].
    On oneDNN when ``onednn`` and it is safe (no autograd, CPU float32), else F.linear."""
    if (onednn and not torch.is_grad_enabled() and x.device.type == "cpu"
            and x.dtype == torch.float32 and weight.dtype == torch.float32
            and onednn_linear_available()):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


class InferenceLinear(nn.Linear):
    """``nn.Linear`` (same parameters, init and state-dict keys) whose forward without
    autograd on a CPU runs on oneDNN; ``onednn = False`` keeps PyTorch's default kernel."""

    onednn: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.onednn)


def set_onednn(module: nn.Module, enabled: bool) -> None:
    """Switch every oneDNN-capable part of ``module`` (``InferenceLinear`` layers and any
    submodule with an ``onednn`` flag) on or off."""
    for sub in module.modules():
        if hasattr(sub, "onednn"):
            sub.onednn = bool(enabled)
