#!/usr/bin/env bash
# Build what the GPU call carries (run here, with internet; everything lands under the
# git-ignored dataset/ folder):
#   dataset/gpu_wheelhouse1/   scipy + numpy wheels for CPython 3.12 manylinux x86_64
#   dataset/gpu_wheelhouse2/   the rest of bench/gpu/requirements-gpu.txt + recbole 1.2.1
#   dataset/gpu_payload/Beauty/  Beauty's atomic files, feature matrices, masks, stats
#                                (hard links into dataset/Beauty, no stage-1 artifacts)
# A call carries at most 64 MiB, so the three travel in three calls (bench/gpu/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
PIP=${PIP:-.venv/bin/pip}
PLATFORM=(--python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
          --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux_2_28_x86_64 --only-binary=:all:)
ALL=dataset/gpu_wheelhouse.all
mkdir -p "$ALL"
"$PIP" download "${PLATFORM[@]}" -d "$ALL" -r bench/gpu/requirements-gpu.txt
"$PIP" download --no-deps --python-version 3.12 --only-binary=:all: -d "$ALL" recbole==1.2.1
rm -rf dataset/gpu_wheelhouse1 dataset/gpu_wheelhouse2
mkdir -p dataset/gpu_wheelhouse1 dataset/gpu_wheelhouse2
for whl in "$ALL"/*.whl; do
    case "$(basename "$whl")" in
        scipy-*|numpy-*) ln -f "$whl" dataset/gpu_wheelhouse1/ ;;
        *) ln -f "$whl" dataset/gpu_wheelhouse2/ ;;
    esac
done
DATA=${DATA:-dataset/Beauty}
NAME=$(basename "$DATA")
rm -rf "dataset/gpu_payload/$NAME"
mkdir -p "dataset/gpu_payload/$NAME"
for f in "$DATA/$NAME".{inter,item,item_ids.txt,stats.json} "$DATA/$NAME".*.npy; do
    case "$f" in *.zq.npy) continue ;; esac  # stage-1 outputs: the GPU run makes its own
    ln -f "$f" "dataset/gpu_payload/$NAME/"
done
# The decoding bench's IDs (run_gpu.sh decode): $SID, else the newest semantic-ID file of the
# dataset (README's CPU figures: SID=dataset/Beauty/Beauty.feea3e229de1.sid).
rm -rf dataset/gpu_payload/decode
mkdir -p dataset/gpu_payload/decode
SID=${SID:-$(ls -t "$DATA/$NAME".*.sid 2>/dev/null | head -n 1 || true)}
[ -n "$SID" ] && ln -f "$SID" dataset/gpu_payload/decode/
du -sh dataset/gpu_wheelhouse1 dataset/gpu_wheelhouse2 "dataset/gpu_payload"
