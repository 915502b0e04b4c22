#!/usr/bin/env bash
# Set up sam2prune in ./.venv and run the main job on the embedded clip.
#   bash scripts/setup.sh             install, then segment the embedded bedroom clip
#   bash scripts/setup.sh --no-run    install only
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
# The venv takes about 7 GB (torch's CUDA build alone 5.5 GB): say so before pip runs out of disk.
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    free_gib=$(.venv/bin/python -c 'import shutil; print(shutil.disk_usage(".venv").free // 2**30)')
    if [ "$free_gib" -lt 9 ]; then
        echo "warning: .venv needs about 7 GB and pip's temporary files more; $free_gib GiB free" \
             "on the disk of $(pwd)/.venv: pip may fail with 'No space left on device'" >&2
    fi
fi
# torch and torchvision first, pinned: pip takes them from this machine's local wheels.
"${PIP[@]}" torch==2.14.1 torchvision==0.29.1
# The official SAM 2 package, without its CUDA extension (sam2prune handles its absence).
SAM2_BUILD_CUDA=0 "${PIP[@]}" sam2==1.1.0
"${PIP[@]}" -e '.[dev,text,ray]'

if [ "${1:-}" != "--no-run" ]; then
    echo "== sam2prune segment (embedded 24-frame bedroom clip, default clicks) -> out/bedroom"
    mkdir -p out
    .venv/bin/sam2prune segment --out out/bedroom --overwrite --overlay out/bedroom.mp4 --random-weights
fi
