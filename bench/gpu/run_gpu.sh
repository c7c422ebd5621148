#!/usr/bin/env bash
# One prepared GPU check: install what is missing offline, run the CUDA tests, train SASRec,
# TIGER and BBQRec on Beauty, leave result JSONs, logs and a summary under $OUT.
#
#   bash bench/gpu/run_gpu.sh [--tiny] [install|test|train|decode|all] [driver options ...]
#
# install  python env with recbole: this checkout's .venv if it has recbole, else a venv at
#          $BBQREC_GPU_ENV (default dataset/gpu_env, --system-site-packages so the machine's
#          CUDA torch and numpy are used) filled offline from every dataset/gpu_wheelhouse*
#          folder (or $WHEELHOUSE); nothing is downloaded. Building the wheelhouse:
#          bench/gpu/README.md.
# test     tests/test_gpu_path.py (CUDA parts run when a GPU is visible) and tests/test_ddp.py.
# train    bench/gpu/driver.py: the three models on Beauty (dataset/gpu_payload/Beauty, see
#          README) at the default sizes, to early stopping or --minutes per model.
# decode   bench/decode.py --device cuda on the carried semantic IDs (dataset/gpu_payload/
#          decode/*.sid, else synthetic ones), random init at the bench defaults, 2048 users:
#          the batched search against the reference, and 10k vs 1M items (issue 14's CUDA
#          figure); $OUT/decode.json and logs/decode.log.
# --tiny   the same path on ml-100k with a tiny config (minutes on a CPU): proves the script.
# Options after the mode go to driver.py (--minutes 3, --amp, --models SASRec,BBQRec ...).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD

MODE=all
TINY=()
DRIVER_ARGS=()
for arg in "$@"; do
    case "$arg" in
        --tiny) TINY=(--tiny) ;;
        install|test|train|decode|all) MODE=$arg ;;
        *) DRIVER_ARGS+=("$arg") ;;
    esac
done
OUT=${OUT:-$REPO/bench/gpu/out}
mkdir -p "$OUT/logs"
ENV_DIR=${BBQREC_GPU_ENV:-dataset/gpu_env}

pick_python() {
    if [ -n "${BBQREC_PYTHON:-}" ]; then echo "$BBQREC_PYTHON"; return; fi
    if [ -x .venv/bin/python ] && .venv/bin/python -c "import recbole" 2>/dev/null; then
        echo .venv/bin/python; return
    fi
    echo "$ENV_DIR/bin/python"
}
PY=$(pick_python)
IMPORTS="import recbole, scipy, pandas, sklearn, yaml, colorlog, colorama, texttable, tqdm, pytest, torch.utils.tensorboard"

do_install() {
    if [ -x "$PY" ] && "$PY" -c "$IMPORTS" 2>/dev/null; then
        echo "install: $PY already has everything"
        return
    fi
    local links=()
    for wh in ${WHEELHOUSE:-dataset/gpu_wheelhouse*}; do
        [ -d "$wh" ] && links+=(--find-links "$wh")
    done
    if [ ${#links[@]} -eq 0 ]; then
        echo "install: $PY lacks packages and no wheelhouse was carried (dataset/gpu_wheelhouse*)" >&2
        exit 2
    fi
    [ -x "$PY" ] || python3 -m venv --system-site-packages "$ENV_DIR"
    "$PY" -m pip install --no-index "${links[@]}" -r bench/gpu/requirements-gpu.txt \
        2>&1 | tee "$OUT/logs/install.log"
    "$PY" -m pip install --no-index "${links[@]}" --no-deps recbole==1.2.1 \
        2>&1 | tee -a "$OUT/logs/install.log"
    "$PY" -c "$IMPORTS; print('install: ok')"
}

do_test() {
    PYTHONPATH=$REPO "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_gpu_path.py \
        tests/test_ddp.py --junitxml="$OUT/tests.xml" 2>&1 | tee "$OUT/logs/tests.log" \
        || echo "tests failed (see $OUT/logs/tests.log); training anyway" >&2
}

do_train() {
    PYTHONPATH=$REPO "$PY" bench/gpu/driver.py --out "$OUT" "${TINY[@]}" "${DRIVER_ARGS[@]}"
}

do_decode() {
    local codes=() sid device=cuda
    sid=$(ls dataset/gpu_payload/decode/*.sid 2>/dev/null | head -n 1 || true)
    [ -n "$sid" ] && codes=(--codes "$sid")
    local users=(--n_users 2048 --batch_size 2048 --scale_users 1024 --scale_batch 1024)
    if ! "$PY" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
        if [ ${#TINY[@]} -eq 0 ]; then
            echo "decode: no CUDA device visible (the full-size bench would take hours on a CPU; --tiny proves the path)" >&2
            return 2
        fi
        device=cpu
    fi
    [ ${#TINY[@]} -gt 0 ] && users=(--n_users 64 --batch_size 64 --scale_users 16 --scale_batch 16 \
        --n_items 2000 --d_model 32 --encoder_layers 1 --decoder_layers 1 --d_ff 64)
    PYTHONPATH=$REPO "$PY" bench/decode.py --device "$device" ${codes[@]+"${codes[@]}"} \
        "${users[@]}" --beams 20 50 --scale_items 10000 1000000 --repeats 2 --threads 4 \
        --out "$OUT/decode.json" 2>&1 | tee "$OUT/logs/decode.log"
}

case "$MODE" in
    install) do_install ;;
    test) do_test ;;
    train) do_train ;;
    decode) do_decode ;;
    all) do_install; do_test; do_train; do_decode || echo "decode failed (see $OUT/logs/decode.log)" >&2 ;;
esac
