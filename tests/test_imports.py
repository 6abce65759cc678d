"""What a bare GPU machine has (torch, no monai, no nibabel) is enough for the op, the models and the benchmark."""
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
sys.modules["monai"] = None  # `import monai` now raises ImportError
sys.modules["nibabel"] = None
import torch
import hamfast, hamfast.ops, hamfast.models, hamfast.bench, hamfast.cli
model = hamfast.models.HAM(widths=(4, 4, 4, 4), backend="fused")
available = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1], [0, 0, 1, 0]], dtype=torch.bool)
logits = model(torch.rand(3, 4, 96, 96), available)
logits.sum().backward()
assert logits.shape == (3, 3)
print("ok")
"""


def test_op_models_and_bench_import_without_monai_and_nibabel():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
