"""Train SASRec, TIGER and BBQRec one after another on one GPU; results, logs and a summary
under --out (called by bench/gpu/run_gpu.sh, which documents the machine this is for).

Each model is one ``run_recbole_bbqrec.py`` process at the default sizes (properties/, no CPU
budget override), validated every epoch, to early stopping or ``--minutes`` of training
(the ``time_budget`` key, which validates and stops cleanly); a wall-clock guard of
``--minutes`` + ``--grace`` minutes kills a run that hangs. ``summary.json`` lists, per
model, the exit status, the wall time, the result JSON and its test metrics; ``env.json`` the
device, torch and CUDA versions. ``--tiny``: ml-100k with a tiny config (bench/gpu/tiny.yaml),
for proving the path on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAYLOAD = os.path.join(REPO, "dataset", "gpu_payload")  # Beauty's atomic files + matrices


def environment() -> dict:
    import torch

    env = {"python": sys.version.split()[0], "torch": torch.__version__,
           "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
           "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if torch.cuda.is_available():
        env.update(device=torch.cuda.get_device_name(0),
                   bf16=torch.cuda.is_bf16_supported(),
                   memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    try:
        import numpy
        import recbole

        env.update(numpy=numpy.__version__, recbole=recbole.__version__)
    except ImportError as err:
        env["import_error"] = str(err)
    return env


def budget_key_known() -> bool:
    from recbole_bbqrec.config import known_config_keys

    return "time_budget" in known_config_keys()


def model_command(model: str, args, data_path: str, out: str) -> list[str]:
    cmd = [sys.executable, os.path.join(REPO, "run_recbole_bbqrec.py"), f"--model={model}",
           f"--dataset={args.dataset}", f"--data_path={data_path}",
           f"--results_dir={os.path.join(out, 'results')}",
           f"--checkpoint_dir={os.path.join(out, 'saved')}",
           "--use_gpu=True", "--gpu_id=0", "--show_progress=False", "--eval_step=1",
           f"--run_tag=gpu{'-amp' if args.amp else ''}"]
    if args.amp:
        cmd.append("--enable_amp=True")
    if args.minutes and budget_key_known():
        cmd += [f"--time_budget={args.minutes}", "--budget_clock=wall"]
    if args.tiny:
        cmd += [f"--config_files={os.path.join(REPO, 'bench', 'gpu', 'tiny.yaml')}"]
    return cmd + list(args.extra)


def last_result_file(text: str) -> str | None:
    """run_recbole_bbqrec.py prints the result JSON's path as its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines and lines[-1].endswith(".json") and os.path.isfile(lines[-1]) else None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for results, logs, summary")
    parser.add_argument("--models", default="SASRec,TIGER,BBQRec")
    parser.add_argument("--dataset", default=None, help="default Beauty (--tiny: ml-100k)")
    parser.add_argument("--data_path", default=None,
                        help="folder holding <dataset>/ (default dataset/gpu_payload; --tiny: "
                             "a fresh folder under --out, built from RecBole's ml-100k)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="training minutes per model (time_budget); default: early stopping")
    parser.add_argument("--grace", type=float, default=5.0,
                        help="minutes beyond --minutes before a hung run is killed")
    parser.add_argument("--amp", action="store_true", help="enable_amp=True (bf16 / fp16)")
    parser.add_argument("--tiny", action="store_true", help="ml-100k, tiny config (CPU proof)")
    sys.path.insert(0, REPO)
    from recbole_bbqrec.cli import parse_with_config_keys

    args, args.extra = parse_with_config_keys(parser, argv)
    args.dataset = args.dataset or ("ml-100k" if args.tiny else "Beauty")
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    data_path = args.data_path or (os.path.join(out, "data") if args.tiny else PAYLOAD)
    if not os.path.isdir(os.path.join(data_path, args.dataset)) and not args.tiny:
        raise SystemExit(f"error: {data_path}/{args.dataset} is missing: carry "
                         f"dataset/gpu_payload (bench/gpu/README.md)")
    env = environment()
    with open(os.path.join(out, "env.json"), "w", encoding="utf-8") as f:
        json.dump(env, f, indent=1)
    print(json.dumps(env), flush=True)

    summary = {"env": env, "dataset": args.dataset, "amp": args.amp, "minutes": args.minutes,
               "tiny": args.tiny, "runs": []}
    for model in [m for m in args.models.split(",") if m]:
        cmd = model_command(model, args, data_path, out)
        log_path = os.path.join(out, "logs", f"{model}.log")
        limit = None if args.minutes is None else 60 * (args.minutes + args.grace)
        t0 = time.time()
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(" ".join(cmd) + "\n")
            log.flush()
            try:
                proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=log, text=True, timeout=limit)
                status, stdout = proc.returncode, proc.stdout
            except subprocess.TimeoutExpired as err:
                status = "killed after %.0f s" % limit
                stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            log.write(stdout)
        run = {"model": model, "exit": status, "wall_s": round(time.time() - t0, 1),
               "command": cmd, "log": os.path.relpath(log_path, out)}
        result = last_result_file(stdout)
        if result:
            with open(result, encoding="utf-8") as f:
                record = json.load(f)
            run.update(result=os.path.relpath(result, out), test=record.get("test"),
                       valid=record.get("valid"), train_s=record.get("train_s"),
                       eval_s=record.get("eval_s"), epochs=record.get("epochs_trained"),
                       stage1_s=record.get("stage1_s"), status=record.get("status"))
        summary["runs"].append(run)
        print(json.dumps({k: run[k] for k in run if k != "command"}), flush=True)
        with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
