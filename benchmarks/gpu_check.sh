#!/usr/bin/env bash
# The prepared GPU check (issue 11, item 6): the CUDA paths of the engine exercised in one go,
# sized for 8 minutes on one GPU, with ONE JSON summary on stdout (progress on stderr).
#
#   bash benchmarks/gpu_check.sh [--device cuda|cpu] [--out DIR] [--budget SECONDS]
#
#   --device  cuda (default; refused with a hint when torch sees no GPU) or cpu: the dry run
#             of every step at tiny sizes (what tests/test_benchmarks.py runs in `make test`)
#   --out     where run directories, logs and step results go (default: a new temp dir)
#   --budget  seconds for all steps together (default 450 on cuda; 600 on cpu, where a busy
#             2-core machine is 3-4x slower than an idle one's ~100 s); every step also has
#             its own `timeout` (doubled on cpu), so one hang cannot eat the rest
#
# Steps (each is {"ok", "seconds", ...figures..., "error" on failure} in the summary; a failed
# step does not stop the others; the exit code is non-zero when any step failed):
#   data             synthetic Fashion-MNIST-format idx.gz files (the GPU machine has no data
#                    sets and no internet): 60k/10k images on cuda, 12k/1k on cpu
#   smoke            `autogrow grow --preset smoke` at fp32, bf16 and fp16 (fp16: cuda only),
#                    each followed by `autogrow verify`: found arch, accuracies, seconds, and the
#                    deterministic setting the run logged
#   kill_resume      an uninterrupted run vs one SIGKILLed mid-epoch (the test hook
#                    AUTOGROW_TEST_PAUSE_AT_STEP) and relaunched with --resume-if-exists, weights
#                    digests compared: with the engine's default deterministic kernels (must be
#                    equal) and with --no-deterministic (cuDNN autotuning; equality reported)
#   engine_vs_plain  Trainer.train_epoch vs a hand-written loop, Basic3ResNet 3-3-3 and
#                    18-18-18 on device-resident 3x32x32 random batches of 128: images/s, ratio,
#                    with deterministic kernels and autotuned
#   input_pipeline   benchmarks/input_pipeline.py with this machine's cores, its JSON embedded
#                    (where torchcodec is unusable, the engine's PIL decoding is timed and the
#                    reason given)
#   torchrun_nccl    the smoke preset under a 1-process torchrun, which makes the engine start a
#                    process group (NCCL on cuda, gloo on cpu) and train through DDP, then
#                    `autogrow verify`; DDP's backend and world size read from its log
# The steps run in this order except input_pipeline, which runs last (it is the one that gives
# way when the budget runs short).
#
# Python: $GPU_CHECK_PYTHON if set; else .venv/bin/python; else python3 when it imports torch
# and torchvision; else a new .venv with `pip install -e .`. Requirements of pyproject.toml
# that the interpreter lacks (on the GPU image: transitions, structlog, tomli-w, torchcodec)
# are installed into the work dir from the matching wheels in $GPU_CHECK_WHEELS or .whl/ (no
# internet there), else tried from the package registry; the check goes on when autogrow
# imports without the rest (they are listed in the summary). Make the wheels here for the GPU
# image's Python (3.12 below) and carry .whl there:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 -d .whl transitions structlog tomli-w \
#       "torchcodec==<the release built against the GPU image's torch>"
# (a torchcodec built for another torch installs but fails to load: input_pipeline then times
# the engine on PIL and gives that reason; the CUDA training steps do not need it).
# With $OUT set (the device tool), the summary is also written to $OUT/gpu_check.json and the
# logs to $OUT/gpu_check_logs.tar.gz.
set -euo pipefail
export LC_ALL=C  # a '.' in $EPOCHREALTIME
STARTED=$EPOCHREALTIME

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STEPS_PY="$ROOT/benchmarks/gpu_check_steps.py"

DEVICE="" WORK="" BUDGET=""
while (($#)); do
    case $1 in
        --device) DEVICE=${2:?--device needs cuda or cpu}; shift 2 ;;
        --out) WORK=${2:?--out needs a directory}; shift 2 ;;
        --budget) BUDGET=${2:?--budget needs seconds}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "gpu_check: $*" >&2; }

# A summary without Python, for failures before a working interpreter exists.
fail_early() {
    printf '{"check": "gpu_check", "ok": false, "device": "%s", "error": "%s"}\n' \
        "${DEVICE:-?}" "${1//\"/\'}"
    exit 2
}

DEVICE=${DEVICE:-cuda}
case $DEVICE in cuda|cpu) ;; *) fail_early "--device must be cuda or cpu, not $DEVICE" ;; esac
if [[ -z $WORK ]]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
elif [[ -d $WORK && -n $(ls -A "$WORK") ]]; then
    fail_early "--out $WORK is not empty: give a new or empty directory"
fi
mkdir -p "$WORK/steps" "$WORK/logs"
WORK=$(cd "$WORK" && pwd)  # before the cd below: --out is relative to the caller's directory
cd "$ROOT"

# -- the interpreter -----------------------------------------------------------------------------
pick_python() {
    if [[ -n ${GPU_CHECK_PYTHON:-} ]]; then
        echo "$GPU_CHECK_PYTHON"
    elif [[ -x .venv/bin/python ]]; then
        echo "$ROOT/.venv/bin/python"
    elif python3 -c 'import torch, torchvision' 2>/dev/null; then
        command -v python3
    else
        say "no interpreter with torch: python3 -m venv .venv && pip install -e ."
        python3 -m venv .venv >&2 && .venv/bin/pip install -q -e . >&2 \
            && echo "$ROOT/.venv/bin/python"
    fi
}
PY=$(pick_python) || fail_early "no Python with torch and torchvision, and pip install -e . failed"
"$PY" -c 'import torch, torchvision' 2>/dev/null || fail_early "$PY cannot import torch and \
torchvision (set GPU_CHECK_PYTHON to an interpreter that can)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PIP_ROOT_USER_ACTION=ignore
missing=$("$PY" "$STEPS_PY" missing-deps) || fail_early "$PY cannot run $STEPS_PY"
INSTALLED=""
if [[ -n $missing ]]; then
    wheels=${GPU_CHECK_WHEELS:-$ROOT/.whl} found=() rest=()
    for name in $missing; do  # a wheel's file name spells the project lower_case_with_underscores
        norm=$(tr 'A-Z.-' 'a-z__' <<<"$name")
        match=$(compgen -G "$wheels/${norm}-*.whl" | sort -V | tail -n1) || true
        if [[ -n $match ]]; then found+=("$match"); else rest+=("$name"); fi
    done
    say "installing into $WORK/site what $PY lacks: ${missing//$'\n'/ }"
    if ((${#found[@]})); then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" \
            "${found[@]}" >&2 || true
    fi
    if ((${#rest[@]})); then  # no internet on the GPU machine: fail fast there
        "$PY" -m pip install -q --no-deps --retries 0 --timeout 10 --target "$WORK/site" \
            "${rest[@]}" >&2 || true
    fi
    export PYTHONPATH="$WORK/site:$PYTHONPATH"
    INSTALLED=$missing
    missing=$("$PY" "$STEPS_PY" missing-deps)
fi
# Requirements only some paths import (e.g. an image decoder) may stay missing; the engine and
# its command line must import.
if ! "$PY" -c 'import autogrow.cli, autogrow.engine.run' 2>"$WORK/logs/import.log"; then
    fail_early "autogrow does not import with $PY ($(tail -n1 "$WORK/logs/import.log")); \
missing: ${missing//$'\n'/ }; see the wheels note in benchmarks/gpu_check.sh"
fi
[[ -z $missing ]] || say "warning: still not installed: ${missing//$'\n'/ }"
say "python: $PY"

if [[ $DEVICE == cuda ]] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'
then
    fail_early "torch sees no CUDA device here; pass --device cpu for the dry run"
fi

# -- sizes and time ------------------------------------------------------------------------------
cores=$(nproc)
if [[ $DEVICE == cuda ]]; then
    BUDGET=${BUDGET:-450} CAP_SCALE=1
    TRAIN=60000 TEST=10000
    ARCHS=3-3-3,18-18-18 BENCH=(--steps 30 --warmup 10 --rounds 3)
    workers=$(printf '%s\n' 0 4 8 $((cores < 16 ? cores : 16)) | awk -v c="$cores" \
        '$1 <= c && !seen[$1]++' | paste -sd,)
    # writing the 2,000 JPEGs takes ~40 s on one core (19 ms each on the 2-core dev box); the
    # timed passes ~30-40 s more with 16 idle cores
    PIPELINE=(--images 2000 --classes 20 --workers "$workers" --repeats 1)
else  # fp16 is skipped with its reason: the engine refuses fp16 training on CPU
    BUDGET=${BUDGET:-600} CAP_SCALE=2
    TRAIN=12000 TEST=1000
    ARCHS=1-1-1 BENCH=(--steps 4 --warmup 1 --rounds 2)
    PIPELINE=(--images 96 --classes 4 --workers "0,2" --batch-size 8 --warmup 1 --repeats 1
              --decoder-images 8)
fi
DEADLINE=$(($(date +%s) + BUDGET))
DATA="$WORK/data"
export AUTOGROW_CACHE_DIR="$WORK/cache"  # the idx files are unpacked here, not in ~/.cache
export PYTHONUNBUFFERED=1

# run_step NAME CAP ARGS...: `gpu_check_steps.py NAME ARGS` under `timeout` (CAP seconds on
# cuda, at most what is left of the budget), its JSON in steps/NAME.json, its stderr in
# logs/NAME.log (and here), exit code and seconds in steps/NAME.meta.
run_step() {
    local name=$1 cap=$(($2 * CAP_SCALE)) rc=0 start left limit seconds
    shift 2
    left=$((DEADLINE - $(date +%s)))
    if ((left < 15)); then
        say "step $name skipped: the $BUDGET s budget is spent"
        printf '{"rc": -1, "timeout": 0, "seconds": 0, "skipped": "%s"}\n' \
            "not run: the $BUDGET s budget was spent" >"$WORK/steps/$name.meta"
        return
    fi
    limit=$((cap < left ? cap : left))
    say "step $name (at most ${limit} s)"
    start=$EPOCHREALTIME
    timeout --kill-after=15 "$limit" "$PY" "$STEPS_PY" "$name" --device "$DEVICE" \
        --timeout "$limit" "$@" </dev/null >"$WORK/steps/$name.json" \
        2> >(tee "$WORK/logs/$name.log" >&2) || rc=$?
    seconds=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
    printf '{"rc": %d, "timeout": %d, "seconds": %s}\n' "$rc" "$limit" "$seconds" \
        >"$WORK/steps/$name.meta"
    say "step $name: exit $rc after $seconds s"
}

run_step data 60 --dir "$DATA" --train "$TRAIN" --test "$TEST"
run_step smoke 150 --work "$WORK" --data-root "$DATA" --precisions fp32,bf16,fp16
run_step kill_resume 180 --work "$WORK" --data-root "$DATA" --train-images "$TRAIN"
run_step engine_vs_plain 90 --archs "$ARCHS" "${BENCH[@]}"
run_step torchrun_nccl 90 --work "$WORK" --data-root "$DATA"
run_step input_pipeline 150 "${PIPELINE[@]}"

rc=0
"$PY" "$STEPS_PY" summary --work "$WORK" --device "$DEVICE" --budget "$BUDGET" \
    --started "$STARTED" --installed "${INSTALLED//$'\n'/ }" --missing "${missing//$'\n'/ }" \
    --steps data,smoke,kill_resume,engine_vs_plain,input_pipeline,torchrun_nccl \
    ${OUT:+--out "$OUT/gpu_check.json"} || rc=$?
if [[ -n ${OUT:-} ]]; then
    tar -czf "$OUT/gpu_check_logs.tar.gz" -C "$WORK" logs steps 2>/dev/null || true
fi
exit "$rc"
