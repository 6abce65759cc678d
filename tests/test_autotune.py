"""The run-time autotuner (csrc/autotune.h): its selection logic with an injected timer (compiled
on the host, no clock read, no timed asserts), the CUDA dispatcher's use of it (candidates, kept
winners, fixed modes; compiled on the host against tests/cuda_emulation), and the CPU op's use of it
(explain reports the kept choice, the profiler label names the path that runs, HAMFAST_AUTOTUNE=off
keeps the cost rule, autotune_report lists what was measured).
"""
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from hamfast import _extension
from hamfast.ops import autotune_report, explain, grouped_conv2d

ROOT = Path(__file__).resolve().parents[1]
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
needs_extension = pytest.mark.skipif(not _extension.available(), reason="hamfast._C is not built")
PASSES = ("forward", "grad-input", "grad-weight")


@needs_gxx
def test_selection_logic_with_an_injected_timer(tmp_path):
    binary = tmp_path / "check_autotune"
    subprocess.run(["g++", "-std=c++17", "-O1", f"-I{ROOT / 'csrc'}", str(ROOT / "tests" / "autotune" / "check_autotune.cpp"),
                    str(ROOT / "csrc" / "autotune.cpp"), "-o", str(binary)], check=True, capture_output=True, text=True)
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok   ") == 16 and "FAIL" not in result.stdout


@needs_gxx
def test_cuda_dispatch_autotune_with_an_injected_timer(tmp_path):
    """csrc/cuda/dispatch.cpp's candidates, decide and tune: the fixed choice first, split-K for
    grad-weight, cuDNN in every list, the winner kept per signature (device, precision, pass,
    B-bucket, G, shapes) and reported, failures and ties, HAMFAST_AUTOTUNE=off, a fixed context and
    the override."""
    binary = tmp_path / "check_cuda_autotune"
    subprocess.run(["g++", "-std=c++20", "-O1", "-DHAMFAST_CUDA_EMULATION", f"-I{ROOT / 'tests' / 'cuda_emulation'}",
                    f"-I{ROOT / 'csrc' / 'cuda'}", f"-I{ROOT / 'csrc'}",
                    str(ROOT / "tests" / "autotune" / "check_cuda_autotune.cpp"), str(ROOT / "csrc" / "cuda" / "dispatch.cpp"),
                    str(ROOT / "csrc" / "autotune.cpp"), "-o", str(binary)], check=True, capture_output=True, text=True)
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok   ") == 17 and "FAIL" not in result.stdout


def _case():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 11, 10, generator=g, requires_grad=True)
    weight = torch.randn(4, 5, 3, 3, 3, generator=g, requires_grad=True)
    bias = torch.randn(4, 5, generator=g, requires_grad=True)
    return x, weight, bias, torch.tensor([2, 0, 2, 1, 0, 3])


def _pass_lines(text):
    return {line.split(": ")[0]: line.split(": ", 1)[1] for line in text.splitlines() if line.split(": ")[0] in PASSES}


def _profiled_paths(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name.removeprefix("hamfast::cpu_") for e in prof.events() if e.name.startswith("hamfast::cpu_")}


@needs_extension
def test_first_call_measures_then_explain_and_the_run_name_the_kept_path(monkeypatch):
    monkeypatch.delenv("HAMFAST_CPU_PATH", raising=False)
    monkeypatch.delenv("HAMFAST_AUTOTUNE", raising=False)
    torch.ops.hamfast.autotune_clear()
    x, weight, bias, group = _case()
    before = _pass_lines(explain(x, weight, group))
    assert all("not measured yet" in line for line in before.values()), before
    grouped_conv2d(x, weight, bias, group).sum().backward()  # measures all three passes
    after = _pass_lines(explain(x, weight, group))
    for pass_, line in after.items():
        assert "autotuned for this signature" in line and "loop_parallel" in line and "fold" in line, line
    kept = {f"{p.replace('-', '_')}_{line.split()[0]}" for p, line in after.items()}
    report = autotune_report()
    cpu_keys = [k for k in report if k.startswith("cpu ") and " G4 3->5 k3x3 s1 p0 11x10 " in k]
    assert len(cpu_keys) == 3, report
    for key in cpu_keys:
        entry = report[key]
        assert set(entry["median_ms"]) == {"loop", "loop_parallel", "fold"}
        assert entry["winner"] == min(entry["median_ms"], key=entry["median_ms"].get)
    assert _profiled_paths(lambda: grouped_conv2d(x, weight, bias, group).sum().backward()) == kept
    torch.ops.hamfast.autotune_clear()
    assert all("not measured yet" in line for line in _pass_lines(explain(x, weight, group)).values())
    assert autotune_report() == {}


@needs_extension
def test_autotune_off_keeps_the_cost_rule_and_a_bad_value_is_refused(monkeypatch):
    monkeypatch.delenv("HAMFAST_CPU_PATH", raising=False)
    torch.ops.hamfast.autotune_clear()
    monkeypatch.setenv("HAMFAST_AUTOTUNE", "off")
    x, weight, bias, group = _case()
    text = explain(x, weight, group)
    assert "not measured" not in text and "autotuned" not in text
    grouped_conv2d(x, weight, bias, group).sum().backward()
    assert "autotuned" not in explain(x, weight, group)  # nothing was measured
    monkeypatch.setenv("HAMFAST_AUTOTUNE", "sometimes")
    with pytest.raises((RuntimeError, ValueError), match="HAMFAST_AUTOTUNE must be on or off"):
        grouped_conv2d(x, weight, bias, group)
