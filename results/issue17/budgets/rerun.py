"""Issue 17: train again, for all 10 runs, every (method, completeness) whose budget is not 450.

usage: PYTHONPATH=<the study's code, commit 863ed1e> python rerun.py budgets.json DATA TEST_DATA OUT [--dry-run]

One `hamfast experiment` per folder, named as reading.py reads them: OUT/a_c<LEVEL>_n<N>/ for
Experiment A (the methods of that completeness and budget), OUT/b_n<N>/ for Experiment B. The
study's other options are unchanged. Rerunning resumes (finished tasks are skipped).
"""
import json
import subprocess
import sys
from collections import defaultdict

budgets_path, data, test_data, out = sys.argv[1:5]
dry = "--dry-run" in sys.argv
budgets = json.load(open(budgets_path))["budgets"]
folders = defaultdict(list)
for experiment, chosen in sorted(budgets.items()):
    for pair, budget in sorted(chosen.items()):
        if budget == 450:
            continue
        method, completeness = pair.split("@")
        level = "100" if float(completeness) == 1 else f"{round(100 * float(completeness)):03d}"
        name = f"a_c{level}_n{budget}" if experiment == "a" else f"b_n{budget}"
        folders[(experiment, name, completeness, budget)].append(method)
for (experiment, name, completeness, budget), methods in sorted(folders.items(), key=lambda kv: -kv[0][3]):
    command = [sys.executable, "-m", "hamfast", "experiment", experiment, "--data", data, "--test-data", test_data,
               "--out", f"{out}/{name}", "--completeness", completeness, "--methods", *methods, "--preset", "quick",
               "--split", "fixed", "--iterations", str(budget), "--no-augment", "--runs", "10", "--jobs", "2",
               "--device", "cpu", "-q"]
    print(" ".join(command[1:]), flush=True)
    if not dry:
        subprocess.run(command, check=True)
