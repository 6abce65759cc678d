"""Issue 17 budget scan: how many steps does each method need, judged on validation data only?

Trains the study's task (its split, missingness draw and seed) of run RUN for each method at
each completeness for up to MAX steps and scores the model every EVERY steps on a *validation*
cohort that is neither the training cohort nor the 600-case test set (`hamfast synth syn_val
--cases 400 --seed 2`, the same generator). Two test conditions are scored, as the study's
experiments score them: complete inputs (Experiment A) and the mean balanced accuracy over
Experiment B's seven subsets. HAM is recalibrated before each score, as at the end of training.
Run with the study's code (PYTHONPATH=/work/study, commit 863ed1e) so data and training are the
study's.

usage: python scan.py OUT.json RUN PAIR [PAIR ...]
  PAIR: METHOD@COMPLETENESS, Experiment A's task (its training misses exactly one modality per
  incomplete sample), or METHOD@b, Experiment B's task at 25 % (1 to 3 missing), scored on B's
  condition only.
"""
import json
import os
import sys
import time

import numpy as np
import torch

from hamfast.experiments.config import ExperimentSettings
from hamfast.experiments.study import load_cohort
from hamfast.experiments.tasks import Samples, Task, task_inputs, subset_mask
from hamfast.metrics import classification_metrics
from hamfast.training import predict_proba, train

MAX, EVERY = 1200, 150
STUDY = "/work/main/results/issue17"
VALIDATION = "/work/data/syn_val"
torch.set_num_threads(1)
out_path, run, pairs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]


def settings_of(experiment):
    record = json.load(open(f"{STUDY}/{experiment}/experiment.json"))
    return ExperimentSettings.from_dict({k: tuple(v) if isinstance(v, list) else v for k, v in record["settings"].items()})


settings = settings_of("experiment_a")
b_settings = settings_of("experiment_b")
cache = "/root/.cache/hamfast/cohorts"
samples = Samples.from_cohort(load_cohort("/work/data/syn", cache_dir=cache, size=settings.size))
val = load_cohort(VALIDATION, cache_dir=cache, size=settings.size)
results = json.load(open(out_path))["results"] if os.path.exists(out_path) else {}
for pair in pairs:
    if pair in results:
        continue
    method, level = pair.split("@")
    task_settings, completeness = (b_settings, 0.25) if level == "b" else (settings, float(level))
    conditions = {"a": [settings.subsets[0]], "b": list(b_settings.subsets)}
    if level == "b":
        del conditions["a"]
    task = Task(run, task_settings.seed + run, completeness, method)
    inputs = task_inputs(task, task_settings, samples)
    inputs.config.iterations = MAX
    curves = {name: {} for name in conditions}

    def score(iteration, model):
        for name, subsets in conditions.items():
            accuracies = []
            for subset in subsets:
                mask = subset_mask(subset)
                cases = np.flatnonzero((val.available | ~mask).all(1))
                probs = predict_proba(model, val.images[cases], np.repeat(mask[None], cases.size, axis=0))
                accuracies.append(classification_metrics(val.labels[cases], probs.argmax(1).numpy(), num_classes=3)["balanced_accuracy"])
            curves[name][iteration] = float(np.mean(accuracies))

    start = time.time()
    train(inputs.config, inputs.images, inputs.available, inputs.labels, callback=score, eval_every=EVERY)
    results[pair] = {"curves": curves, "seconds": round(time.time() - start, 1)}
    print(run, pair, " ".join(f"{k}:{v:.3f}" for k, v in next(iter(curves.values())).items()), flush=True)
    json.dump({"run": run, "max": MAX, "every": EVERY, "validation": VALIDATION, "validation_cases": int(val.labels.size),
               "results": results}, open(out_path, "w"), indent=1)
