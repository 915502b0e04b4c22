#!/usr/bin/env bash
# Long videos in bounded memory (README "Long videos"): memory against video length, and
# `segment` of a 10,000-frame video file. SAM 2.1 hiera-tiny at 256 px, random weights (seed 0),
# the embedded bedroom clip looped; one torch thread per process (the machine's cores are shared).
#   bash benchmarks/long_videos.sh OUT_DIR [LENGTHS...]      (default lengths: 500 5000)
# On a GPU (issue 12's targets: bounded at 5,000 frames vs 500, and at 1,000 frames vs official SAM 2;
# about 5 minutes on an H200, estimated, 8.5 at most by its time limits; carry .devsite, made by `bash benchmarks/gpu.sh --prepare`):
#   DEVICE=cuda SIZE=1024 BF16=--bf16 SHORT_LENGTHS=1000 bash benchmarks/long_videos.sh OUT_DIR 5000 1000 500
# (the longest first: lengths run in the order given, and the bounded runs share one time limit;
# not in the same 15-minute device session as gpu.sh)
# Hours on 2 shared CPU cores (0.3-1 s a frame there); each step's figures are written as it ends.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bash benchmarks/long_videos.sh OUT_DIR [LENGTHS...]}"
shift
lengths=("${@:-500 5000}")
mkdir -p "$out"
PY=${PY:-.venv/bin/python}
if [ ! -x "$PY" ]; then
    PY=python3
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
    # a GPU machine's python has torch but not sam2: its pure-Python dependencies travel in
    # .devsite (bash benchmarks/gpu.sh --prepare)
    [ -d .devsite ] && export PYTHONPATH="$PYTHONPATH:$PWD/.devsite"
fi
"$PY" -c "import torch, sam2, sam2prune" || { echo "long_videos.sh: torch, sam2 or sam2prune cannot be imported by $PY" >&2; exit 2; }
DEVICE=${DEVICE:-cpu} SIZE=${SIZE:-256} BF16=${BF16:-}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
failed=()
# on a GPU each bench has a time limit (a device call ends at 600 s; what a bench measured before
# its limit is in its JSON); hours on the CPU: none
limit() {  # limit SECONDS COMMAND...
    local seconds=$1
    shift
    if [ "$DEVICE" = cpu ]; then "$@"; else timeout --signal=INT --kill-after=15 "$seconds" "$@"; fi
}

# 1. peak RSS (and peak CUDA memory) and ms/frame against length, each run in a fresh process:
#    the pruned predictor with bounded memory (the default) at LENGTHS (default 500 5000), then
#    official SAM 2 and the pruned predictor keeping everything at SHORT_LENGTHS (default 500 2000:
#    they grow with the video, and take as long per frame); sam2-offload with EXTRA=sam2-offload
# shellcheck disable=SC2068,SC2086
limit "${BOUNDED_LIMIT:-300}" "$PY" -m sam2prune bench --lengths ${lengths[@]} --methods pruned-bounded \
    --image-size "$SIZE" --device "$DEVICE" --threads 1 $BF16 --overwrite \
    --json "$out/lengths_${SIZE}_bounded.json" 2>&1 | tee "$out/lengths_${SIZE}_bounded.log" || failed+=(bounded)
# shellcheck disable=SC2086
limit "${OTHERS_LIMIT:-200}" "$PY" -m sam2prune bench --lengths ${SHORT_LENGTHS:-500 2000} --methods sam2 pruned-unbounded ${EXTRA:-} \
    --image-size "$SIZE" --device "$DEVICE" --threads 1 $BF16 --overwrite \
    --json "$out/lengths_${SIZE}_others.json" 2>&1 | tee "$out/lengths_${SIZE}_others.log" || failed+=(others)
if "$PY" -c "import matplotlib" 2>/dev/null; then
    "$PY" benchmarks/plot_lengths.py "$out/lengths_$SIZE.png" "$out/lengths_${SIZE}_bounded.json" "$out/lengths_${SIZE}_others.json" || failed+=(plot)
else
    echo "long_videos.sh: no matplotlib here: no plot (benchmarks/plot_lengths.py draws it from the JSON files)"
fi

# 2. segment a 10,000-frame video file (the clip looped, encoded with sam2prune's own writer) with
#    the default clicks on the two children, bounded memory (the default), peak RSS by GNU time
if [ "$DEVICE" = cpu ] && [ "${SEGMENT:-1}" = 1 ]; then  # SEGMENT=0: the length runs only
    video="$out/bedroom_10000.mp4"
    [ -f "$video" ] || "$PY" -c "
import sys
from pathlib import Path
from sam2prune.cli.common import embedded_clip
from sam2prune.data.video import VideoSource
from sam2prune.viz import write_overlay
write_overlay(Path(sys.argv[1]), VideoSource.open(embedded_clip()).looped(10000).iter_frames(), fps=24)
" "$video"
    /usr/bin/time -v "$PY" -m sam2prune segment "$video" --prompts src/sam2prune/assets/bedroom/prompts.json \
        --image-size "$SIZE" --random-weights --device cpu --out "$out/segment_10000" --overwrite \
        2>&1 | grep -v "^propagate in video" | tee "$out/segment_10000.log" || failed+=(segment)
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "long_videos.sh: FAILED: ${failed[*]}"
    exit 1
fi
