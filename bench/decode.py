"""Decoding benchmark: batched trie-constrained beam search vs the per-beam reference.

Same generator weights for both searches.  The reference calls the plain cached step function
(``make_step_fn``: the whole batch at once, full KV cache gathered per step, as a Hugging Face
decoder is driven); the batched search runs what ``generate`` runs (``decode``: users in
cache-sized chunks, BOS shared per user, the last level pruned to the beams that can reach the
top 10).  Both compute the same log-probs up to float rounding, so their top-10 must be
identical.  A random-init model (the default) is the worst case for the pruning: its flat
distributions leave every beam in reach; ``--result`` decodes a trained run's test users.
Reports users/second of each, the speed-up, the model/search split, and how the batched
per-user time grows with the catalogue (10k, 100k, 1M synthetic items, for every S in
--scale_signals).  Also the arithmetic floor: the matmul FLOPs of the batched search
(torch.profiler's count) over the best FLOP rate this machine reaches on the search's
costliest product shapes, a lower bound on the time of a search that runs these products, and
so the most it could gain over the reference at that rate (not a proof against faster
kernels: the rate is measured, not the core's nominal peak).

    .venv/bin/python bench/decode.py                       # random init, synthetic codes
    .venv/bin/python bench/decode.py --codes ids.npy --checkpoint gen.pt
    .venv/bin/python bench/decode.py --result results/Beauty/<run>.json --unpruned  # trained

Targets (reported, not asserted): batched >= 10x the reference at identical output;
<= 5 ms per user at beam 50 on 2 CPU cores for ~12k items, L=3, S=3, N=256, d_model=128.
The last stdout line is ``decode speed-up: <ratio>x, identical top-10: yes|no`` (the
smallest ratio measured).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from recbole_bbqrec.atomic_io import atomic_write_json  # noqa: E402
from recbole_bbqrec.results import command_line  # noqa: E402
from bench.reference_beam_search import build_trie, reference_beam_search  # noqa: E402
from recbole_bbqrec.modules.beam_search import PrefixIndex  # noqa: E402
from recbole_bbqrec.modules.cpu_linear import (onednn_linear, onednn_linear_available,  # noqa: E402
                                               set_onednn)
from recbole_bbqrec.modules.generator import SemanticIDGenerator  # noqa: E402


def synthetic_codes(n_items: int, n_levels: int, n_signals: int, n_codes: int,
                    seed: int) -> torch.Tensor:
    """Distinct uniform random semantic IDs [n_items, L, S]."""
    space = float(n_codes) ** (n_levels * n_signals)
    if space < n_items:
        raise ValueError(f"{n_codes}^{n_levels * n_signals} IDs cannot hold {n_items} items")
    gen = torch.Generator().manual_seed(seed)
    rows = torch.empty(0, n_levels * n_signals, dtype=torch.long)
    while rows.shape[0] < n_items:
        extra = torch.randint(0, n_codes, (int(n_items * 1.1) + 16, n_levels * n_signals),
                              generator=gen)
        rows = torch.unique(torch.cat([rows, extra]), dim=0)
    rows = rows[torch.randperm(rows.shape[0], generator=gen)[:n_items]]
    return rows.view(n_items, n_levels, n_signals)


def load_codes(path: str) -> torch.Tensor:
    codes = np.load(path)
    if codes.ndim != 3:
        raise ValueError(f"{path}: expected an int array [n_items, L, S], got shape {codes.shape}")
    return torch.from_numpy(codes.astype(np.int64))


def load_trained_run(result: str, trainer: bool = False):
    """A finished run rebuilt from its results JSON (``results/<dataset>/*.json``) with its
    checkpoint loaded weights-only, in eval mode -> ``quick_start.RunParts``. Refuses a run
    whose stage-1 IDs are no longer cached: rebuilding would train new IDs that the
    checkpoint was never trained on (their hash is the config's, so nothing else would tell)."""
    from recbole_bbqrec.checkpoints import load_model_weights
    from recbole_bbqrec.quick_start import build_run
    from recbole_bbqrec.recommend import read_result_run

    config, checkpoint = read_result_run(result)
    parts = build_run(config, split=True, trainer=trainer)   # stage-1 IDs come from its cache
    if parts.stage1 is not None and not parts.stage1.get("reused", True):
        raise ValueError(f"{result}: its stage-1 IDs were not in the cache, so they were just "
                         f"trained anew and do not match its checkpoint; rerun the run itself")
    load_model_weights(parts.model, checkpoint, "cpu")
    parts.model.eval()
    return parts, checkpoint


def trained_run(result: str, n_users: int):
    """A finished run's generator, prefix index and its first ``n_users`` test users' real
    histories (what evaluation decodes), from its results JSON (``results/<dataset>/*.json``):
    -> (generator, index, (hist_codes, mask, zq), label)."""
    parts, checkpoint = load_trained_run(result)
    config, model = parts.config, parts.model
    if not hasattr(model, "generator"):
        raise ValueError(f"{result} is a {config['model']} run: the bench needs a generative "
                         f"model (BBQRec or TIGER)")
    hists = []
    for batch in parts.test_data:
        hist_codes, mask, zq = model._history(batch[0])
        if zq is None:    # plain attention (TIGER): the encoder never reads zq, the bench slices it
            zq = torch.zeros(*mask.shape, 1)
        hists.append((hist_codes, mask, zq))
        if sum(h[0].shape[0] for h in hists) >= n_users:
            break
    hist = tuple(torch.cat(column)[:n_users] for column in zip(*hists))
    label = f"{config['dataset']} {config['model']} {os.path.basename(checkpoint)}"
    return model.generator, model.prefix_index, hist, label


def make_histories(codes: torch.Tensor, n_users: int, max_history: int, zq_dim: int,
                   seed: int):
    """Random user histories of 5..max_history real items (right-padded, RecBole layout)."""
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(0, codes.shape[0], (n_users, max_history), generator=gen)
    lengths = torch.randint(min(5, max_history), max_history + 1, (n_users,), generator=gen)
    mask = torch.arange(max_history)[None, :] < lengths[:, None]
    item_zq = torch.randn(codes.shape[0], zq_dim, generator=gen)
    hist_codes = codes[items].masked_fill(~mask[:, :, None, None], 0)
    return hist_codes, mask, item_zq[items]


def synchronize(device: torch.device) -> None:
    """Wait for the queued GPU work, so that a wall-clock time covers it (no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Timed:
    """Wraps a step function and accumulates the seconds spent inside it (the model)."""

    def __init__(self, step, device: torch.device):
        self.step, self.seconds, self.device = step, 0.0, device

    def __call__(self, *args):
        start = time.perf_counter()
        out = self.step(*args)
        synchronize(self.device)
        self.seconds += time.perf_counter() - start
        return out


def timed_search(model, index, hist, beam, batch, reference_trie=None, prune=True):
    """Encode + search every user in chunks of ``batch``: the batched search is exactly what
    ``generate`` runs (``decode``, with its user chunks and pruned last level); the reference
    takes each chunk whole. Returns items, scores, total seconds, model seconds (encoder +
    decoder steps)."""
    hist_codes, mask, zq = hist
    device = hist_codes.device
    synchronize(device)
    outs, steps, model_seconds, start = [], [], 0.0, time.perf_counter()

    def timed(step):
        steps.append(_Timed(step, device))
        return steps[-1]
    for lo in range(0, hist_codes.shape[0], batch):
        sl = slice(lo, lo + batch)
        t0 = time.perf_counter()
        memory = model.encode(hist_codes[sl], mask[sl], zq[sl])
        synchronize(device)
        model_seconds += time.perf_counter() - t0
        if reference_trie is None:
            outs.append(model.decode(memory, mask[sl], index, beam, topk=10, wrap_step=timed,
                                     prune=prune))
            continue
        t0 = time.perf_counter()
        plain = model.make_step_fn(memory, mask[sl])
        # The reference builds its prefixes on the CPU, as a per-beam Python loop does.
        step = timed(lambda prefix, parent, plain=plain: plain(
            prefix.to(device), None if parent is None else parent.to(device)))
        synchronize(device)
        model_seconds += time.perf_counter() - t0
        outs.append(reference_beam_search(step, index.item_codes, memory.shape[0], beam,
                                          topk=10, trie=reference_trie))
    synchronize(device)
    seconds = time.perf_counter() - start
    model_seconds += sum(step.seconds for step in steps)
    # on the CPU, where the reference's results are (compared after the timing)
    return (torch.cat([o[0] for o in outs]).cpu(), torch.cat([o[1] for o in outs]).cpu(),
            seconds, model_seconds)


# Ops whose arithmetic the floor counts: the model's matrix products (torch.profiler's FLOP
# counts; elementwise ops are memory-bound and left out, which only lowers the floor).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
# The floor's rate is the best over this many of the search's costliest product shapes.
RATE_SHAPES = 8


def matmul_work(model, index, hist, beam: int, batch: int) -> tuple[float, list]:
    """The matrix products of one batched search (encoder + pruned beam search, what
    ``timed_search`` runs), from torch.profiler: (FLOPs per user, [(flops, op, input
    shapes)] per distinct op and shape, costliest first). The profiler counts FLOPs of
    aten's products only, so this run keeps the Linear layers on PyTorch's default kernel
    (the same products as on oneDNN)."""
    from torch.profiler import ProfilerActivity, profile

    onednn = [(sub, sub.onednn) for sub in model.modules() if hasattr(sub, "onednn")]
    set_onednn(model, False)
    try:
        with profile(activities=[ProfilerActivity.CPU], with_flops=True,
                     record_shapes=True) as prof:
            timed_search(model, index, hist, beam, batch)
    finally:
        for sub, flag in onednn:
            sub.onednn = flag
    shapes = sorted(((e.flops, e.key, e.input_shapes)
                     for e in prof.key_averages(group_by_input_shape=True)
                     if e.key in MATMUL_OPS and e.flops), key=lambda row: -row[0])
    return sum(row[0] for row in shapes) / hist[0].shape[0], shapes


def _best_time(fn, calls: int, repeats: int, device: torch.device) -> float:
    """Fastest of ``repeats`` timings of ``calls`` calls, seconds per call (after a warm-up)."""
    best = float("inf")
    for i in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
        if i:
            best = min(best, (time.perf_counter() - start) / calls)
    return best


def product_rate(op: str, shapes: list, device: torch.device, repeats: int = 5) -> float:
    """The best FLOP/s of torch's kernels on one product ``op`` with operands of ``shapes``
    (as the profiler records them), fastest of ``repeats`` timings. aten's kernel writes into
    a preallocated output (no allocation or page faults in the timing). A Linear's product
    is also timed on oneDNN on a CPU; that op has no ``out=`` and allocates its output each
    call, so its rate is if anything understated."""
    randn = functools.partial(torch.randn, device=device)
    if op in ("aten::addmm", "aten::mm"):           # addmm: bias [n], x [m, k], weight.T [k, n]
        left, right = shapes[:2] if op == "aten::mm" else shapes[1:3]
        (m, k), n = left, right[1]
        x, weight = randn(m, k), randn(n, k)
        bias = randn(n) if op == "aten::addmm" else None
        out, flops = torch.empty(m, n, device=device), 2.0 * m * k * n
        kernels = [(lambda: torch.addmm(bias, x, weight.T, out=out)) if bias is not None else
                   (lambda: torch.mm(x, weight.T, out=out))]
        if device.type == "cpu" and onednn_linear_available():
            kernels.append(lambda: onednn_linear(x, weight, bias))
    else:                         # bmm [b, m, k] @ [b, k, n]; baddbmm (bias first) timed as bmm
        left, right = shapes[1:3] if op == "aten::baddbmm" else shapes[:2]
        (b, m, k), n = left, right[2]
        a, c = randn(b, m, k), randn(b, k, n)
        out, flops = torch.empty(b, m, n, device=device), 2.0 * b * m * k * n
        kernels = [lambda: torch.bmm(a, c, out=out)]
    calls = min(200, max(1, int(5e8 // flops)))        # ~0.5 GFLOP (or 200 calls) a timing
    with torch.no_grad():
        return max(flops / _best_time(fn, calls, repeats, device) for fn in kernels)


def best_rate(shapes: list, device: torch.device) -> float:
    """The best FLOP/s this machine reaches on the search's ``RATE_SHAPES`` costliest product
    shapes: charging every product at the best one's rate makes FLOPs / rate a lower bound on
    the products' time."""
    return max(product_rate(op, [list(s) for s in inputs], device)
               for _, op, inputs in shapes[:RATE_SHAPES])


def print_profile(model, index, hist, beam: int, batch: int, rows: int) -> None:
    """Where the batched search spends its time: the ``rows`` ops with the most self time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if index.item_codes.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=True) as prof:
        timed_search(model, index, hist, beam, batch)
    n = hist[0].shape[0]
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"profile of the batched search, beam {beam}: {total / 1e3 / n:.2f} ms/user of CPU "
          f"op time; the {rows} costliest ops (self time, per user):")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:rows]:
        shapes = str(e.input_shapes)[:90]
        share = 100 * e.self_cpu_time_total / total
        print(f"  {e.self_cpu_time_total / 1e3 / n:7.3f} ms  {share:5.1f}%  x{e.count:<5d} "
              f"{e.key:28s} {shapes}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--codes", help=".npy int array [n_items, L, S], or a stage-1 .sid file; "
                                   "default: synthetic")
    p.add_argument("--result", help="a finished run's results JSON: its trained model, IDs and "
                                    "real test histories (overrides --codes, --checkpoint and "
                                    "the model sizes)")
    p.add_argument("--checkpoint", help="generator state dict (torch.save), loaded weights-only")
    p.add_argument("--checkpoint_prefix", default="",
                   help="key prefix of the generator inside the checkpoint, e.g. 'generator.'")
    p.add_argument("--n_items", type=int, default=12000)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--signals", type=int, default=3)
    p.add_argument("--codebook_size", type=int, default=256)
    p.add_argument("--d_model", type=int, default=128)
    p.add_argument("--n_heads", type=int, default=4)
    p.add_argument("--encoder_layers", type=int, default=4)
    p.add_argument("--decoder_layers", type=int, default=4)
    p.add_argument("--d_ff", type=int, default=512)
    p.add_argument("--n_buckets", type=int, default=100)
    p.add_argument("--no_similarity", action="store_true",
                   help="plain attention (TIGER checkpoints have no bucket tables)")
    p.add_argument("--max_history", type=int, default=20)
    p.add_argument("--n_users", type=int, default=256, help="users for the batched-vs-reference run")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--beams", type=int, nargs="+", default=[20, 50])
    p.add_argument("--scale_items", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--scale_signals", type=int, nargs="*", default=None,
                   help="S of the scaling run's synthetic IDs (default: the catalogue's S); "
                        "an S other than the catalogue's gets its own random-init model")
    p.add_argument("--scale_users", type=int, default=64)
    p.add_argument("--scale_batch", type=int, default=64,
                   help="users per chunk in the scaling run (the root level holds [B, n_items])")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu",
                   help="where the model and the batched search run, e.g. cuda (the reference "
                        "search runs its Python on the CPU, its model on this device)")
    p.add_argument("--repeats", type=int, default=1,
                   help="time each search this many times and keep the fastest (a shared machine)")
    p.add_argument("--unpruned", action="store_true",
                   help="also time the batched search scoring every last-level beam (no "
                        "pruning): what the pruned last level saves, same top-10")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also profile one batched search at the largest beam and print its N "
                        "costliest ops (self time, torch.profiler)")
    p.add_argument("--no_onednn", action="store_true",
                   help="keep the Linear layers on PyTorch's default CPU kernel (MKL) instead of "
                        "oneDNN (modules/cpu_linear.py), for both searches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the per-beam rows as JSON here, e.g. "
                                 "results/Beauty/bench-decode-BBQRec.json (read by the report)")
    p.add_argument("--label", default=None, help="the `ids` column of --out (default: --codes)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    if args.result:
        model, index, hist, label = trained_run(args.result, args.n_users)
        codes, args.label = index.item_codes, args.label or label
        n_codes, args.no_similarity = model.codebook_size, not model.use_similarity
    else:
        if args.codes and args.codes.endswith(".sid"):
            from recbole_bbqrec.tokenizers.semantic_ids import read_sid_file

            codes = torch.from_numpy(read_sid_file(args.codes)[1])
        else:
            codes = load_codes(args.codes) if args.codes else synthetic_codes(
                args.n_items, args.levels, args.signals, args.codebook_size, args.seed)
        n_levels, n_signals = codes.shape[1], codes.shape[2]
        n_codes = max(args.codebook_size, int(codes.max()) + 1)
        model = SemanticIDGenerator(n_levels, n_signals, n_codes, args.d_model, args.n_heads,
                                    args.encoder_layers, args.decoder_layers, args.d_ff, 0.0,
                                    args.max_history, args.n_buckets,
                                    use_similarity=not args.no_similarity)
        if args.checkpoint:
            state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
            if args.checkpoint_prefix:
                state = {k[len(args.checkpoint_prefix):]: v for k, v in state.items()
                         if k.startswith(args.checkpoint_prefix)}
            model.load_state_dict(state)
        model.eval()
    n_levels, n_signals = codes.shape[1], codes.shape[2]
    set_onednn(model, not args.no_onednn)
    device = torch.device(args.device)
    model.to(device)
    codes = codes.cpu()
    weights = "trained: " + args.result if args.result else "random init"
    print(f"catalogue: {codes.shape[0]} items, L={n_levels}, S={n_signals}, N={n_codes}; "
          f"d_model={model.d_model}, enc/dec layers {len(model.encoder.layers)}/"
          f"{len(model.decoder_layers)}, {weights}"
          f", threads={torch.get_num_threads()}, device={device}, CPU Linear kernel: "
          f"{'MKL' if args.no_onednn or not onednn_linear_available() else 'oneDNN'}",
          flush=True)

    ratios, identical, rows = [], True, []
    with torch.inference_mode():
        start = time.perf_counter()
        index = PrefixIndex.from_codes(codes).to(device)
        print(f"prefix index built in {time.perf_counter() - start:.2f}s "
              f"(children per level: {[t.shape[1] for t in index.child_codes]})")
        start = time.perf_counter()
        trie = build_trie(codes)
        print(f"reference dict trie built in {time.perf_counter() - start:.2f}s")
        if not args.result:
            hist = make_histories(codes, args.n_users, args.max_history, 3 * args.d_model,
                                  args.seed)
        hist = tuple(t.to(device) for t in hist)
        warm = tuple(t[:8] for t in hist)
        timed_search(model, index, warm, max(args.beams), 8)               # warm-up
        for beam in args.beams:
            items, scores, t_fast, m_fast = min(
                (timed_search(model, index, hist, beam, args.batch_size)
                 for _ in range(args.repeats)), key=lambda run: run[2])
            ref_items, ref_scores, t_ref, m_ref = min(
                (timed_search(model, index, hist, beam, args.batch_size, trie)
                 for _ in range(args.repeats)), key=lambda run: run[2])
            same = torch.equal(items, ref_items)
            identical &= same
            ratio = t_ref / t_fast
            ratios.append(ratio)
            n = hist[0].shape[0]
            search_fast, search_ref = t_fast - m_fast, t_ref - m_ref
            print(f"beam {beam:3d}: batched {n / t_fast:8.1f} users/s ({1e3 * t_fast / n:.2f} "
                  f"ms/user) | reference {n / t_ref:7.1f} users/s ({1e3 * t_ref / n:.2f} "
                  f"ms/user) | speed-up {ratio:.1f}x | top-10 identical: {same} "
                  f"(max |score diff| {(scores - ref_scores).abs().max().item():.2e})", flush=True)
            rows.append({"ids": args.label or args.codes or "synthetic", "beam": beam,
                         "users": n, "batched_ms_per_user": round(1e3 * t_fast / n, 2),
                         "reference_ms_per_user": round(1e3 * t_ref / n, 2),
                         "speed_up": round(ratio, 1),
                         "search_speed_up": round(search_ref / max(search_fast, 1e-9), 1),
                         "identical_top10": same, "threads": torch.get_num_threads(),
                         "device": str(device),
                         "weights": args.result or args.checkpoint or "random init",
                         "histories": "test users" if args.result else "random"})
            print(f"          of which model (encoder + decoder steps, same step_fn): "
                  f"{1e3 * m_fast / n:.2f} / {1e3 * m_ref / n:.2f} ms/user; search alone: "
                  f"{1e3 * search_fast / n:.3f} vs {1e3 * search_ref / n:.2f} ms/user = "
                  f"{search_ref / max(search_fast, 1e-9):.0f}x", flush=True)
            # What exactness leaves: the matmuls alone, at the best rate this machine reaches.
            flops, shapes = matmul_work(model, index, hist, beam, args.batch_size)
            rate = best_rate(shapes, device)
            floor = flops / rate                                         # seconds per user
            rows[-1].update(matmul_mflop_per_user=round(flops / 1e6, 3),
                            gemm_gflops=round(rate / 1e9, 1),
                            max_speed_up=round(t_ref / n / floor, 1))
            print(f"          arithmetic floor: {flops / 1e6:.0f} MFLOP/user of matmuls, at the "
                  f"best {rate / 1e9:.0f} GFLOP/s this machine reached on their {RATE_SHAPES} "
                  f"costliest shapes >= {1e3 * floor:.2f} ms/user: at most "
                  f"{t_ref / n / floor:.1f}x the reference without scoring fewer beams", flush=True)
            if args.unpruned:
                full_items, full_scores, t_full, m_full = min(
                    (timed_search(model, index, hist, beam, args.batch_size, prune=False)
                     for _ in range(args.repeats)), key=lambda run: run[2])
                # Pruned rounds call the model on fewer rows: its matmuls may round the last
                # bit differently (as between the batched and reference searches).
                same_full = torch.equal(items, full_items)
                identical &= same_full
                rows[-1]["unpruned_ms_per_user"] = round(1e3 * t_full / n, 2)
                print(f"          unpruned last level: {1e3 * t_full / n:.2f} ms/user (model "
                      f"{1e3 * m_full / n:.2f}); pruning saves {100 * (1 - t_fast / t_full):.0f}%"
                      f", same top-10: {same_full} (max |score diff| "
                      f"{(scores - full_scores).abs().max().item():.2e})", flush=True)

        beam = max(args.beams)
        if args.profile:
            print_profile(model, index, hist, beam, args.batch_size, args.profile)
        for signals in (args.scale_signals or [n_signals]) if args.scale_items else []:
            scale_model = model if signals == n_signals else SemanticIDGenerator(
                n_levels, signals, n_codes, args.d_model, args.n_heads, args.encoder_layers,
                args.decoder_layers, args.d_ff, 0.0, args.max_history, args.n_buckets,
                use_similarity=not args.no_similarity).eval().to(device)
            set_onednn(scale_model, not args.no_onednn)
            per_user = []
            for n_items in args.scale_items:
                big = synthetic_codes(n_items, n_levels, signals, n_codes, args.seed + 1)
                big_index = PrefixIndex.from_codes(big).to(device)
                big_hist = tuple(t.to(device) for t in make_histories(
                    big, args.scale_users, args.max_history, 3 * args.d_model, args.seed))
                timed_search(scale_model, big_index, tuple(t[:4] for t in big_hist), beam, 4)
                _, _, secs, model_secs = timed_search(scale_model, big_index, big_hist, beam,
                                                      args.scale_batch)
                per_user.append(1e3 * secs / args.scale_users)
                print(f"scaling: S={signals}, {n_items:>9,d} items, beam {beam}: "
                      f"{per_user[-1]:.2f} ms/user, of which search "
                      f"{1e3 * (secs - model_secs) / args.scale_users:.2f} ms/user "
                      f"({min(args.scale_batch, args.scale_users)} users per call)", flush=True)
                del big, big_index
            print(f"scaling: S={signals}, {args.scale_items[-1]:,d} vs {args.scale_items[0]:,d} "
                  f"items: {per_user[-1] / per_user[0]:.2f}x per-user time", flush=True)

    if args.out:
        atomic_write_json(args.out, {"rows": rows, "command": command_line()}, sort_keys=False)
        print(f"wrote {args.out}")
    print(f"decode speed-up: {min(ratios):.1f}x, identical top-10: {'yes' if identical else 'no'}")


if __name__ == "__main__":
    main()
