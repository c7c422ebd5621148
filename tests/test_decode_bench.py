"""bench/decode.py runs end to end on a small synthetic catalogue and finds the batched search
(what ``generate`` runs, pruned last level included) identical to the reference."""
import json

import pytest

from bench.decode import main

pytestmark = pytest.mark.usefixtures("single_thread")


def test_bench_reports_identical_top10_and_writes_its_rows(tmp_path, capsys):
    out = tmp_path / "bench-decode.json"
    main(["--unpruned", "--n_items", "600", "--levels", "3", "--signals", "2", "--codebook_size", "12",
          "--d_model", "16", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers", "1",
          "--d_ff", "32", "--n_buckets", "8", "--n_users", "12", "--batch_size", "8",
          "--beams", "10", "20", "--scale_items", "500", "1000", "--scale_users", "4",
          "--scale_batch", "4", "--threads", "1", "--out", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("decode speed-up: ") and lines[-1].endswith("identical top-10: yes")
    assert any(line.startswith("scaling: S=2, 1,000 vs 500 items") for line in lines)
    rows = json.loads(out.read_text())["rows"]
    assert [r["beam"] for r in rows] == [10, 20] and all(r["identical_top10"] for r in rows)
    assert rows[0]["weights"] == "random init" and rows[0]["histories"] == "random"
    assert all(r["unpruned_ms_per_user"] > 0 for r in rows)
    assert sum("unpruned last level" in line and "same top-10: True" in line for line in lines) == 2
    # The arithmetic floor: the profiler's matmul count, more of it with more beams.
    assert sum("arithmetic floor: " in line for line in lines) == 2
    assert 0 < rows[0]["matmul_mflop_per_user"] < rows[1]["matmul_mflop_per_user"]
    assert all(r["gemm_gflops"] > 0 and r["max_speed_up"] > 0 for r in rows)


def test_linear_kernels_bench_compares_both_kernels_on_the_generators_shapes(capsys):
    from bench.linear_kernels import main as kernels_main
    from recbole_bbqrec.modules.cpu_linear import onednn_linear_available

    if not onednn_linear_available():
        pytest.skip("torch without oneDNN")
    rows = kernels_main(["--rows", "64", "--d_model", "16", "--d_ff", "32", "--head", "24",
                         "--threads", "1"])
    assert [(r["in"], r["out"]) for r in rows[:5]] == [(16, 48), (16, 16), (16, 32), (32, 16),
                                                      (16, 24)]
    assert all(r["mkl_gflops"] > 0 and r["onednn_gflops"] > 0 for r in rows)
    assert all(r["max_abs_diff"] < 1e-4 for r in rows)      # the same fp32 product
    assert "oneDNN" in capsys.readouterr().out
