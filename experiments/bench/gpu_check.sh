#!/usr/bin/env bash
# The prepared GPU check of issue 17: one script, about 8 minutes on one H200, every result under OUTDIR.
#
#   experiments/bench/gpu_check.sh [--dry-run] OUTDIR
#
# Sections, in priority order, each in its own process under `timeout` (a section that fails, hangs or runs out
# of time is recorded and the next one runs; when the budget runs short the last ones get less time or none):
#   env                       versions, devices, datasheet peak, which optional libraries import
#   pallas                    Pallas kernel vs the dense path: fp32 (highest matmul precision) and bf16, forward
#                             and gradients, and the model's attention_impl="pallas" switch vs "reference"
#   bench_train               python -m benchmarks --dtype bfloat16, v3-base N=512 MLM train step, ours with the fused
#                             attention (chunked, pallas:32x32) vs transformers eager under bf16 autocast; MFU
#                             against the datasheet bf16 peak
#   layer_jax                 one v3-base attention layer at N=512/2048/8192: ours (reference, chunked, pallas)
#                             and no-bias flash attention (jax.nn.dot_product_attention, implementation="cudnn")
#   layer_flashdeberta        the same layer with flashdeberta 0.0.8 ("not_installed" unless carried as a wheel)
#   layer_disentangled_flash  the same layer with disentangled-flash 1.1.1 (likewise)
#   bench_train_dense         as bench_train for the dense attention_impls (reference, skew)
#   bench_forward             the backbone forward, every attention_impl
#   layer_transformers        the same layer with transformers' eager DisentangledSelfAttention
# then summary.json (every section with its status, its result and a headline), printed as a short table.
# Each bench section is its own process (its own transformers baseline), so a slow compile costs one of them only;
# a bench stopped by its time box keeps its finished cases.
#
# OUTDIR ends with 4 files (the device tool brings back at most 8): summary.json, gpu_check.log (all output),
# bench.md (the bench tables) and raw.tar.gz (each section's own JSON and log, and sections.tsv).
#
# --dry-run: the same code with tiny shapes on the CPU (JAX_PLATFORMS=cpu; Pallas in interpret mode), for CI
# (tests/gpu_check_test.py, under a minute). Its bench_train runs train and forward with chunked:16x16 alone (the
# Pallas interpreter is too slow for a whole train step in CI; the pallas and layer_jax sections run the kernel)
# and bench_train_dense / bench_forward are recorded as skipped.
# Environment: GPU_CHECK_PYTHON (default python3), GPU_CHECK_BUDGET_S (default 470; dry run 800),
# GPU_CHECK_WHEELS (default <repo>/.whl: every *.whl there is installed with --no-deps into a temporary
# --target that goes on PYTHONPATH), GPU_CHECK_BATCH (bench batch, default 32), GPU_CHECK_FUSED_IMPLS (default
# chunked,pallas:32x32), GPU_CHECK_DENSE_IMPLS (default reference,skew), GPU_CHECK_KEEP_RAW=1 (keep OUTDIR/raw).
set -u

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
if [ $# -ne 1 ]; then echo "usage: $0 [--dry-run] OUTDIR" >&2; exit 2; fi
OUTDIR=$1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${GPU_CHECK_PYTHON:-python3}
RAW="$OUTDIR/raw"
LOG="$OUTDIR/gpu_check.log"
mkdir -p "$RAW"
: > "$RAW/sections.tsv"
: > "$LOG"

# benchmarks/ lives at the repository root, deberta_jax under src/.
export PYTHONPATH="$REPO:$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3 XLA_PYTHON_CLIENT_PREALLOCATE=false
DRYFLAG=()
if [ $DRY = 1 ]; then
    export JAX_PLATFORMS=cpu
    # CI time: XLA's CPU back end compiles much faster without LLVM's expensive passes (the dry run times nothing).
    FAST_COMPILE="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }$FAST_COMPILE"
    DRYFLAG=(--dry-run)
    BUDGET=${GPU_CHECK_BUDGET_S:-800}
else
    BUDGET=${GPU_CHECK_BUDGET_S:-470}
fi
RESERVE=15   # seconds kept back for the summary and packing

say() { echo "[gpu-check $(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

# Carried wheels (flashdeberta, disentangled-flash): the device machine has no network.
WHEELS=${GPU_CHECK_WHEELS:-$REPO/.whl}
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    SITE=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_site.XXXXXX")
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl \
            >> "$LOG" 2>&1; then
        export PYTHONPATH="$SITE:$PYTHONPATH"
        say "installed $(ls "$WHEELS"/*.whl | xargs -n1 basename | tr '\n' ' ')into $SITE"
    else
        say "installing the wheels in $WHEELS failed (see the log); going on without them"
    fi
fi

START=$SECONDS
# section NAME CAP_SECONDS COMMAND...: runs COMMAND under `timeout` for at most CAP seconds (less when the budget
# runs short), output to raw/NAME.log and the combined log; records "NAME<TAB>rc<TAB>seconds<TAB>timebox".
section() {
    local name=$1 cap=$2; shift 2
    local left=$(( BUDGET - RESERVE - (SECONDS - START) ))
    local box=$(( cap < left ? cap : left ))
    if [ "$box" -lt 10 ]; then
        skip "$name" "${left}s of the budget left"
        return
    fi
    say "$name: start (time box ${box}s)"
    local t0=$SECONDS
    timeout -k 10 "$box" "$@" > "$RAW/$name.log" 2>&1
    local rc=$?
    local took=$(( SECONDS - t0 ))
    printf '%s\t%s\t%s\t%s\t\n' "$name" "$rc" "$took" "$box" >> "$RAW/sections.tsv"
    { echo "----- $name (rc $rc, ${took}s)"; cat "$RAW/$name.log"; } >> "$LOG"
    say "$name: rc $rc after ${took}s"
    tail -n 3 "$RAW/$name.log" | sed "s/^/    /"
}
# skip NAME REASON: records a section that does not run.
skip() {
    say "$1: skipped, $2"
    printf '%s\tskipped\t0\t0\t%s\n' "$1" "$2" >> "$RAW/sections.tsv"
}

GC=("$PY" "$REPO/experiments/bench/gpu_check.py")
# bench NAME CAP WORKLOADS IMPLS: python -m benchmarks in bf16, ours against transformers eager under bf16 autocast.
bench() {
    section "$1" "$2" "$PY" -m benchmarks "${BENCH_ARGS[@]}" --workloads "$3" --impls "$4" \
        --dtype bfloat16 --scan-layers off --families ours,transformers --no-torch-compile --no-memory-probe \
        --no-plots --output "$RAW/$1.json"
    # A bench stopped by its time box leaves its finished cases in NAME.partial.json.
    if [ ! -f "$RAW/$1.json" ] && [ -f "$RAW/$1.partial.json" ]; then cp "$RAW/$1.partial.json" "$RAW/$1.json"; fi
    if [ -f "$RAW/$1.md" ]; then { echo "## $1"; echo; cat "$RAW/$1.md"; echo; } >> "$OUTDIR/bench.md"; fi
}
rm -f "$OUTDIR/bench.md"

if [ $DRY = 1 ]; then
    # 2 layers of width 32 with head_dim 16 (the Pallas minimum), written by the env section.
    BENCH_ARGS=(--models "$RAW/tiny_config.json" --seq-lens 32 --batch 2 --reps 1 --warmup 0 --peak-size 256)
    ENV_ARGS=(--tiny-config "$RAW/tiny_config.json")
    FUSED=${GPU_CHECK_FUSED_IMPLS:-chunked:16x16}
    DENSE=${GPU_CHECK_DENSE_IMPLS:-reference,skew}
    CAPS=(90 180 180 135 60 60 0 0 90)  # generous: the dry run times nothing, and CI machines may be loaded
else
    BENCH_ARGS=(--models deberta-v3-base --seq-lens 512 --batch "${GPU_CHECK_BATCH:-32}" --reps 10 --warmup 2
                --peak-size 8192)
    ENV_ARGS=()
    FUSED=${GPU_CHECK_FUSED_IMPLS:-chunked,pallas:32x32}
    DENSE=${GPU_CHECK_DENSE_IMPLS:-reference,skew}
    CAPS=(20 80 140 80 30 30 90 70 25)
fi

section env "${CAPS[0]}" "${GC[@]}" env --out "$RAW/env.json" "${DRYFLAG[@]}" "${ENV_ARGS[@]}"
section pallas "${CAPS[1]}" "${GC[@]}" pallas --out "$RAW/pallas.json" "${DRYFLAG[@]}"
if [ $DRY = 1 ]; then
    bench bench_train "${CAPS[2]}" train,forward "$FUSED"
else
    bench bench_train "${CAPS[2]}" train "$FUSED"
fi
section layer_jax "${CAPS[3]}" "${GC[@]}" layer --family jax --out "$RAW/layer_jax.json" "${DRYFLAG[@]}"
section layer_flashdeberta "${CAPS[4]}" "${GC[@]}" layer --family flashdeberta \
    --out "$RAW/layer_flashdeberta.json" "${DRYFLAG[@]}"
section layer_disentangled_flash "${CAPS[5]}" "${GC[@]}" layer --family disentangled-flash \
    --out "$RAW/layer_disentangled_flash.json" "${DRYFLAG[@]}"
if [ $DRY = 1 ]; then
    # CI time: each bench process costs its imports and compiles; bench_train above ran both workloads.
    skip bench_train_dense "dry run (bench_train ran the harness for train and forward)"
    skip bench_forward "dry run (bench_train ran the harness for train and forward)"
else
    bench bench_train_dense "${CAPS[6]}" train "$DENSE"
    bench bench_forward "${CAPS[7]}" forward "$FUSED,$DENSE"
fi
section layer_transformers "${CAPS[8]}" "${GC[@]}" layer --family transformers \
    --out "$RAW/layer_transformers.json" "${DRYFLAG[@]}"

ELAPSED=$(( SECONDS - START ))
timeout -k 5 60 "${GC[@]}" summary --out "$OUTDIR/summary.json" --raw "$RAW" --budget "$BUDGET" \
    --elapsed "$ELAPSED" "${DRYFLAG[@]}" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
if tar -czf "$OUTDIR/raw.tar.gz" -C "$OUTDIR" raw && [ "${GPU_CHECK_KEEP_RAW:-0}" != 1 ]; then rm -rf "$RAW"; fi
say "done in $(( SECONDS - START ))s: $OUTDIR/summary.json (summary rc $rc)"
exit "$rc"
