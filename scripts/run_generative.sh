#!/usr/bin/env bash
# A generative model on real Beauty at the 2-core CPU budget (log in results/logs/).
# Usage: bash scripts/run_generative.sh [MODEL [extra --key=value ...]]
#   bash scripts/run_generative.sh BBQRec
#   bash scripts/run_generative.sh TIGER
#   LOG=TIGER-LETTER EXTRA_CONFIG=properties/overrides/letter.yaml \
#     bash scripts/run_generative.sh TIGER --letter_cf_checkpoint=saved/SASRec-....pth
set -u
cd "$(dirname "$0")/.."
mkdir -p results/logs
MODEL=${1:-BBQRec}
shift || true
CONFIG_FILES="properties/overrides/cpu_budget.yaml ${EXTRA_CONFIG:-}"
.venv/bin/python run_recbole_bbqrec.py --model=$MODEL --dataset=Beauty --show_progress=False \
  --torch_threads=1 --config_files="${CONFIG_FILES% }" "$@" > results/logs/Beauty-${LOG:-$MODEL}.log 2>&1
