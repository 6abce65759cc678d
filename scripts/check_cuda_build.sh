#!/usr/bin/env bash
# Proves the CUDA sources compile and link on a machine without a GPU: in a separate virtualenv with
# a CUDA build of torch (2.14.1, CUDA 13), builds hamfast with its CUDA kernels from a copy of the
# tree, imports it and runs the op tests (the CUDA ones skip without a GPU). Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv=${HAMFAST_CUDA_VENV:-$HOME/.cache/hamfast/venv-cuda}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
  echo "check_cuda_build: no nvcc under CUDA_HOME=$CUDA_HOME; set CUDA_HOME" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "check_cuda_build: creating $venv (a CUDA build of torch, about 5.5 GB)"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi
"$venv/bin/python" -m pip install -q torch==2.14.1 numpy setuptools wheel ninja pybind11 pytest expecttest
site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
export CPATH="$site/nvidia/cu13/include${CPATH:+:$CPATH}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r setup.py pyproject.toml README.md csrc hamfast tests "$work"/
find "$work/hamfast" -name '*.so' -delete
cd "$work"
start=$(date +%s)
HAMFAST_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-2} "$venv/bin/python" setup.py -q build_ext --inplace > build.log 2>&1 || {
  tail -n 60 build.log; echo "check_cuda_build: the CUDA build failed" >&2; exit 1; }
echo "check_cuda_build: built with CUDA kernels in $(( $(date +%s) - start )) s"
"$venv/bin/python" -c "
import torch, hamfast
from hamfast import _extension
info = _extension.describe()
assert info['cuda_kernels'], info
print('check_cuda_build: imported', hamfast.__file__, 'torch', torch.__version__, 'CUDA', torch.version.cuda, info)
"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_ops.py
