#!/usr/bin/env bash
# Paper Table 6 on real Beauty: per-user inference time at beams 50 and 100, batched
# constrained beam search vs the per-beam reference, trained weights and real semantic IDs.
# Usage: bash scripts/run_speed.sh RESULT_JSON [RESULT_JSON ...]   (BBQRec / TIGER runs)
# Writes results/Beauty/bench-decode-<label>.json (read by the report).
set -eu
cd "$(dirname "$0")/.."
for run in "$@"; do
  read -r label checkpoint sid args < <(.venv/bin/python - "$run" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c = r["config"]
args = (f"--d_model {c['d_model']} --n_heads {c['n_heads']} --encoder_layers {c['n_encoder_layers']} "
        f"--decoder_layers {c['n_decoder_layers']} --d_ff {c['d_ff']} --n_buckets {c['n_buckets']} "
        f"--codebook_size {c['codebook_size']} --max_history {c['MAX_ITEM_LIST_LENGTH']}"
        + ("" if c["similarity_attention"] else " --no_similarity"))
print(r["label"], r["checkpoint"], f"{c['data_path']}/{r['dataset']}.{r['stage1']['hash']}.sid", args)
PY
)
  .venv/bin/python bench/decode.py --codes "$sid" --checkpoint "$checkpoint" \
    --checkpoint_prefix generator. $args --beams 50 100 --scale_items --threads 1 \
    --label "$label" --out "results/Beauty/bench-decode-$label.json"
done
