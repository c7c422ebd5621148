#!/usr/bin/env bash
# BBQRec or TIGER on real Beauty at the 2-core CPU budget (log in results/logs/).
set -u
cd "$(dirname "$0")/.."
MODEL=${1:-BBQRec}
.venv/bin/python run_recbole_bbqrec.py --model=$MODEL --dataset=Beauty --show_progress=False \
  --torch_threads=1 --config_files=properties/overrides/cpu_budget.yaml > results/logs/Beauty-$MODEL.log 2>&1
