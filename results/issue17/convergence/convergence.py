"""Issue 17 convergence pilot: is 450 steps enough for every method?

Trains run 0's task (the study's split, missingness draw and seed) of each method at 100 % and
25 % completeness for up to MAX steps, scoring the model every EVERY steps on the complete
600-case external test set (the study's test condition), exactly as the study's tasks score it
(HAM recalibrated before each score, as at the end of training). Run with the study's code
(PYTHONPATH=/work/study, commit 863ed1e) so the data and training are the study's.

usage: python convergence.py OUT.json METHOD [METHOD ...]
"""
import json
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
torch.set_num_threads(1)
out_path, methods = sys.argv[1], sys.argv[2:]
record = json.load(open("/work/study_out/experiment_a/experiment.json"))
settings = ExperimentSettings.from_dict({k: tuple(v) if isinstance(v, list) else v for k, v in record["settings"].items()})
cache = "/root/.cache/hamfast/cohorts"
samples = Samples.from_cohort(load_cohort("/work/data/syn", cache_dir=cache, size=settings.size))
test = load_cohort("/work/data/syn_test", cache_dir=cache, size=settings.size)
mask = subset_mask(settings.subsets[0])
cases = np.flatnonzero((test.available | ~mask).all(1))
results = {}
for method in methods:
    for completeness in (1.0, 0.25):
        task = Task(0, settings.seed, completeness, method)
        inputs = task_inputs(task, settings, samples)
        config = inputs.config
        config.iterations = MAX
        curve = {}

        def score(iteration, model):
            probs = predict_proba(model, test.images[cases], np.repeat(mask[None], cases.size, axis=0))
            curve[iteration] = classification_metrics(test.labels[cases], probs.argmax(1).numpy(), num_classes=3)["balanced_accuracy"]

        start = time.time()
        train(config, inputs.images, inputs.available, inputs.labels, callback=score, eval_every=EVERY)
        results[f"{method}@{completeness:g}"] = {"curve": curve, "seconds": round(time.time() - start, 1)}
        print(method, completeness, " ".join(f"{k}:{v:.3f}" for k, v in curve.items()), flush=True)
        json.dump({"max": MAX, "every": EVERY, "test_cases": int(cases.size), "results": results}, open(out_path, "w"), indent=1)
