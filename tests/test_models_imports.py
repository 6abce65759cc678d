"""hamfast.models and hamfast.training import on a machine without monai and nibabel (GPU images lack them)."""
import os
import subprocess
import sys

import hamfast

CODE = """
import sys
sys.modules["monai"] = None  # any import of monai or nibabel now fails
sys.modules["nibabel"] = None
import torch
import hamfast.models, hamfast.training, hamfast.metrics
model = hamfast.models.build_model("ham", widths=(4, 8, 8, 8))
print(tuple(model(torch.rand(2, 4, 96, 96), torch.ones(2, 4, dtype=torch.bool)).shape))
"""


def test_models_and_train_import_without_monai_and_nibabel():
    root = os.path.dirname(os.path.dirname(os.path.abspath(hamfast.__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("(2, 3)")
