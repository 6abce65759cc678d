#!/usr/bin/env bash
# The GPU check, one call on a lent GPU machine (torch preinstalled, no internet, no monai/nibabel):
# builds hamfast with its CUDA kernels for the visible GPU, records the kernels' register and spill
# report, runs the op and model tests (CUDA ones included), runs the quick GPU benchmark, and writes
# into OUTDIR: gpu_check.log, gpu_check.json (summary), tests.xml, resource_usage.txt, bench_gpu.json.
# Budget: about 8 minutes on one H100 (each step has its own timeout).
#   bash scripts/gpu_check.sh OUTDIR
set -uo pipefail
out=${1:?usage: bash scripts/gpu_check.sh OUTDIR}
mkdir -p "$out" && out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python || command -v python3)}
exec > >(tee -a "$out/gpu_check.log") 2>&1
started=$(date +%s)
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export PYTHONUNBUFFERED=1

step() {  # step NAME TIMEOUT_S COMMAND...: runs, logs and records the exit status of one step
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*"
  local t0=$(date +%s)
  timeout "$limit" "$@"
  local rc=$?
  echo "=== $name: exit $rc after $(( $(date +%s) - t0 )) s"
  printf '%s %s %s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$out/.steps"
}

rm -f "$out/.steps"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
find hamfast -name '_C*.so' -delete
step build 300 env HAMFAST_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} "$PY" setup.py -q build_ext --inplace
so=$(ls hamfast/_C*.so 2>/dev/null | head -n 1)
if [ -n "$so" ] && command -v cuobjdump >/dev/null; then
  cuobjdump --dump-resource-usage "$so" > "$out/resource_usage.txt" 2>&1 || true
elif [ -n "$so" ] && [ -x "$CUDA_HOME/bin/cuobjdump" ]; then
  "$CUDA_HOME/bin/cuobjdump" --dump-resource-usage "$so" > "$out/resource_usage.txt" 2>&1 || true
fi
step tests 200 "$PY" -m pytest -q -rs -p no:cacheprovider --junitxml="$out/tests.xml" \
  tests/test_ops.py $(ls tests/test_models*.py 2>/dev/null)
step bench 240 "$PY" benchmarks/bench_gpu.py --quick --out "$out/bench_gpu.json"
[ -f "$out/bench_gpu.json" ] && "$PY" benchmarks/bench_gpu.py --table "$out/bench_gpu.json"

"$PY" - "$out" "$started" <<'PYEOF'
import json, sys, time, xml.etree.ElementTree as ET
from pathlib import Path
import torch
out, started = Path(sys.argv[1]), int(sys.argv[2])
steps = {name: {"exit": int(rc), "seconds": int(s)} for name, rc, s in
         (line.split() for line in (out / ".steps").read_text().splitlines())}
tests = None
if (out / "tests.xml").exists():
    suite = ET.parse(out / "tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
summary = {
    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    "torch": torch.__version__, "cuda": torch.version.cuda,
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": int(time.time()) - started,
    "steps": steps, "tests": tests, "bench": (out / "bench_gpu.json").exists(),
}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PYEOF
rm -f "$out/.steps"
