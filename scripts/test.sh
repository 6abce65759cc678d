#!/usr/bin/env bash
# The test command: sets up (or reuses) the CPU virtualenv, builds hamfast, runs the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_ops.py -k gradcheck`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
python -c "import hamfast._extension as e; d = e.describe(); assert d['extension'], d; print('hamfast extension:', d)"
if [ $# -eq 0 ]; then set -- tests -q -ra; fi
python -m pytest "$@"
