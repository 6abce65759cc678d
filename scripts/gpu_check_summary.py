"""The files scripts/gpu_check.sh writes from its steps' outputs (one place, importable for tests).

    python scripts/gpu_check_summary.py --targets OUTDIR
        bench_quick.json + bench_b256.json (those present) -> table.md (`bench --table`) and
        targets.json: [{"target", "status": pass | FAIL | missing, "measured"}].
    python scripts/gpu_check_summary.py OUTDIR STARTED LIBRARY GPU DRY
        .steps (name, exit or "skipped", seconds, why; tab-separated) and the step outputs ->
        gpu_check.json: device, versions, steps, tests, targets, sanitizer verdicts, autotune winners.
"""
from __future__ import annotations

import json
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # an in-place build, not installed

BENCH_FILES = ("bench_quick.json", "bench_b256.json")


def write_targets(out: Path) -> int:
    from hamfast.bench.report import format_report, load_result, merge_results, target_checks

    files = [out / name for name in BENCH_FILES if (out / name).exists()]
    if not files:
        (out / "targets.json").write_text("[]\n")
        print("gpu_check: no benchmark result to check")
        return 1
    data = merge_results([load_result(f) for f in files])
    (out / "table.md").write_text(format_report(data))
    checks = target_checks(data)
    (out / "targets.json").write_text(json.dumps(checks, indent=1) + "\n")
    for c in checks:
        print(f"[{c['status']}] {c['target']}: {c['measured']}")
    return 0


def read_steps(path: Path) -> dict:
    steps = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, rc, seconds, why = (line.split("\t") + [""] * 4)[:4]
            steps[name] = {"exit": None if rc == "skipped" else int(rc), "skipped": rc == "skipped",
                           "seconds": int(seconds), **({"why": why} if why else {})}
    return steps


def read_tests(path: Path):
    if not path.exists():
        return None
    try:
        suite = ET.parse(path).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    except ET.ParseError as exc:
        return {"unreadable": str(exc)}


def read_sanitizer(path: Path):
    """compute-sanitizer's verdict: errors / hazards counted, and whether the driver finished."""
    if not path.exists():
        return None
    text = path.read_text(errors="replace")
    errors = [int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) error", text)]
    hazards = [int(n) for n in re.findall(r"RACECHECK SUMMARY: (\d+) hazard", text)]
    return {"errors": sum(errors) if errors else None, "hazards": sum(hazards) if hazards else None,
            "driver": "ok" if "sanitizer shapes ok" in text else "failed" if "sanitizer shapes FAILED" in text
            else "unfinished"}


def read_autotune(path: Path):
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        return {"unreadable": str(exc)}
    if "skipped" in data:
        return {"skipped": data["skipped"]}
    passes = [p for case in data.get("cases", []) for p in case.get("passes", {}).values()]
    return {"passes": len(passes), "won_by_cudnn": sum(p["winner"].startswith("cudnn") for p in passes),
            "heuristic_kept": sum(p["winner"] == p.get("heuristic") for p in passes),
            "errors": sum("error" in case for case in data.get("cases", []))}


def write_summary(out: Path, started: int, library: str, gpu: bool, dry: bool) -> dict:
    steps = read_steps(out / ".steps")
    try:
        import torch

        device = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        versions = {"torch": torch.__version__, "cuda": torch.version.cuda}
    except Exception as exc:  # the summary is written whatever broke
        device, versions = None, {"torch": f"unimportable: {exc}"}
    targets = json.loads((out / "targets.json").read_text()) if (out / "targets.json").exists() else None
    run = {name: s for name, s in steps.items() if not s["skipped"]}
    summary = {
        "device": device, **versions, "gpu": gpu, "dry_run": dry,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": int(time.time()) - started,
        "library": library or None,
        "skipped": not run and bool(steps),
        "skip_reasons": sorted({s.get("why", "") for s in steps.values() if s["skipped"]}),
        "ok": bool(run) and all(s["exit"] == 0 for s in run.values()),
        "steps": steps, "tests": read_tests(out / "tests.xml"),
        "targets": targets,
        "targets_failed": None if targets is None else sum(t["status"] == "FAIL" for t in targets),
        "racecheck": read_sanitizer(out / "racecheck.txt"), "synccheck": read_sanitizer(out / "synccheck.txt"),
        "autotune": read_autotune(out / "autotune.json"),
    }
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--targets":
        return write_targets(Path(argv[1]))
    out, started, library, gpu, dry = argv
    write_summary(Path(out), int(started), library, gpu == "1", dry == "1")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
