"""Linear layers that run on oneDNN when the generator infers on a CPU.

PyTorch sends a CPU float32 ``nn.Linear`` to MKL's sgemm. On the AMD machine this project is
measured on (Zen 5, AVX-512), MKL takes a slower path: 70-97 GFLOP/s per core on the
generator's products. oneDNN, which ships inside the same torch wheel, reached 2.0-2.5x that
on the same shapes (``bench/linear_kernels.py``; tiny 81-row products about even).
Decoding is mostly these products, so evaluation and ``generate`` run them on oneDNN.

The maths is the same fp32 product. Only the accumulation order may differ: results were
bit-identical at K = 128 and within about 5e-6 relative at K = 512. So a model evaluated with
``onednn=False`` (PyTorch's default kernel) may differ in the last bits of its scores.

oneDNN is used only where nothing else changes:
- no autograd (``torch.no_grad`` or inference mode), so gradient steps keep PyTorch's kernels
  and their backward (validation, which picks the best epoch, does run on oneDNN);
- CPU float32 tensors, on an x86-64 CPU (the only kind measured);
- torch built with oneDNN and not switched off (``torch.backends.mkldnn.flags``).
Everything else goes through ``F.linear``.
"""
from __future__ import annotations

import functools
import platform

import torch
import torch.nn.functional as F
from torch import nn


@functools.lru_cache(maxsize=None)
def onednn_linear_available() -> bool:
    """An x86-64 CPU and a torch with oneDNN and its fused linear op (every x86-64 wheel)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and hasattr(torch.ops.mkldnn, "_linear_pointwise"))
    except (AttributeError, RuntimeError):
        return False


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
                  ) -> torch.Tensor:
    """x @ weight.T (+ bias) on oneDNN's kernel, unconditionally (``linear`` checks first)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           onednn: bool = True) -> torch.Tensor:
    """``F.linear(x, weight, bias)``: x [..., in], weight [out, in], bias [out] -> [..., out].
    On oneDNN when ``onednn`` and it is safe (no autograd, CPU float32), else F.linear."""
    if (onednn and not torch.is_grad_enabled() and x.device.type == "cpu"
            and x.dtype == torch.float32 and weight.dtype == torch.float32
            and onednn_linear_available() and torch.backends.mkldnn.enabled):
        return onednn_linear(x, weight, bias)
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
