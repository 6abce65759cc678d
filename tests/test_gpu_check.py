"""scripts/gpu_check.sh without a GPU: every step skipped with a line and a summary that says so;
with GPU_CHECK_DRY_RUN=1 its steps run on the CPU (tiny shapes) and the summary, targets, autotune
report and sanitizer-driver verdicts are wired up. Also the helper scripts' CPU paths. Measures
nothing: the timings come from a GPU run."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hamfast import _extension

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
STEPS = ["build", "deps", "tests", "bench", "bench_b256", "targets", "autotune", "racecheck", "synccheck"]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
needs_extension = pytest.mark.skipif(not _extension.available(), reason="hamfast._C is not built")


def run_check(out: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, **env})


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="needs shellcheck")
def test_script_is_shellcheck_clean():
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@no_gpu
def test_without_a_gpu_every_step_is_skipped_and_the_summary_says_so(tmp_path):
    result = run_check(tmp_path / "out")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert summary["gpu"] is False and summary["skipped"] is True and summary["ok"] is False
    assert list(summary["steps"]) == STEPS
    assert all(s["skipped"] and s["why"] == "no GPU" for s in summary["steps"].values())
    for name in STEPS:
        assert f"=== {name}: skipped (no GPU)" in result.stdout
    assert (tmp_path / "out" / "gpu_check.log").exists() and not (tmp_path / "out" / ".steps").exists()


@no_gpu
@needs_extension
def test_dry_run_wires_every_step_into_the_summary(tmp_path):
    out = tmp_path / "out"
    result = run_check(out, GPU_CHECK_DRY_RUN="1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["ok"] is True, summary["steps"]
    ran = [name for name, s in summary["steps"].items() if not s["skipped"]]
    assert ran == ["deps", "tests", "bench", "bench_b256", "targets", "autotune", "racecheck"]
    assert summary["tests"] == {"tests": 1, "failures": 0, "errors": 0, "skipped": 0}
    targets = json.loads((out / "targets.json").read_text())
    assert targets == summary["targets"] and {t["status"] for t in targets} <= {"pass", "FAIL", "missing"}
    assert any("B=256" in t["target"] for t in targets)
    assert "Targets" in (out / "table.md").read_text()
    assert summary["autotune"]["passes"] == 6 and summary["autotune"]["errors"] == 0
    assert summary["racecheck"]["driver"] == "ok"
    for name in ("bench_quick.json", "bench_b256.json", "autotune.json", "racecheck.txt", "tests.xml"):
        assert (out / name).exists(), name


def test_sanitizer_verdicts_are_read_from_the_logs(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_check_summary as summary
    finally:
        sys.path.pop(0)
    clean = tmp_path / "clean.txt"
    clean.write_text("ok   tf32 ...\nsanitizer shapes ok: 44 configurations, 0 wrong\n"
                     "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n")
    assert summary.read_sanitizer(clean) == {"errors": None, "hazards": 0, "driver": "ok"}
    racy = tmp_path / "racy.txt"
    racy.write_text("========= ERROR SUMMARY: 3 errors\n")
    assert summary.read_sanitizer(racy) == {"errors": 3, "hazards": None, "driver": "unfinished"}


@needs_extension
def test_autotune_report_on_cpu_lists_every_pass_and_its_winner(tmp_path):
    out = tmp_path / "autotune.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "autotune_report.py"), "--device", "cpu", "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=300)
    data = json.loads(out.read_text())
    assert len(data["cases"]) == 2
    for case in data["cases"]:
        assert set(case["passes"]) == {"forward", "grad-input", "grad-weight"}
        for s in case["passes"].values():
            ms = {k: v for k, v in s["median_ms"].items() if v is not None}
            assert s["winner"] == min(ms, key=ms.get) and s["winner_ms"] == ms[s["winner"]]


@no_gpu
def test_helper_scripts_skip_without_a_gpu(tmp_path):
    out = tmp_path / "a.json"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "autotune_report.py"), "--out", str(out)],
                            capture_output=True, text=True, timeout=120, check=True)
    assert "skipped (no GPU" in result.stdout and "skipped" in json.loads(out.read_text())
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "sanitizer_shapes.py")], capture_output=True,
                            text=True, timeout=120, check=True)
    assert "skipped (no GPU)" in result.stdout
    listed = subprocess.run([sys.executable, str(ROOT / "scripts" / "sanitizer_shapes.py"), "--list"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    # 3 tiles x 2 splits x 2 Cin for tf32/bf16/f16, 2 splits x 2 Cin for exact float32 and float64.
    assert len(listed) == 3 * 12 + 2 * 4 and "bf16 tensor_core:128x64:3 Cin=4" in listed
