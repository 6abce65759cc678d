#!/usr/bin/env bash
# Downloads, on a machine with internet, the wheels the GPU machine lacks (it has torch, pytest,
# numpy, scipy, tqdm, matplotlib, ninja, pybind11 and no internet) into .whl/ (git-ignored), for
# scripts/gpu_check.sh to install from. Pure-Python wheels for Python 3.12, pinned to
# scripts/requirements-cpu.txt; packaging and typing_extensions are nibabel's pure-Python deps, in
# case the image lacks them (gpu_check.sh installs only what is missing).
#   bash scripts/fetch_gpu_wheels.sh [DEST]      (DEST defaults to .whl)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
pin() {  # pin NAME: NAME==VERSION from scripts/requirements-cpu.txt
  local line
  line=$(grep -i -E "^$1==" scripts/requirements-cpu.txt) || { echo "fetch_gpu_wheels: $1 is not pinned in scripts/requirements-cpu.txt" >&2; exit 1; }
  echo "$line"
}
PY=${PYTHON:-$(command -v python || command -v python3)}
mkdir -p "$dest"
"$PY" -m pip download --no-deps --python-version 3.12 --only-binary=:all: -d "$dest" \
  "$(pin monai)" "$(pin nibabel)" "$(pin expecttest)" packaging==26.4 typing_extensions==4.16.0
ls -1 "$dest"/*.whl
echo "fetch_gpu_wheels: wheels in $dest; on the GPU machine: bash scripts/gpu_check.sh OUTDIR (carry [\".whl\"])"
