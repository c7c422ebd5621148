"""PyTorch's default CPU kernel for a Linear layer (MKL's sgemm) against oneDNN's, on the
generator's product shapes: the measurement behind ``modules/cpu_linear.py``.

For each [rows x in] @ [in x out] + bias it prints both kernels' GFLOP/s (fastest of 5
timings) and the largest difference between their outputs. MKL writes into a preallocated
output; oneDNN's op has no ``out=`` and allocates one per call, so its rate is if anything
understated.

    .venv/bin/python bench/linear_kernels.py --threads 1
    .venv/bin/python bench/linear_kernels.py --d_model 64 --d_ff 128 --threads 2
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.decode import _best_time  # noqa: E402
from recbole_bbqrec.modules.cpu_linear import onednn_linear, onednn_linear_available  # noqa: E402


def generator_shapes(rows: int, d_model: int, d_ff: int, head: int) -> list[tuple[int, int, int]]:
    """(rows, in, out) of the decoder's products at ``rows`` beams: fused QKV, the d x d
    projections, the FFN's two layers and the head; then the same d x d one at other sizes."""
    shapes = [(rows, d_model, 3 * d_model), (rows, d_model, d_model), (rows, d_model, d_ff),
              (rows, d_ff, d_model), (rows, d_model, head)]
    return shapes + [(r, d_model, d_model) for r in (81, 1215, 5120) if r != rows]


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=4050, help="beams per decoder call (81 users x 50)")
    p.add_argument("--d_model", type=int, default=128)
    p.add_argument("--d_ff", type=int, default=512)
    p.add_argument("--head", type=int, default=768, help="S * N logits per beam (3 x 256)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if not onednn_linear_available():
        raise SystemExit("this torch has no oneDNN: nothing to compare")
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    print(f"threads={torch.get_num_threads()}; GFLOP/s of [rows x in] @ [in x out] + bias")
    rows_out = []
    with torch.inference_mode():
        for rows, d_in, d_out in generator_shapes(args.rows, args.d_model, args.d_ff, args.head):
            x, weight, bias = torch.randn(rows, d_in), torch.randn(d_out, d_in), torch.randn(d_out)
            out = torch.empty(rows, d_out)
            flops = 2.0 * rows * d_in * d_out
            calls = min(200, max(1, int(5e8 // flops)))
            mkl = flops / _best_time(lambda: torch.addmm(bias, x, weight.T, out=out), calls, 5, cpu)
            onednn = flops / _best_time(lambda: onednn_linear(x, weight, bias), calls, 5, cpu)
            diff = float((onednn_linear(x, weight, bias) - torch.addmm(bias, x, weight.T))
                         .abs().max())
            rows_out.append({"rows": rows, "in": d_in, "out": d_out, "mkl_gflops": round(mkl / 1e9, 1),
                             "onednn_gflops": round(onednn / 1e9, 1), "max_abs_diff": diff})
            print(f"  [{rows:5d} x {d_in:4d}] @ [{d_in:4d} x {d_out:4d}]: MKL {mkl / 1e9:6.0f}  "
                  f"oneDNN {onednn / 1e9:6.0f}  ({onednn / mkl:.1f}x), max |diff| {diff:.1e}",
                  flush=True)
    return rows_out


if __name__ == "__main__":
    main()
