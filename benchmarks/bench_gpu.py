"""The standalone GPU benchmark: ``python benchmarks/bench_gpu.py --out FILE.json`` (same as
``hamfast bench``); ``--table FILE.json`` prints the ratio tables. See ``hamfast.bench`` and
``benchmarks/README.md``."""
import sys
from pathlib import Path

# Run as a script, Python puts benchmarks/ on the path, not the repository root; a checkout built
# in place (setup.py build_ext --inplace, as scripts/gpu_check.sh does) is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hamfast.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
