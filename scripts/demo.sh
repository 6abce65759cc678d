#!/usr/bin/env bash
# Quick start on a fresh machine: sets up (or reuses) the CPU virtualenv and builds this checkout
# (scripts/setup_env.sh, shared with scripts/test.sh), then runs `hamfast demo`: a synthetic
# BraTS-like cohort, a reduced Experiment A with every method, Table 1a and the plots, written to
# ~/.cache/hamfast/demo (outside the checkout). Extra arguments go to `hamfast demo`, e.g.
# `bash scripts/demo.sh --out /tmp/demo --jobs 4`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
python -m hamfast demo "$@"
