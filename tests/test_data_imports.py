"""``import hamfast.data`` works without nibabel and monai; only the functions that need them fail."""
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys, tempfile, pathlib
sys.modules["nibabel"] = None  # makes `import nibabel` raise ImportError
sys.modules["monai"] = None
import numpy as np
import hamfast.data as data
train, test = data.stratified_split(np.arange(20) % 3, test_size=5, seed=0)
mask = data.drop_random_modalities(np.ones((6, 4), bool), seed=0)
item = data.ModalityDataset(np.ones((6, 4, 8, 8)), mask, np.zeros(6))[0]
with tempfile.TemporaryDirectory() as tmp:
    (pathlib.Path(tmp) / "P_t1.nii.gz").write_bytes(b"")
    for call in (lambda: data.load_case(tmp, slice_index=0), lambda: data.ModalityAugment(seed=0)):
        try:
            call()
        except ImportError:
            continue
        raise SystemExit("expected ImportError")
print("ok")
"""


def test_import_without_nibabel_and_monai():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
