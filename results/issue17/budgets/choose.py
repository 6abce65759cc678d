"""Issue 17: each method's step budget from the validation scan (scan.py), by a rule fixed in advance.

For each method and completeness of Experiment A (scan pairs METHOD@LEVEL, scored on complete inputs)
and each method of Experiment B (scan pairs METHOD@b: B's own training at 25 %, which misses 1 to 3
modalities where A's misses one, scored by the mean over B's subsets):
  s(n) = mean over the scanned runs of the validation balanced accuracy after n steps,
  S(n) = mean of s over n - 150, n, n + 150 where scanned (one model moves +-0.03-0.05 between
         neighbouring checkpoints, so single checkpoints decide little),
  n*   = the n with the largest S (the smallest on ties),
  budget = 450, the study's common budget, when S(450) >= S(n*) - TOLERANCE, else n*.

A pair scanned in fewer runs than the others is reported as pending and gets no budget.

usage: python choose.py SCAN.json [SCAN.json ...] > budgets.json   (a table goes to stderr)
"""
import json
import sys
from collections import defaultdict

import numpy as np

TOLERANCE, COMMON = 0.02, 450
curves = defaultdict(lambda: defaultdict(list))  # (pair, condition) -> step -> [accuracy per run]
for path in sys.argv[1:]:
    for pair, result in json.load(open(path))["results"].items():
        for condition, curve in result["curves"].items():
            for step, accuracy in curve.items():
                curves[(pair, condition)][int(step)].append(accuracy)
needed = max(len(runs) for by_step in curves.values() for runs in by_step.values())
budgets = {}
print("| method | completeness | condition | runs | S(450) | n* | S(n*) | budget |", file=sys.stderr)
print("|---|---|---|---|---|---|---|---|", file=sys.stderr)
for (pair, condition), by_step in sorted(curves.items()):
    method, level = pair.split("@")
    if (level == "b") != (condition == "b"):
        continue  # A's tasks are also scored on B's subsets; that reading is not B's training
    completeness = "0.25" if level == "b" else level
    steps = sorted(by_step)
    runs = min(len(v) for v in by_step.values())
    if runs < needed:
        print(f"| {method} | {float(completeness):.0%} | {condition} | {runs} | pending: scanned in {runs} of {needed} runs |",
              file=sys.stderr)
        continue
    s = np.array([np.mean(by_step[n][:runs]) for n in steps])
    smooth = np.array([s[max(i - 1, 0):i + 2].mean() for i in range(len(steps))])
    best = int(np.argmax(smooth))
    common = smooth[steps.index(COMMON)]
    budget = COMMON if common >= smooth[best] - TOLERANCE else steps[best]
    budgets.setdefault(condition, {})[f"{method}@{float(completeness):g}"] = budget
    print(f"| {method} | {float(completeness):.0%} | {condition} | {runs} | {common:.3f} | {steps[best]} | {smooth[best]:.3f} | "
          f"{'**' + str(budget) + '**' if budget != COMMON else budget} |", file=sys.stderr)
json.dump({"tolerance": TOLERANCE, "common": COMMON, "budgets": budgets}, sys.stdout, indent=1)
print()
