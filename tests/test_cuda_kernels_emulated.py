"""The CUDA kernels' index logic, checked on a machine without a GPU.

csrc/cuda/grouped_conv_kernels.cu is compiled as host C++ against tests/cuda_emulation/cuda_runtime.h
(real threads per block, a barrier for __syncthreads), its launches rewritten into host calls, and
run in float64 against direct convolution loops. This proves the tiling, the tile-to-group map and
the three passes' indexing; it says nothing about speed or GPU-specific behaviour, which the CUDA
tests in test_ops.py cover on a GPU.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EMULATION = Path(__file__).resolve().parent / "cuda_emulation"
LAUNCH = re.compile(r"^(\s*)(\w+<[^;]*>)<<<([^,]*), ([^,]*), 0, stream>>>\((.*)\);$", re.MULTILINE)


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ (C++20)")
def test_cuda_kernels_match_direct_convolution_on_host(tmp_path):
    source = (ROOT / "csrc" / "cuda" / "grouped_conv_kernels.cu").read_text()
    host_source, launches = LAUNCH.subn(r"\1emu_launch(\3, \4, [&] { \2(\5); });", source)
    assert launches == 2, "expected the forward/grad-input and grad-weight launches"
    (tmp_path / "kernels_host.cpp").write_text(host_source)
    binary = tmp_path / "check_kernels"
    subprocess.run(
        ["g++", "-std=c++20", "-O1", "-pthread", f"-I{EMULATION}", f"-I{ROOT / 'csrc' / 'cuda'}",
         f'-DKERNELS_SOURCE="{tmp_path / "kernels_host.cpp"}"', str(EMULATION / "check_kernels.cpp"), "-o", str(binary)],
        check=True, capture_output=True, text=True,
    )
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600)
    print(result.stdout)
    assert result.returncode == 0, result.stdout
    assert result.stdout.count("ok  ") == 21
