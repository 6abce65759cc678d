# Sourced by scripts/test.sh and scripts/demo.sh (or by you: `source scripts/setup_env.sh`).
#
# Creates (or reuses) the CPU virtualenv and installs the pinned requirements into it when they
# changed; then builds THIS checkout's extension in place and puts the checkout first on
# PYTHONPATH. hamfast itself is never installed into the virtualenv, so one virtualenv serves any
# number of checkouts (the heavy part, torch, is installed once) and running the scripts in one
# checkout never re-points another's `import hamfast`. After sourcing, `hamfast ...` (a shell
# function) and `python -m hamfast ...` run this checkout. HAMFAST_VENV overrides the location.
HAMFAST_VENV=${HAMFAST_VENV:-$HOME/.cache/hamfast/venv-cpu}
_hamfast_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_hamfast_requirements="$_hamfast_root/scripts/requirements-cpu.txt"

if [ ! -x "$HAMFAST_VENV/bin/python" ]; then
  echo "hamfast: creating the virtualenv $HAMFAST_VENV"
  python3 -m venv "$HAMFAST_VENV"
fi
# The stamp holds the requirements' hash (its first field; older stamps also named a file).
_hamfast_stamp="$HAMFAST_VENV/.hamfast-requirements.sha256"
_hamfast_want=$(sha256sum < "$_hamfast_requirements" | cut -d' ' -f1)
_hamfast_have=$(cut -d' ' -f1 "$_hamfast_stamp" 2>/dev/null || true)
if [ "$_hamfast_want" != "$_hamfast_have" ]; then
  echo "hamfast: installing the pinned requirements into $HAMFAST_VENV"
  "$HAMFAST_VENV/bin/python" -m pip install -q --upgrade pip
  "$HAMFAST_VENV/bin/python" -m pip install -q -r "$_hamfast_requirements"
  echo "$_hamfast_want" > "$_hamfast_stamp"
fi
# shellcheck disable=SC1091
source "$HAMFAST_VENV/bin/activate"
echo "hamfast: building the extension of $_hamfast_root in place (CPU kernels)"
(cd "$_hamfast_root" && HAMFAST_BUILD_CUDA=${HAMFAST_BUILD_CUDA:-0} MAX_JOBS=${MAX_JOBS:-2} \
  python setup.py -q build_ext --inplace)
export PYTHONPATH="$_hamfast_root${PYTHONPATH:+:$PYTHONPATH}"
# A hamfast installed into the virtualenv earlier (the old editable install) must not win.
python -c "import hamfast, os, sys; here = os.path.realpath(hamfast.__file__); root = os.path.realpath(sys.argv[1]); \
assert here.startswith(root + os.sep), f'import hamfast finds {here}, not {root}'" "$_hamfast_root"
# A launcher rather than a shell function: child processes (scripts, job schedulers) cannot see
# functions. It names this checkout and virtualenv, so it works without any environment set up.
unset -f hamfast 2>/dev/null || true
mkdir -p "$_hamfast_root/build/bin"
cat > "$_hamfast_root/build/bin/hamfast.tmp" <<LAUNCHER
#!/bin/sh
# Runs the hamfast checkout $_hamfast_root with $HAMFAST_VENV (written by scripts/setup_env.sh).
PYTHONPATH="$_hamfast_root\${PYTHONPATH:+:\$PYTHONPATH}" exec "$HAMFAST_VENV/bin/python" -m hamfast "\$@"
LAUNCHER
chmod +x "$_hamfast_root/build/bin/hamfast.tmp"
mv -f "$_hamfast_root/build/bin/hamfast.tmp" "$_hamfast_root/build/bin/hamfast"
case ":$PATH:" in
  *":$_hamfast_root/build/bin:"*) ;;
  *) export PATH="$_hamfast_root/build/bin:$PATH" ;;
esac
hash -r 2>/dev/null || true
