"""The CUDA kernels, checked on a machine without a GPU.

csrc/cuda/grouped_conv_kernels.cu is compiled as host C++ against tests/cuda_emulation (each CUDA
thread a fiber, barriers for __syncthreads and per warp, host models of mma.sync written from the
PTX ISA's fragment layouts), its launches rewritten into host calls. check_kernels.cpp then runs
all passes (forward, grad-input, grad-weight, grad-bias) on every precision path (float64 and
float32 SIMT, TF32, bf16, f16 tensor cores) with small-integer inputs, so every sum is exact, and
compares BITWISE with direct convolution loops. This proves tiling, the tile-to-group map, the
operand iterators, the mma fragment indexing, split-K, the direct grad-weight write at split-K 1,
the bias gradient fused into grad-weight,
the copy width each pass uses and the output layouts; it says nothing about speed or real-hardware
behaviour (timing, memory ordering of cp.async), which the CUDA tests in test_ops.py cover on a GPU.
"""
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EMULATION = Path(__file__).resolve().parent / "cuda_emulation"
# kernel<...><<<grid, block, shared_bytes, stream>>>(args);  ->  emu_launch(grid, block, shared_bytes, [&] { kernel<...>(args); });
LAUNCH = re.compile(r"(\w+(?:<[^;<>]*>)?)<<<([^,]+), ([^,]+), ([^,]+), ([^>]+)>>>\(([^;]*)\);", re.S)
CASES = 10  # in check_kernels.cpp
PATHS = 5  # float64, float32, tf32, bf16, f16
# Checks per case and path: forward, grad-input, grad-weight, the bias gradient fused into
# grad-weight, grad-weight again without the bias (the same bits), grad-weight's kernel count and
# workspace, grad-bias from NCHW and from NHWC dy, copy widths. (No fused bias check where
# grad-weight runs no kernel: Cin = 0 or Cout = 0.)
CHECKS = 9
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ (C++20)")


def build(tmp: Path, name: str, *flags: str) -> Path:
    source = (ROOT / "csrc" / "cuda" / "grouped_conv_kernels.cu").read_text()
    host_source, launches = LAUNCH.subn(r"emu_launch(\2, \3, \4, [&] { \1(\6); });", source)
    assert launches == 4, "expected the GEMM, the grad-weight reduce and the two grad-bias launches"
    (tmp / "kernels_host.cpp").write_text(host_source)
    binary = tmp / name
    subprocess.run(
        ["g++", "-std=c++20", "-O1", "-Wno-subobject-linkage", "-DHAMFAST_CUDA_EMULATION", f"-I{EMULATION}",
         f"-I{ROOT / 'csrc' / 'cuda'}", f"-I{ROOT / 'csrc'}", f'-DKERNELS_SOURCE="{tmp / "kernels_host.cpp"}"',
         str(EMULATION / "check_kernels.cpp"), str(ROOT / "csrc" / "cuda" / "dispatch.cpp"),
         str(ROOT / "csrc" / "autotune.cpp"), "-o", str(binary), *flags],
        check=True, capture_output=True, text=True,
    )
    return binary


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    return build(tmp_path_factory.mktemp("emulation"), "check_kernels")


@needs_gxx
def test_all_passes_and_precisions_match_direct_convolution_bitwise(checker):
    result = subprocess.run([str(checker)], capture_output=True, text=True, timeout=900)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok   ") == CASES * PATHS * CHECKS


def lines_of(stdout: str, case: str, path: str, check: str) -> list[str]:
    return [line for line in stdout.splitlines() if case in line and f"| {path} " in line and check in line]


@needs_gxx
def test_split1_grad_weight_is_one_kernel_and_cin4_16bit_uses_8_byte_copies(checker):
    """Split-K 1 writes grad_weight from the GEMM (one launch, no workspace) and split-K > 1 adds the
    reduce; bf16 / f16 with Cin = 4 copy 8 bytes per cp.async in every pass (grad-input reads the
    forward's KRSC weight, contiguous along Cin) instead of one element, float32 16 bytes. Cases 8
    and 9 of check_kernels.cpp (Cin = 4, odd H/W, empty groups)."""
    out9 = subprocess.run([str(checker), "8"], capture_output=True, text=True, timeout=900)
    out = subprocess.run([str(checker), "9"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0 and out9.returncode == 0, out.stdout + out9.stdout
    for path in ("float64", "float32", "tf32", "bf16", "f16"):
        (kernels,) = lines_of(out.stdout, "Cin4 odd HW empty groups split1", path, "grad-weight kernels")
        assert "split1" in kernels and "1 launch(es), workspace 0 bytes" in kernels, kernels
        (kernels,) = lines_of(out9.stdout, "Cin4 k5 stride2", path, "grad-weight kernels")
        assert "split3" in kernels and "2 launch(es)" in kernels, kernels
    for path in ("bf16", "f16"):
        (widths,) = lines_of(out.stdout, "Cin4 odd HW empty groups split1", path, "copy bytes")
        assert "forward 8 grad-input 8 grad-weight 8" in widths, widths
        (widths,) = lines_of(out9.stdout, "Cin4 k5 stride2", path, "copy bytes")
        assert "forward 8 grad-input 8 grad-weight 8" in widths, widths
    (widths,) = lines_of(out.stdout, "Cin4 odd HW empty groups split1", "tf32", "copy bytes")
    assert "forward 16 grad-input 16 grad-weight 16" in widths, widths


@needs_gxx
def test_zero_sized_channels_and_batch_give_empty_or_bias_results(checker):
    """Cin = 0 (FastDivmod(0) used to kill the process with SIGFPE), Cout = 0 (a zero-sized grid used
    to be a launch error) and B = 0, on every path and tile: out = bias for Cin = 0, grad_x = 0 for
    Cout = 0, grad_weight = 0 for B = 0, the rest empty."""
    result = subprocess.run([str(checker), "zero"], capture_output=True, text=True, timeout=900)
    print(result.stdout)
    assert result.returncode == 0, f"exit {result.returncode}: " + result.stdout[-2000:] + result.stderr[-2000:]
    assert "launch error" not in result.stdout
    # Zero Cin and zero Cout run no grad-weight kernel (no fused bias check); zero batch does.
    assert result.stdout.count("ok   ") == 3 * PATHS * ((CHECKS - 1) * 2 + CHECKS)


@needs_gxx
def test_16bit_conversions_round_like_torch(checker, tmp_path):
    rng = np.random.default_rng(0)
    edge = np.array([0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, 1e30, -1e30, 2.0**-14, 2.0**-24, 2.0**-25,
                     1.5 * 2.0**-25, 3.0 * 2.0**-26, 2.0**-126, 1e-45, np.inf, -np.inf], dtype=np.float32)
    ties = (np.arange(1, 2000, dtype=np.uint32) << 13 | 0x1000).view(np.float32)  # exact f16 ties
    values = np.concatenate([edge, ties, rng.standard_normal(20000).astype(np.float32) * 10.0 ** rng.integers(-9, 6, 20000),
                             rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32)])
    values = values.astype(np.float32)
    values = values[~np.isnan(values)]  # NaN payloads differ between implementations; both stay NaN
    (tmp_path / "in.bin").write_bytes(values.tobytes())
    subprocess.run([str(checker), "convert", str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=True)
    got = np.frombuffer((tmp_path / "out.bin").read_bytes(), dtype=np.uint16).reshape(-1, 2)
    t = torch.from_numpy(values)
    bf16 = t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    f16 = t.to(torch.float16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(got[:, 0], bf16), np.flatnonzero(got[:, 0] != bf16)[:5]
    assert np.array_equal(got[:, 1], f16), np.flatnonzero(got[:, 1] != f16)[:5]


@needs_gxx
def test_malformed_plans_never_touch_memory_outside_the_tensors(tmp_path):
    """Offsets out of range or decreasing, order entries out of range or repeated (issue 9): under
    AddressSanitizer any read or write outside the buffers would abort the run."""
    probe = tmp_path / "probe.cpp"
    probe.write_text("int main() { return 0; }\n")
    if subprocess.run(["g++", "-fsanitize=address", str(probe), "-o", str(tmp_path / "probe")]).returncode != 0:
        pytest.skip("g++ cannot link with AddressSanitizer here (no libasan)")
    binary = build(tmp_path, "check_kernels_asan", "-fsanitize=address", "-fno-omit-frame-pointer")
    result = subprocess.run([str(binary), "malformed"], capture_output=True, text=True, timeout=900)
    print(result.stdout, result.stderr[-3000:])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("ok   malformed") == 3


def dispatch_lines(checker, sm_major: int, sm_count: int, env=None) -> dict[tuple, str]:
    out = subprocess.run([str(checker), "dispatch", str(sm_major), str(sm_count)], capture_output=True, text=True,
                         check=True, env=env).stdout
    lines = {}
    for line in out.splitlines():  # "<precision> <Cin> <Cout> <B> <pass>: <description> | <why>"
        head, rest = line.split(": ", 1)
        precision, cin, cout, batch, pass_name = head.split()
        lines[(int(precision), int(cin), int(cout), int(batch), pass_name)] = rest
    return lines


@needs_gxx
def test_dispatcher_picks_a_path_every_device_can_run(checker):
    """The fixed heuristic (what runs with HAMFAST_AUTOTUNE=off, and the first candidate the autotuner
    times): tensor cores on sm_80+, SIMT for float64 / exact float32 / pre-sm_80 TF32, cuDNN for
    16-bit inputs before sm_80 (there is no 16-bit SIMT kernel)."""
    FLOAT64, FLOAT32, TF32, BF16, F16 = range(5)
    hopper = dispatch_lines(checker, 9, 132)
    assert len(hopper) == 5 * 4 * 2 * 3
    for (precision, cin, cout, batch, pass_name), text in hopper.items():
        assert text.split(" | ")[1].startswith("heuristic: "), text
        if precision in (FLOAT64, FLOAT32):
            assert text.startswith("custom SIMT kernel"), text
        else:
            assert text.startswith("custom tensor-core kernel (mma.sync), tile "), text
    assert "split-K" in hopper[(TF32, 4, 64, 16, "grad-weight")]  # 30 output tiles for 132 SMs
    assert "split-K" in hopper[(FLOAT32, 4, 64, 16, "grad-weight")]  # the exact SIMT kernel splits K too
    turing = dispatch_lines(checker, 7, 40)
    assert turing[(TF32, 64, 128, 16, "forward")].startswith("custom SIMT kernel")
    assert turing[(BF16, 64, 128, 16, "forward")].startswith("cuDNN, one convolution with groups=B")
    import os
    forced = dispatch_lines(checker, 9, 132, env={**os.environ, "HAMFAST_DISPATCH_OVERRIDE": "tensor_core:64x64:3"})
    assert forced[(F16, 64, 128, 16, "grad-weight")].startswith("custom tensor-core kernel (mma.sync), tile 64x64, split-K 3")
    assert "forced by HAMFAST_DISPATCH_OVERRIDE" in forced[(F16, 64, 128, 16, "grad-weight")]


def integer_table(checker, mode: str) -> dict[tuple[int, ...], tuple[int, ...]]:
    """The rows "<ints>: <ints>" that ``check_kernels <mode>`` prints, keyed by the left side."""
    out = subprocess.run([str(checker), mode], capture_output=True, text=True, timeout=60, check=True).stdout
    rows = {}
    for line in out.splitlines():
        head, rest = line.split(": ")
        rows[tuple(map(int, head.split()))] = tuple(map(int, rest.split()))
    return rows


@needs_gxx
def test_one_backward_call_converts_dy_once_and_nothing_for_cudnn(checker):
    """plan_backward_layouts (dispatch.cpp), which grouped_conv2d_backward on CUDA follows: dy is
    copied to NHWC at most once for grad-input and grad-weight together (where the separate ops
    copied it once per own-kernel pass), x only for an own-kernel grad-weight, nothing that is
    channels_last already, and nothing for a pass on cuDNN (those take NCHW as before)."""
    rows = integer_table(checker, "layouts")
    assert len(rows) == 2 * 4 * 2 * 4 * 2 * 2
    own = {0, 1}  # kTensorCore, kSimt; 2 and 3 are the cuDNN paths
    for (gi, pi, gw, pw, dy_cl, x_cl), (convert_dy, convert_x, copies, separate) in rows.items():
        input_own, weight_own = gi and pi in own, gw and pw in own
        assert convert_dy == int((input_own or weight_own) and not dy_cl)
        assert convert_x == int(weight_own and not x_cl)
        assert copies == convert_dy + convert_x
        assert separate == int(input_own and not dy_cl) + int(weight_own) * (int(not dy_cl) + int(not x_cl))
        assert copies <= separate
    # Both backward passes on the tensor cores, NCHW activations (HAM's layers): 3 copies -> 2.
    assert rows[(1, 0, 1, 0, 0, 0)] == (1, 1, 2, 3)
    # Grad-input on cuDNN, grad-weight on the tensor cores: unchanged (dy and x once each).
    assert rows[(1, 2, 1, 0, 0, 0)] == (1, 1, 2, 2)
    # Everything on cuDNN: no copy (they read NCHW).
    assert rows[(1, 2, 1, 3, 0, 0)][2] == 0


@needs_gxx
def test_forward_saves_its_nhwc_x_only_when_an_own_kernel_grad_weight_will_read_it(checker):
    """saves_input_nhwc (dispatch.cpp), which decides whether grouped_conv2d hands its NHWC copy of x
    to autograd: only when forward and grad-weight both run own kernels, grad-weight's choice is
    settled and x is not channels_last. Then a layer's step makes one copy less (HAM's NCHW layers
    on the own kernels: 3 -> 2), and never more in any combination."""
    rows = integer_table(checker, "saved")
    assert len(rows) == 4 * 4 * 4 * 2 * 2 * 2
    own = {0, 1}
    for (pf, pi, pw, pending, x_cl, dy_cl), (saves, copies, without) in rows.items():
        assert saves == int(pf in own and pw in own and not pending and not x_cl)
        assert copies == without - saves
        assert copies <= without
    # Forward, grad-input and grad-weight on the tensor cores, NCHW x and dy: x once, dy once.
    assert rows[(0, 0, 0, 0, 0, 0)] == (1, 2, 3)
    # While grad-weight is still to be measured, nothing is saved (a cuDNN winner reads NCHW).
    assert rows[(0, 0, 0, 1, 0, 0)] == (0, 3, 3)
    # Grad-weight on cuDNN: x stays NCHW for it; the forward's copy is not kept.
    assert rows[(0, 0, 2, 0, 0, 0)] == (0, 2, 2)
    # Channels_last activations throughout: no copy at all.
    assert rows[(0, 0, 0, 0, 1, 1)] == (0, 0, 0)
