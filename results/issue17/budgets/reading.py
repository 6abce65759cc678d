"""Issue 17: the reading of Experiments A and B, at the common 450-step budget or at each method's budget.

usage: PYTHONPATH=. python results/issue17/budgets/reading.py [budgets.json]

Without budgets.json every task file comes from experiment_a/ and experiment_b/ (450 steps). With it,
a (method, completeness) whose budget is N != 450 takes its task files from budgets/a_c<LEVEL>_n<N>/
(Experiment A; LEVEL 100 or 025) or budgets/b_n<N>/ (Experiment B), the folders its rerun wrote.
Prints markdown: the mean balanced accuracy per method and condition, then the paired bootstrap
over runs and test cases (4000 replicates) of the pre-chosen comparisons with Holm's correction
over all rows of the experiment.
"""
import json
import os
import sys

import numpy as np

from hamfast.experiments import stats

HERE = os.path.dirname(os.path.abspath(__file__))
STUDY = os.path.dirname(HERE)
RUNS = range(10)
A_PAIRS = [("ham-mixed", "ham-paper"), ("ham-mixed", "ham-exact"), ("ham-mixed", "standard"), ("ham-exact", "standard"),
           ("ham-paper", "standard"), ("ham-mixed", "ham-per-sample"), ("ham-mixed", "ham-frozen"), ("ham-mixed", "dropout"),
           ("ham-paper", "dropout"), ("ham-exact", "dropout"), ("ham-mixed", "featimpute")]
B_PAIRS = [("ham-mixed", "ham-paper"), ("ham-mixed", "dropout"), ("ham-paper", "dropout"), ("ham-exact", "dropout"),
           ("ham-mixed", "featimpute")]
budgets = json.load(open(sys.argv[1]))["budgets"] if len(sys.argv) > 1 else {}


def folder(experiment, method, completeness):
    budget = budgets.get(experiment, {}).get(f"{method}@{completeness:g}", 450)
    if budget == 450:
        return f"{STUDY}/experiment_{experiment}", budget
    level = "100" if completeness == 1 else f"{round(100 * completeness):03d}"
    return (f"{HERE}/a_c{level}_n{budget}" if experiment == "a" else f"{HERE}/b_n{budget}"), budget


def load(experiment):
    settings = json.load(open(f"{STUDY}/experiment_{experiment}/experiment.json"))["settings"]
    results, steps = [], {}
    for completeness in settings["completeness"]:
        for method in settings["methods"]:
            path, budget = folder(experiment, method, completeness)
            steps[(method, completeness)] = budget
            for run in RUNS:
                task = json.load(open(f"{path}/tasks/run{run:03d}-c{round(100 * completeness):03d}-{method}.json"))
                assert task["iterations"] == budget, (path, run, method, task["iterations"])
                results.append(task)
    return settings, results, steps


def reading(experiment, pairs):
    settings, results, steps = load(experiment)
    conditions = [e["condition"] for e in results[0]["evaluations"]] if experiment == "b" else \
        [f"{c:.0%}" for c in settings["completeness"]]
    methods = settings["methods"]
    print(f"\n### Experiment {experiment.upper()}: mean balanced accuracy over {len(RUNS)} runs, 600 test cases\n")
    print("| | " + " | ".join(f"{m} ({', '.join(str(steps[(m, c)]) for c in settings['completeness'])} steps)" for m in methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    for condition in conditions:
        cells = []
        for m in methods:
            values = [e["metrics"]["balanced_accuracy"] for r in results if r["method"] == m
                      for e in r["evaluations"] if e["condition"] == condition]
            cells.append(f"{np.mean(values):.3f}" if values else "")
        print(f"| {condition} | " + " | ".join(cells) + " |")
    rows, draws = [], stats.BootstrapDraws(4000, seed=0)
    for condition in conditions:
        for a, b in pairs:
            rows.append((condition, a, b, stats.paired_bootstrap(results, a, b, condition, num_classes=3, draws=draws)))
    print(f"\nPaired bootstrap (runs x cases), Holm over these {len(rows)} rows:\n")
    print("| condition | methods | difference [95 % CI] | p | Holm p |")
    print("|---|---|---|---|---|")
    for (condition, a, b, d), h in zip(rows, stats.holm([d.p for *_, d in rows])):
        print(f"| {condition} | {a} - {b} | {d.difference:+.3f} [{d.low:+.3f}, {d.high:+.3f}] | {d.p:.3f} | {h:.3f} |")


reading("a", A_PAIRS)
reading("b", B_PAIRS)
