#!/usr/bin/env bash
# Baselines on real Beauty, one after another (logs in results/logs/).
set -u
cd "$(dirname "$0")/.."
COMMON="--dataset=Beauty --epochs=12 --stopping_step=3 --show_progress=False --torch_threads=1"
for spec in "SASRec" "SASRecBCE" "GRU4Rec" "BERT4Rec"; do
  .venv/bin/python run_recbole_bbqrec.py --model=$spec $COMMON > results/logs/Beauty-$spec.log 2>&1
done
