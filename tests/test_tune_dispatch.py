"""scripts/tune_dispatch.py without a GPU: the table it writes is valid C++ that the dispatcher
then follows (entries are matched on pass, precision, channels, height, batch and sm major)."""
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EMULATION = ROOT / "tests" / "cuda_emulation"


def load_tuner():
    spec = importlib.util.spec_from_file_location("tune_dispatch", ROOT / "scripts" / "tune_dispatch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ (C++20)")
def test_written_table_compiles_and_is_followed(tmp_path, capsys):
    tuner = load_tuner()
    table = tmp_path / "dispatch_table.h"
    shutil.copy(ROOT / "csrc" / "cuda" / "dispatch_table.h", table)
    common = dict(precision="bf16", cin=64, cout=128, height=61, sm_major=9, device="NVIDIA H200")
    tuner.write_table(table, [
        dict(pass_name="forward", batch=16, best="cudnn_groups_b", **common),
        dict(pass_name="forward", batch=256, best="tensor_core:128x64:1", **common),
        dict(pass_name="grad-weight", batch=16, best="tensor_core:64x64:4", **common),
    ])
    text = table.read_text()
    assert "THIS SHIPPED TABLE IS EMPTY" not in text and "Tuned on NVIDIA H200" in text
    main = tmp_path / "main.cpp"
    main.write_text("""
#include <cstdio>
#include "dispatch.h"
using namespace hamfast::cuda;
int main() {
  const DeviceInfo h200{9, 0, 132, "x"}, a100{8, 0, 108, "x"};
  for (int batch : {8, 64, 1000}) {
    const ConvShape s{batch, 64, 61, 61, 15, 128, 5, 5, 1, 0, 57, 57};
    for (PassKind p : {PassKind::kForward, PassKind::kGradWeight})
      std::printf("%d %s: %s | %s\\n", batch, pass_name(p), describe(choose(p, Precision::kBFloat16, s, h200),
                  Precision::kBFloat16).c_str(), choose(p, Precision::kBFloat16, s, h200).why.c_str());
  }
  const ConvShape s{8, 64, 61, 61, 15, 128, 5, 5, 1, 0, 57, 57};
  std::printf("a100 %s\\n", choose(PassKind::kForward, Precision::kBFloat16, s, a100).why.c_str());
}
""")
    # A copy of dispatch.cpp beside the written table includes it instead of the shipped one.
    shutil.copy(ROOT / "csrc" / "cuda" / "dispatch.cpp", tmp_path / "dispatch.cpp")
    subprocess.run(["g++", "-std=c++20", f"-I{EMULATION}", f"-I{ROOT / 'csrc' / 'cuda'}", "-DHAMFAST_CUDA_EMULATION",
                    str(main), str(tmp_path / "dispatch.cpp"), "-o", str(tmp_path / "main")],
                   check=True, capture_output=True, text=True)
    out = subprocess.run([str(tmp_path / "main")], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith("8 forward: cuDNN, one convolution with groups=B")
    assert "measured on NVIDIA H200" in out[0]
    assert out[1].startswith("8 grad-weight: custom tensor-core kernel (mma.sync), tile 64x64, split-K 4")
    assert out[2].startswith("64 forward: custom tensor-core kernel (mma.sync), tile 128x64")  # B <= 256 entry
    assert out[4].startswith("1000 forward: custom tensor-core kernel (mma.sync), tile 128x64")  # largest covers all
    assert "heuristic" in out[3]  # grad-weight at B = 64: no entry between 16 and 256 ... tuned at 16 only
    assert "heuristic" in out[-1]  # another sm major: the table does not apply
