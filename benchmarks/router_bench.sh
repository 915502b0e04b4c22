#!/usr/bin/env bash
# The router benchmarks in README.md: SAM 2.1 hiera-tiny at 1024 px with random weights (seed 0).
# 1. fits a token-to-text aligner on the repo's 6 chair frames (tests/data/chair), so that the
#    text signal runs with a real aligner file (its values are meaningless on random weights,
#    its cost is not);
# 2. benches the default router (text + analytic uncertainty + prior + visual) over retentions;
# 3. benches the paper-mode router with Monte-Carlo dropout, T = 4, 5, 6, at retention 0.3.
# Usage: bash benchmarks/router_bench.sh [all|default|paper]   (default: all)
set -euo pipefail
part="${1:-all}"
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source benchmarks/chair_davis.sh
chair_davis "$work"
.venv/bin/sam2prune fit-aligner --root "$work/DAVIS" --labels "$work/labels.json" --out "$work/aligner.pt"
TEXT="a child jumping on a bed"
if [ "$part" = all ] || [ "$part" = default ]; then
    .venv/bin/sam2prune bench --text "$TEXT" --aligner "$work/aligner.pt" --retention 1.0 0.5 0.3 0.1 --overwrite \
        --json benchmarks/cpu-2threads_hiera-t_1024_router-default.json
fi
if [ "$part" = all ] || [ "$part" = paper ]; then
    .venv/bin/sam2prune bench --text "$TEXT" --aligner "$work/aligner.pt" --router paper --uncertainty mc \
        --mc-passes 4 5 6 --retention 0.3 --overwrite --json benchmarks/cpu-2threads_hiera-t_1024_router-paper-mc.json
fi
