#!/usr/bin/env bash
# BBQRec and TIGER on real Beauty at the 2-core CPU budget (logs in results/logs/).
set -u
cd "$(dirname "$0")/.."
COMMON="--dataset=Beauty --show_progress=False --torch_threads=1 --config_files=properties/overrides/cpu_budget.yaml"
.venv/bin/python run_recbole_bbqrec.py --model=BBQRec $COMMON > results/logs/Beauty-BBQRec.log 2>&1
.venv/bin/python run_recbole_bbqrec.py --model=TIGER $COMMON > results/logs/Beauty-TIGER.log 2>&1
