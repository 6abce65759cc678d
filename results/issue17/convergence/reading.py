"""Issue 17: the reading of the finished complete runs of results/issue17/experiment_a."""
import glob, json, sys
from collections import defaultdict
import numpy as np
from hamfast.experiments.config import ExperimentSettings
from hamfast.experiments import stats

root = sys.argv[1]
record = json.load(open(f"{root}/experiment.json"))
settings = ExperimentSettings.from_dict({k: tuple(v) if isinstance(v, list) else v for k, v in record["settings"].items()})
results = [json.load(open(p)) for p in sorted(glob.glob(f"{root}/tasks/*.json"))]
per_run = defaultdict(set)
for r in results:
    per_run[r["run"]].add((r["method"], r["completeness"]))
need = len(settings.methods) * len(settings.completeness)
runs = sorted(run for run, done in per_run.items() if len(done) == need)
results = [r for r in results if r["run"] in runs]
print(f"complete runs: {runs}")
cond = {1.0: "100%", 0.25: "25%"}
means = defaultdict(list)
for r in results:
    means[(r["method"], r["completeness"])].append(r["evaluations"][0]["metrics"]["balanced_accuracy"])
print("| | " + " | ".join(settings.methods) + " |")
for c in settings.completeness:
    print(f"| {cond[c]} | " + " | ".join(f"{np.mean(means[(m, c)]):.3f}" for m in settings.methods) + " |")
pairs = [("ham-mixed", "ham-paper"), ("ham-mixed", "ham-exact"), ("ham-mixed", "standard"), ("ham-exact", "standard"),
         ("ham-paper", "standard"), ("ham-mixed", "ham-per-sample"), ("ham-mixed", "ham-frozen"), ("ham-mixed", "dropout"),
         ("ham-paper", "dropout"), ("ham-exact", "dropout"), ("ham-mixed", "featimpute")]
rows = []
draws = stats.BootstrapDraws(4000, seed=0)
for c in settings.completeness:
    for a, b in pairs:
        d = stats.paired_bootstrap(results, a, b, cond[c], num_classes=3, draws=draws)
        rows.append((cond[c], a, b, d))
holm = stats.holm([d.p for *_, d in rows])
for (cname, a, b, d), h in zip(rows, holm):
    print(f"- {cname} {a} - {b}: {d.difference:+.3f} [{d.low:+.3f}, {d.high:+.3f}] p {d.p:.3f} Holm {h:.3f} ({d.runs} runs, {d.cases} cases)")
