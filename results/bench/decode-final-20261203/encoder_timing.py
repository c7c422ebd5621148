"""Encoder time per user, grouped (encode without autograd) vs full width (_encode_rows), on the
trained tuple run's first 256 Beauty test users; best of 5 loops of 10 calls. Run from the repo
root: python results/bench/decode-final-20261203/encoder_timing.py THREADS"""
import sys, time, torch
sys.path.insert(0, "bench")
from decode import trained_run
torch.set_num_threads(int(sys.argv[1]))
model, _, (hc, m, zq), _ = trained_run("results/bench/decode-20261203/BBQRec-decodebench-tuple-d128-20261203-042913-13202.json", 256)
def best(f):
    f()
    times = []
    for _ in range(5):
        s = time.perf_counter()
        for _ in range(10): f()
        times.append((time.perf_counter() - s) / 10)
    return min(times) * 1e3 / 256
with torch.inference_mode():
    print(f"grouped {best(lambda: model.encode(hc, m, zq)):.3f} ms/user, full width {best(lambda: model._encode_rows(hc, m, zq)):.3f} ms/user")
