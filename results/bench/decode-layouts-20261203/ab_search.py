"""The search part before (a0cccca: padded [B, W, C] tables at every level) and now, alternating
in one process on a trained run's first 256 Beauty test users, beam 50; checks that both return
the same items and scores. Run from the repo root:
    python results/bench/decode-layouts-20261203/ab_search.py THREADS RESULT_JSON [ROUNDS]"""
import subprocess, sys, types, torch
sys.path.insert(0, "bench")
from decode import trained_run, timed_search
import recbole_bbqrec.modules.generator as gen
from recbole_bbqrec.modules import beam_search as new

source = subprocess.run(["git", "show", "a0cccca:recbole_bbqrec/modules/beam_search.py"],
                        check=True, capture_output=True, text=True).stdout
old = types.ModuleType("recbole_bbqrec.modules._beam_search_a0cccca")
old.__package__ = "recbole_bbqrec.modules"
exec(compile(source, "beam_search@a0cccca", "exec"), old.__dict__)

torch.set_num_threads(int(sys.argv[1]))
n_users, rounds = 256, int(sys.argv[3]) if len(sys.argv) > 3 else 7
model, index, hist, _ = trained_run(sys.argv[2], n_users)
res, times = {}, {"a0cccca": [], "now": []}
for _ in range(rounds):
    for name, mod in (("a0cccca", old), ("now", new)):
        gen.constrained_beam_search = mod.constrained_beam_search
        items, scores, secs, model_secs = timed_search(model, index, hist, 50, 256)
        times[name].append((secs * 1e3 / n_users, (secs - model_secs) * 1e3 / n_users))
        res.setdefault(name, (items, scores))
print(f"{sys.argv[2]}, {sys.argv[1]} thread(s), beam 50, {n_users} users, {rounds} alternating rounds")
for name, t in times.items():
    tot, search = sorted(x[0] for x in t), sorted(x[1] for x in t)
    print(f"{name:8s} total ms/user best {tot[0]:.3f} median {tot[rounds // 2]:.3f} | "
          f"search part best {search[0]:.3f} median {search[rounds // 2]:.3f}")
same = all(torch.equal(a, b) for a, b in zip(res["a0cccca"], res["now"]))
print(f"same items and scores: {'yes' if same else 'no'}")
