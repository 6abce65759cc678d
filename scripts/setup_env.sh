# Sourced by scripts/test.sh and scripts/demo.sh: creates (or reuses) the CPU virtualenv, installs
# the pinned requirements when they changed, builds hamfast's extension in place (editable install)
# and activates the environment. HAMFAST_VENV overrides the location.
HAMFAST_VENV=${HAMFAST_VENV:-$HOME/.cache/hamfast/venv-cpu}
_hamfast_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_hamfast_requirements="$_hamfast_root/scripts/requirements-cpu.txt"

if [ ! -x "$HAMFAST_VENV/bin/python" ]; then
  echo "hamfast: creating the virtualenv $HAMFAST_VENV"
  python3 -m venv "$HAMFAST_VENV"
fi
_hamfast_stamp="$HAMFAST_VENV/.hamfast-requirements.sha256"
if ! sha256sum --status -c "$_hamfast_stamp" 2>/dev/null; then
  echo "hamfast: installing the pinned requirements into $HAMFAST_VENV"
  "$HAMFAST_VENV/bin/python" -m pip install -q --upgrade pip
  "$HAMFAST_VENV/bin/python" -m pip install -q -r "$_hamfast_requirements"
  sha256sum "$_hamfast_requirements" > "$_hamfast_stamp"
fi
# shellcheck disable=SC1091
source "$HAMFAST_VENV/bin/activate"
echo "hamfast: building the extension (CPU kernels)"
(cd "$_hamfast_root" && HAMFAST_BUILD_CUDA=${HAMFAST_BUILD_CUDA:-0} MAX_JOBS=${MAX_JOBS:-2} \
  python -m pip install -q --no-build-isolation --no-deps -e .)
