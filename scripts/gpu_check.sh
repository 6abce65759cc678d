#!/usr/bin/env bash
# The GPU check, one call on a lent GPU machine (torch preinstalled; no internet; no monai, nibabel
# or expecttest, whose wheels scripts/fetch_gpu_wheels.sh puts in .whl/). Settles issue 21's
# targets and diagnoses each pass in one run. In order, each step with its own time limit inside an
# overall budget (GPU_CHECK_BUDGET, default 510 s: fits a 9-minute call), so the summary is always
# written (also on an early exit):
#   build      hamfast with its CUDA kernels for the visible GPU's arch only (TORCH_CUDA_ARCH_LIST=
#              major.minor), with the system compiler (the image's CXX=/opt/gcc/bin/g++ links
#              libstdc++ statically, which crashes torch on the op's errors); kernel resource usage;
#   deps       the missing test dependencies from .whl/, unpacked into a folder under /tmp;
#   tests      the CUDA tests (pytest -m cuda) of the op, its errors and the build;
#   bench      `hamfast bench --quick` (B = 16/64, G = 15/1, HAM steps, bf16 extra);
#   bench_b256 the whole conv stack fwd+bwd at B = 256, G = 15, float32;
#   targets    `bench --table` of both (table.md) and each target pass/FAIL (targets.json);
#   autotune   per-pass timings of every candidate against cuDNN with cudnn.benchmark on
#              (scripts/autotune_report.py: autotune.json);
#   racecheck, synccheck  compute-sanitizer on tiny shapes for every tile, split and dtype
#              (scripts/sanitizer_shapes.py).
# Everything goes into OUTDIR, ready to commit under benchmarks/results/: gpu_check.json (summary:
# steps, tests, targets, sanitizer verdicts), gpu_check.log, tests.xml, resource_usage.txt,
# bench_quick.json, bench_b256.json, table.md, targets.json, autotune.json, racecheck.txt, synccheck.txt.
#   bash scripts/gpu_check.sh [OUTDIR]   # default benchmarks/results/gpu-check-<date>-<commit>
# Without a GPU every step is skipped with a line saying so and the summary says why. With
# GPU_CHECK_DRY_RUN=1 the steps run on the CPU instead (tiny shapes; the in-place build is used
# as it is; no sanitizer): checks this script's plumbing, measures nothing.
# Knobs: PYTHON, GPU_CHECK_BUDGET, GPU_CHECK_TESTS (test paths), WHEELS (default .whl),
# MAX_JOBS (default 16), GPU_CHECK_DRY_RUN.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
out=${1:-benchmarks/results/gpu-check-$(date +%Y-%m-%d)-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
mkdir -p "$out" && out=$(cd "$out" && pwd)
PY=${PYTHON:-$(command -v python3 || command -v python)}
exec > >(tee -a "$out/gpu_check.log") 2>&1
started=$(date +%s)
budget=${GPU_CHECK_BUDGET:-510}
dry=${GPU_CHECK_DRY_RUN:-0}
export PYTHONUNBUFFERED=1
rm -f "$out/.steps"

left() { echo $(( budget - ($(date +%s) - started) )); }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >> "$out/.steps"; }
skip() {  # skip NAME WHY
  echo "=== $1: skipped ($2)"
  record "$1" skipped 0 "$2"
}
step() {  # step NAME MAX_S COMMAND...: runs with min(MAX_S, budget left) seconds, logs and records it
  local name=$1 limit=$2; shift 2
  local remaining; remaining=$(left)
  (( remaining < limit )) && limit=$remaining
  if (( limit < 10 )); then
    skip "$name" "the ${budget}s budget is spent"
    return 1
  fi
  echo "=== $name (limit ${limit}s): $*"
  local t0 rc; t0=$(date +%s)
  # SIGINT first: pytest and the scripts then stop cleanly and still write their reports; KILL 20 s later.
  timeout -s INT -k 20 "$limit" "$@"
  rc=$?
  echo "=== $name: exit $rc after $(( $(date +%s) - t0 )) s$( ((rc == 124)) && echo ' (time limit)')"
  record "$name" "$rc" "$(( $(date +%s) - t0 ))"
  return "$rc"
}

summary() {
  "$PY" "$root/scripts/gpu_check_summary.py" "$out" "$started" "${so:-}" "$gpu" "$dry" || \
    echo "gpu_check: the summary could not be written"
  rm -f "$out/.steps"
}
gpu=0
so=
trap summary EXIT

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || echo "gpu_check: no nvidia-smi"
gpu=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
steps=(build deps tests bench bench_b256 targets autotune racecheck synccheck)
if [ "$gpu" != 1 ] && [ "$dry" != 1 ]; then
  for name in "${steps[@]}"; do skip "$name" "no GPU"; done
  exit 0
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

# build: for this GPU's arch only (one .cu translation unit: ~25-90 s).
if [ "$dry" = 1 ]; then
  skip build "dry run: the in-place build is used as it is"
else
  [ -x /usr/bin/gcc ] && [ -x /usr/bin/g++ ] && export CC=/usr/bin/gcc CXX=/usr/bin/g++
  arch=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  echo "gpu_check: compiler CC=${CC:-default} CXX=${CXX:-default}, TORCH_CUDA_ARCH_LIST=$arch"
  find hamfast -name '_C*.so' -delete
  step build 150 env HAMFAST_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="${MAX_JOBS:-16}" \
    "$PY" setup.py -q build_ext --inplace
fi
so=$(find hamfast -maxdepth 1 -name '_C*.so' | head -n 1)
if [ -n "$so" ] && [ "$dry" != 1 ]; then
  cuobjdump=$(command -v cuobjdump || echo "${CUDA_HOME:-/usr/local/cuda}/bin/cuobjdump")
  if [ -x "$cuobjdump" ]; then "$cuobjdump" --dump-resource-usage "$so" > "$out/resource_usage.txt" 2>&1 || true; fi
fi
if [ -z "$so" ]; then
  for name in "${steps[@]:1}"; do skip "$name" "no hamfast/_C*.so (the build failed)"; done
  exit 1
fi

# deps: only the modules missing, unpacked from pure-Python wheels (no pip, the image is untouched).
wheels=${WHEELS:-.whl}
site=$(mktemp -d /tmp/hamfast-gpu-site.XXXXXX)
export PYTHONPATH="$PYTHONPATH:$site"
install_missing() {
  local module wheel status=0
  for module in monai nibabel expecttest packaging typing_extensions; do
    "$PY" -c "import $module" 2>/dev/null && continue
    wheel=$(find "$wheels" -maxdepth 1 -name "$module-*.whl" 2>/dev/null | head -n 1)
    if [ -z "$wheel" ]; then
      echo "gpu_check: $module is missing and there is no $wheels/$module-*.whl (run scripts/fetch_gpu_wheels.sh, then carry .whl)"
      status=1
      continue
    fi
    "$PY" -m zipfile -e "$wheel" "$site" && echo "gpu_check: installed $(basename "$wheel") into $site"
  done
  return $status
}
echo "=== deps: from $wheels into $site"
t0=$(date +%s)
install_missing  # a shell function: not under timeout (it only unpacks zip files)
record deps "$?" "$(( $(date +%s) - t0 ))"

# tests: the CUDA ones (the CPU suite runs in CI); a time limit cuts the least important last.
if [ -n "${GPU_CHECK_TESTS:-}" ]; then
  read -r -a tests <<< "$GPU_CHECK_TESTS"
else
  tests=(tests/test_ops.py tests/test_op_errors.py tests/test_build.py)
fi
marker=(-m cuda)
if [ "$dry" = 1 ]; then  # one CPU test: the plumbing, not the suite
  tests=(tests/test_autotune.py)
  marker=(-k autotune_off_keeps)
fi
step tests 120 "$PY" -m pytest -q -rfEs -p no:cacheprovider "${marker[@]}" --junitxml="$out/tests.xml" "${tests[@]}"

# bench: the targets. Quick preset, then B = 256 (whole stack, float32), then the table and verdicts.
if [ "$dry" = 1 ]; then
  quick=(--dry-run --benches conv --layers 1 --repeats 2 --warmup 1)
  b256=(--dry-run --benches conv --layers 1 --batches 8 --repeats 2 --warmup 1)
else
  quick=(--quick)
  b256=(--benches conv --inputs 128 --batches 256 --groups 15 --passes fwd+bwd --dtypes float32 --extra-dtypes ''
        --repeats 10 --warmup 3)
fi
step bench 160 "$PY" benchmarks/bench_gpu.py "${quick[@]}" --out "$out/bench_quick.json"
step bench_b256 100 "$PY" benchmarks/bench_gpu.py "${b256[@]}" --out "$out/bench_b256.json"
step targets 20 "$PY" "$root/scripts/gpu_check_summary.py" --targets "$out"

# autotune: every candidate of every pass, per layer, B and dtype (results written case by case).
if [ "$dry" = 1 ]; then
  step autotune 60 "$PY" scripts/autotune_report.py --device cpu --out "$out/autotune.json"
else
  step autotune 90 "$PY" scripts/autotune_report.py --batches 16,64,256 --dtypes tf32,bf16 --out "$out/autotune.json"
fi

# racecheck / synccheck: every own-kernel configuration on tiny shapes.
sanitizer=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
# shellcheck disable=SC2016  # expanded by the inner bash -c, not here
to_file='f=$1; shift; "$@" > "$f" 2>&1'  # a command's output into one file
if [ "$dry" = 1 ]; then
  step racecheck 60 bash -c "$to_file" _ "$out/racecheck.txt" "$PY" scripts/sanitizer_shapes.py --device cpu
  skip synccheck "dry run: no compute-sanitizer on the CPU"
elif [ ! -x "$sanitizer" ]; then
  skip racecheck "no compute-sanitizer"
  skip synccheck "no compute-sanitizer"
else
  step racecheck 90 bash -c "$to_file" _ "$out/racecheck.txt" "$sanitizer" --tool racecheck --racecheck-report hazard \
    "$PY" scripts/sanitizer_shapes.py
  step synccheck 60 bash -c "$to_file" _ "$out/synccheck.txt" "$sanitizer" --tool synccheck "$PY" scripts/sanitizer_shapes.py
fi
echo "gpu_check: done in $(( $(date +%s) - started )) s; results in $out"
