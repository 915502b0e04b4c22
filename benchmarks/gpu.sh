#!/usr/bin/env bash
# The GPU measurements (README "On a GPU") in ONE device call of at most ~9.5 minutes:
#   1. the CUDA tests: the sparse bank, tracking under bf16 autocast, no host sync or host-device
#      copy of sam2prune's own in a steady-state frame, and the static step and encoder replayed as CUDA graphs against the
#      eager step, with the weights cast once under bf16 autocast, nothing in what a graph captures
#      that waits for the host, frames kept as uint8 normalised on the GPU to sam2's bits, and
#      masks written from the GPU through pinned memory, train-router's signals computed on the GPU
#      and trained on the CPU (tests/test_pruning.py, tests/test_per_frame_costs.py,
#      tests/test_static_step.py, tests/test_bounded_memory.py, tests/test_cli_segment.py,
#      tests/test_router_training.py);
#   2. `bench` on CUDA under bf16 autocast, SAM 2.1 hiera-tiny at 1024 px, random weights, 48 frames
#      (the embedded 24-frame clip played back and forth), prior scorer at retention 1.0 and 0.3,
#      the pruned predictors' steady frames and image encoder as CUDA graphs (--static-step graphs,
#      weights cast once to bf16; the steady state from frame 17, the step's first replay), against sam2's
#      own SAM2VideoPredictor (eager), sam2prune's unpruned eager predictor and
#      SAM2VideoPredictorVOS (torch.compile, mode lowered from max-autotune to reduce-overhead),
#      1 object, then 8 objects;
#   3. the default router without text (visual, analytic uncertainty, prior), 1 object;
#   4. hiera-large, 1 object (no compiled reference: its compilation would not fit);
#   5. if time is left: the two longest CUDA tests (retention 1.0 gives sam2's logits, one step
#      per object as sam2; reverse propagation from a tracked frame), hiera-tiny in float32, the
#      pruned predictor with sam2's eager step (--static-step off) to separate the graphs' gain,
#      and the paper's router with Monte-Carlo dropout (T = 5; the masks are drawn on the GPU).
# At most 8 files come back from a device call: the 7 JSONs and gpu.log are 8 (a step that would
# write another file needs one of them dropped).
# Every bench writes its JSON into OUT_DIR after each predictor, so a step cut short by its time
# limit still leaves what it measured; the script keeps within BUDGET seconds (default 560) by
# giving each step the time left, and skips steps when too little is left (BUDGET=300 runs the
# tests and the hiera-tiny steps, leaving device time for a rerun; STEPS="hiera-l-1-object
# tests-exactness" runs only the steps named, e.g. those a first call skipped, as its log lists
# them). OUT_DIR/gpu.log holds the log.
# Expected on an H100/H200: tests ~1 min, hiera-tiny 1 object 2-3.5 min (most of it compiling
# sam2's compiled predictor), 8 objects 1.5-3 min, router ~45 s, hiera-large ~1 min: ~7-9 min.
#
#   bash benchmarks/gpu.sh --prepare          here, with the repo's Python (or PY=...): copy the
#                                             pure-Python dependencies a GPU machine lacks (sam2,
#                                             hydra-core, omegaconf, antlr4, iopath) into .devsite/
#   bash benchmarks/gpu.sh OUT_DIR            on the GPU machine; the device tool's call:
#       run(command="bash benchmarks/gpu.sh $OUT", carry=[".devsite"], timeout_s=600)
#   bash benchmarks/gpu.sh --dry-run OUT_DIR  the same steps on the CPU at tiny sizes (checks this
#                                             script; the tests are only collected)
#
# Python: $PY if set, else .venv/bin/python, else python3 (with .devsite/ on PYTHONPATH); src/ is
# always first on PYTHONPATH, so the checkout's code runs, not an installed copy.
# Each step runs even when one before it failed; the script exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -n "${PY:-}" ]; then
    :
elif [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
else
    PY=python3
    # a GPU machine's python has torch but not sam2: its pure-Python dependencies travel in .devsite
    [ -d .devsite ] && export PYTHONPATH="$PWD/.devsite${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if [ "${1:-}" = "--prepare" ]; then
    # the files each distribution installed (its RECORD), compiled files and scripts left out
    "$PY" - <<'EOF'
import importlib.metadata as metadata
import shutil
from pathlib import Path

target = Path(".devsite")
shutil.rmtree(target, ignore_errors=True)
for name in ("sam2", "hydra-core", "omegaconf", "antlr4-python3-runtime", "iopath"):
    distribution = metadata.distribution(name)
    copied = 0
    for file in distribution.files or ():
        source = Path(distribution.locate_file(file))
        if ".." in file.parts or "__pycache__" in file.parts or file.suffix in (".pyc", ".so") or not source.is_file():
            continue
        (target / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / file)
        copied += 1
    print(f"{name} {distribution.version}: {copied} files")
print(f".devsite: {sum(f.stat().st_size for f in target.rglob('*') if f.is_file()) / 2**20:.1f} MiB")
EOF
    exit $?
fi

dry_run=0
if [ "${1:-}" = "--dry-run" ]; then
    dry_run=1
    shift
fi
out="${1:?usage: bash benchmarks/gpu.sh [--dry-run] OUT_DIR | --prepare}"
mkdir -p "$out"
exec > >(tee -a "$out/gpu.log") 2>&1  # the whole log comes back with the JSON
tee_pid=$!
finish() {  # finish STATUS: leftovers of a killed JSON write removed (8 files come back at most), the log flushed
    rm -f "$out"/.*.tmp-* 2>/dev/null
    exec >&- 2>&-
    wait "$tee_pid" 2>/dev/null
    exit "$1"
}
# no progress bars (sam2's own tqdm would fill the log)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1
# bench profiles several times in a process with CUDA graphs in it: CUPTI torn down and set up
# again can crash the process (torch keeps it only where inductor's global cudagraphs flag is on)
export TEARDOWN_CUPTI=0
budget=${BUDGET:-560}
start_all=$SECONDS
failed=()
skipped=()
left() { echo $((budget - (SECONDS - start_all))); }
named=()
step() {  # step NAME MAX_SECONDS NEEDS_SECONDS COMMAND...: runs if NEEDS_SECONDS are left, for at most MAX_SECONDS
    local name=$1 max=$2 needs=$3
    shift 3
    named+=("$name")
    if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then
        return  # not among the steps asked for
    fi
    local remaining
    remaining=$(left)
    if [ "$dry_run" = 0 ] && [ "$remaining" -lt "$needs" ]; then
        echo "== $name: skipped, ${remaining} s left of the ${budget} s budget (needs ${needs} s)"
        skipped+=("$name")
        return
    fi
    local limit=$((remaining < max ? remaining : max))
    [ "$dry_run" = 1 ] && limit=1800
    echo "== $name (at most ${limit} s): $*"
    local begin=$SECONDS
    timeout --signal=INT --kill-after=15 "$limit" "$@" || failed+=("$name")
    echo "== $name took $((SECONDS - begin)) s"
}

if [ "$dry_run" = 1 ]; then
    DEVICE=(--device cpu --threads 1 --profile-frames 2)
    DEVICE_FP32=("${DEVICE[@]}")
    SIZE=(--image-size 128)
    FRAMES=(--frames 18)  # the static step replays from frame 17
    TESTS=(--collect-only -q)
    # the compiled predictor is built and given up (inductor on the CPU takes minutes), as it
    # would be on a GPU that compiled too slowly
    COMPILE=(--compile-mode default --compile-timeout 20)
    COMPILE_MANY=(--compile-mode none)
    MANY=2
    STATIC=(--static-step buffers)  # the same static step, eagerly: CUDA graphs need a GPU
else
    nvidia-smi -L
    DEVICE=(--device cuda --bf16)
    DEVICE_FP32=(--device cuda)
    SIZE=()
    # whole-clip warm-up is not needed past the 24 frames every memory shape appears in
    FRAMES=(--frames 48 --warmup 24)
    TESTS=(-q)
    COMPILE=(--compile-mode reduce-overhead --compile-timeout 150)
    COMPILE_MANY=(--compile-mode reduce-overhead --compile-timeout 100)  # inductor's cache holds most of it by then
    MANY=8
    STATIC=(--static-step graphs)
fi
"$PY" -c "import torch, sam2; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" || {
    echo "gpu.sh: torch or sam2 cannot be imported (on the GPU machine: run 'bash benchmarks/gpu.sh --prepare' here first and carry .devsite)"
    finish 2
}

TEST_DEVICE=cuda
[ "$dry_run" = 1 ] && TEST_DEVICE=cpu
# the graph replay test first: a step cut short by its limit loses the last tests
TEST_FILES=(tests/test_static_step.py tests/test_pruning.py tests/test_per_frame_costs.py tests/test_bounded_memory.py tests/test_cli_segment.py tests/test_router_training.py)
step tests 160 60 env SAM2PRUNE_TEST_DEVICE=$TEST_DEVICE "$PY" -m pytest -p no:cacheprovider --durations=15 "${TESTS[@]}" "${TEST_FILES[@]}" \
    -k "autocast or bank_holds or steady_frame or random_scores or mc_dropout or uniform_pattern or text_relevance or recorder or (once_per_frame and prior) or graph_replay or (bit_for_bit and not bounded) or graph_captures or uint8 or label_writer or train_router_on_the_test_device"

SAM=("$PY" -m sam2prune bench --overwrite "${DEVICE[@]}" "${SIZE[@]}" "${FRAMES[@]}")
step hiera-t-1-object 210 150 "${SAM[@]}" --scorer prior --retention 1.0 0.3 "${STATIC[@]}" "${COMPILE[@]}" \
    --json "$out/hiera-t_1obj_prior_bf16.json"
step hiera-t-$MANY-objects 180 100 "${SAM[@]}" --objects $MANY --scorer prior --retention 1.0 0.3 "${STATIC[@]}" "${COMPILE_MANY[@]}" \
    --json "$out/hiera-t_${MANY}obj_prior_bf16.json"
step router-no-text 60 45 "${SAM[@]}" --signals visual,uncertainty,prior --retention 1.0 0.3 "${STATIC[@]}" --compile-mode none \
    --json "$out/hiera-t_1obj_router-no-text_bf16.json"
step hiera-l-1-object 90 60 "${SAM[@]}" --model sam2.1_hiera_l --scorer prior --retention 1.0 0.3 "${STATIC[@]}" --compile-mode none \
    --json "$out/hiera-l_1obj_prior_bf16.json"
# optional: only with the time left
# the two longest tests (~1 min on the CPU): retention 1.0 gives sam2's logits, reverse propagation;
# and a capture broken by a host sync (a CUDA error of its own: last, in a process of its own)
step tests-exactness 90 50 env SAM2PRUNE_TEST_DEVICE=$TEST_DEVICE "$PY" -m pytest -p no:cacheprovider "${TESTS[@]}" "${TEST_FILES[@]}" \
    -k "official_logits or reverse or capture_the_body_breaks"
FP32=("$PY" -m sam2prune bench --overwrite "${DEVICE_FP32[@]}" "${SIZE[@]}" "${FRAMES[@]}")
step hiera-t-1-object-fp32 50 45 "${FP32[@]}" --scorer prior --retention 1.0 0.3 --compile-mode none \
    --json "$out/hiera-t_1obj_prior_fp32.json"
step hiera-t-1-object-eager-step 45 40 "${SAM[@]}" --scorer prior --retention 0.3 --compile-mode none --profile-frames 2 \
    --json "$out/hiera-t_1obj_prior_bf16_eager-step.json"
step router-paper-mc 45 40 "${SAM[@]}" --router paper --uncertainty mc --mc-passes 5 \
    --retention 0.3 --compile-mode none --profile-frames 2 --json "$out/hiera-t_1obj_router-paper-mc5_bf16.json"

for asked in ${STEPS:-}; do  # a name in STEPS that is no step ran nothing: say so, and fail
    [[ " ${named[*]} " == *" $asked "* ]] || { echo "STEPS: no step is named '$asked' (steps: ${named[*]})"; failed+=("STEPS:$asked"); }
done
echo "== total $((SECONDS - start_all)) s of the ${budget} s budget"
[ ${#skipped[@]} -gt 0 ] && echo "skipped steps: ${skipped[*]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED steps: ${failed[*]}"
    finish 1
fi
echo "all steps passed"
finish 0
