#!/usr/bin/env bash
# Baselines on real Beauty, one after another (logs in results/logs/).
# Usage: bash scripts/run_baselines.sh [MODEL ...]   (default: the ID-only and feature-fused set)
set -u
cd "$(dirname "$0")/.."
mkdir -p results/logs
COMMON="--dataset=Beauty --epochs=12 --stopping_step=3 --show_progress=False --torch_threads=1"
MODELS=${*:-SASRec SASRecBCE GRU4Rec BERT4Rec GRU4RecF SASRecF NOVA}
for spec in $MODELS; do
  .venv/bin/python run_recbole_bbqrec.py --model=$spec $COMMON > results/logs/Beauty-$spec.log 2>&1
done
