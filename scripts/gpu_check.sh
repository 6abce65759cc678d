#!/usr/bin/env bash
# The GPU check, one call on a lent GPU machine (torch preinstalled; no internet; no monai, nibabel
# or expecttest, whose wheels scripts/fetch_gpu_wheels.sh puts in .whl/). In order, each step with
# its own time limit inside an overall budget, so the summary is always written:
#   1. build hamfast with its CUDA kernels for the visible GPU, with the system compiler (the image's
#      CXX=/opt/gcc/bin/g++ links libstdc++ statically, which crashes torch on the op's errors),
#      and record the kernels' register/spill report;
#   2. unpack the missing test dependencies from .whl/ into a folder under /tmp (the image is untouched);
#   3. run the whole test suite (op, build and error tests first), CUDA tests included;
#   4. run the quick GPU benchmark (skipped, with a line saying so, without a GPU).
# Writes into OUTDIR: gpu_check.log, gpu_check.json (summary), tests.xml, resource_usage.txt,
# bench_gpu.json. Fits one 10-minute device call with the machine's start: the steps share
# GPU_CHECK_BUDGET seconds (default 450: build <= 150, tests what is left but 110 s kept for the
# bench, bench <= 150; measured on an H200: build 25 s, quick bench 92 s).
#   bash scripts/gpu_check.sh OUTDIR
# Knobs: PYTHON, GPU_CHECK_BUDGET, GPU_CHECK_BUILD_S (build limit, 150), GPU_CHECK_TESTS (test paths, default: the whole suite), WHEELS
# (default .whl), HAMFAST_BUILD_CUDA (default 1 with a GPU, auto without), MAX_JOBS.
set -uo pipefail
out=${1:?usage: bash scripts/gpu_check.sh OUTDIR}
mkdir -p "$out" && out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
root=$(pwd)
PY=${PYTHON:-$(command -v python3 || command -v python)}
exec > >(tee -a "$out/gpu_check.log") 2>&1
started=$(date +%s)
budget=${GPU_CHECK_BUDGET:-450}
export PYTHONUNBUFFERED=1

left() { echo $(( budget - ($(date +%s) - started) )); }
step() {  # step NAME MAX_S COMMAND...: runs with min(MAX_S, budget left) seconds, logs and records it
  local name=$1 limit=$2; shift 2
  local remaining; remaining=$(left)
  (( remaining < limit )) && limit=$remaining
  if (( limit < 10 )); then
    echo "=== $name: skipped, the ${budget}s budget is spent"
    printf '%s %s %s\n' "$name" skipped 0 >> "$out/.steps"
    return
  fi
  echo "=== $name (limit ${limit}s): $*"
  local t0; t0=$(date +%s)
  # SIGINT first: pytest then stops cleanly and still writes its report; KILL 20 s later.
  timeout -s INT -k 20 "$limit" "$@"
  local rc=$?
  echo "=== $name: exit $rc after $(( $(date +%s) - t0 )) s$( ((rc == 124)) && echo ' (time limit)')"
  printf '%s %s %s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$out/.steps"
}

rm -f "$out/.steps"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "gpu_check: no nvidia-smi"
gpu=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"

# 1. Build. The system compiler when there is one (setup.py would also switch to it, with a note).
if [ -x /usr/bin/gcc ] && [ -x /usr/bin/g++ ]; then
  export CC=/usr/bin/gcc CXX=/usr/bin/g++
fi
echo "gpu_check: compiler CC=${CC:-default} CXX=${CXX:-default}"
if [ "$gpu" = 1 ]; then
  export HAMFAST_BUILD_CUDA=${HAMFAST_BUILD_CUDA:-1}
else
  echo "gpu_check: no GPU visible: building what this torch allows; CUDA tests and the benchmark will skip"
  export HAMFAST_BUILD_CUDA=${HAMFAST_BUILD_CUDA:-auto}
fi
find hamfast -name '_C*.so' -delete
step build "${GPU_CHECK_BUILD_S:-150}" env MAX_JOBS="${MAX_JOBS:-16}" "$PY" setup.py -q build_ext --inplace
so=$(ls hamfast/_C*.so 2>/dev/null | head -n 1)
if [ -n "$so" ]; then
  cuobjdump=$(command -v cuobjdump || echo "${CUDA_HOME:-/usr/local/cuda}/bin/cuobjdump")
  [ -x "$cuobjdump" ] && "$cuobjdump" --dump-resource-usage "$so" > "$out/resource_usage.txt" 2>&1 || true
fi

# 2. Test dependencies from wheels: only the modules missing, unpacked into a private folder
#    (pure-Python wheels are importable as unpacked; no pip, no changes to the image).
wheels=${WHEELS:-.whl}
site=$(mktemp -d /tmp/hamfast-gpu-site.XXXXXX)
export PYTHONPATH="$root:$site${PYTHONPATH:+:$PYTHONPATH}"
install_missing() {
  local module wheel_prefix missing=0 status=0
  for pair in monai:monai nibabel:nibabel expecttest:expecttest packaging:packaging typing_extensions:typing_extensions; do
    module=${pair%%:*}; wheel_prefix=${pair#*:}
    "$PY" -c "import $module" 2>/dev/null && continue
    missing=1
    wheel=$(ls "$wheels/$wheel_prefix"-*.whl 2>/dev/null | head -n 1)
    if [ -z "$wheel" ]; then
      echo "gpu_check: $module is missing and there is no $wheels/$wheel_prefix-*.whl (run scripts/fetch_gpu_wheels.sh, then carry .whl)"
      status=1
      continue
    fi
    "$PY" -m zipfile -e "$wheel" "$site" && echo "gpu_check: installed $(basename "$wheel") into $site"
  done
  (( missing )) || echo "gpu_check: monai, nibabel and expecttest are already installed"
  "$PY" -c "import monai, nibabel, expecttest; print('gpu_check: monai', monai.__version__, 'nibabel', nibabel.__version__, 'import')" || status=1
  return $status
}
echo "=== deps: from $wheels into $site"
t0=$(date +%s)
install_missing
printf '%s %s %s\n' deps "$?" "$(( $(date +%s) - t0 ))" >> "$out/.steps"

# 3. The whole suite, the op/build/error tests first (so a time limit cuts the least important).
if [ -n "${GPU_CHECK_TESTS:-}" ]; then
  read -r -a tests <<< "$GPU_CHECK_TESTS"
else
  first=(tests/test_build.py tests/test_op_errors.py tests/test_ops.py tests/test_cuda_kernels_emulated.py)
  tests=()
  for f in "${first[@]}"; do [ -f "$f" ] && tests+=("$f"); done
  for f in tests/test_*.py; do [[ " ${first[*]} " == *" $f "* ]] || tests+=("$f"); done
fi
bench_reserve=$([ "$gpu" = 1 ] && echo 110 || echo 0)
step tests $(( $(left) - bench_reserve )) "$PY" -m pytest -q -rfEs --durations=15 -p no:cacheprovider --junitxml="$out/tests.xml" "${tests[@]}"

# 4. The quick benchmark.
if [ "$gpu" = 1 ] && [ -n "$so" ]; then
  step bench 150 "$PY" benchmarks/bench_gpu.py --quick --out "$out/bench_gpu.json"
  [ -f "$out/bench_gpu.json" ] && "$PY" benchmarks/bench_gpu.py --table "$out/bench_gpu.json"
else
  echo "=== bench: skipped ($( [ "$gpu" = 1 ] && echo 'the build failed' || echo 'no GPU'))"
  printf '%s %s %s\n' bench skipped 0 >> "$out/.steps"
fi

"$PY" - "$out" "$started" "${so:-}" <<'PYEOF'
import json, sys, time, xml.etree.ElementTree as ET
from pathlib import Path
out, started, so = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
steps = {}
for line in (out / ".steps").read_text().splitlines():
    name, rc, seconds = line.split()
    steps[name] = {"exit": None if rc == "skipped" else int(rc), "skipped": rc == "skipped", "seconds": int(seconds)}
tests = None
if (out / "tests.xml").exists():
    try:
        suite = ET.parse(out / "tests.xml").getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        tests = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    except ET.ParseError as exc:
        tests = {"unreadable": str(exc)}
try:
    import torch
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda}
except Exception as exc:  # the summary is written whatever broke
    device, versions = None, {"torch": f"unimportable: {exc}"}
libstdcxx = None
if so:
    try:
        import importlib.util
        spec = importlib.util.spec_from_file_location("toolchain", "hamfast/_toolchain.py")
        _toolchain = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_toolchain)
        libstdcxx = _toolchain.cxx_runtime_problem(_toolchain.needed_libraries(so)) or "shared (safe)"
    except Exception as exc:
        libstdcxx = f"unchecked: {exc}"
summary = {
    "device": device, **versions,
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": int(time.time()) - started,
    "library": so or None, "libstdc++": libstdcxx,
    "steps": steps, "tests": tests, "bench": (out / "bench_gpu.json").exists(),
}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PYEOF
rm -f "$out/.steps"
