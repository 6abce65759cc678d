"""Whole studies fast: many models trained at once, and a cost estimate.

* :func:`plan_batches`: the pending tasks of each method taken ``K`` models at a time (a method
  whose configs cannot be stacked: task by task, with a log line saying why);
  :func:`run_stacked` trains one such batch as one stacked model
  (:func:`hamfast.training.batched.train_batched`): under ``stop="cv"`` first the
  cross-validation folds of ``K // folds`` tasks together, then those tasks' final trainings
  together (each to its own chosen length). Every task's result is the same, up to float
  rounding, as :func:`~hamfast.experiments.tasks.run_task`'s. Whether a study is batched at all is
  decided by :func:`hamfast.experiments.runner.run_experiment`, which writes each record.
* :func:`default_batch_models`: K from the device (free GPU memory; a fixed value on the CPU).
* :func:`estimate_study`: times a few steps per method, one model and K stacked, and extrapolates
  the wall time of the whole study.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Callable, NamedTuple, Sequence

from hamfast.experiments.config import ExperimentSettings
from hamfast.experiments.tasks import Samples, Task, task_inputs, task_result, task_steps

__all__ = [
    "CPU_BATCH_MODELS",
    "Batch",
    "plan_batches",
    "run_stacked",
    "default_batch_models",
    "estimate_study",
    "median_step_seconds",
    "format_estimate",
    "model_bytes",
]

log = logging.getLogger(__name__)

# Models trained at once on a CPU: 1 (task by task). On a 2-core VM with the quick preset, 4 stacked
# CBRTiny trained at half the samples/s of one alone (benchmarks/batched_training.py, docs/experiments.md).
CPU_BATCH_MODELS = 1
MAX_BATCH_MODELS = 64


class Batch(NamedTuple):
    """Tasks of one method trained together (``stacked``), or one by one (``stacked`` False)."""

    tasks: list[Task]
    stacked: bool


def plan_batches(pending: Sequence[Task], settings: ExperimentSettings, samples: Samples, *, batch_models: int,
                 device: str = "cpu") -> list[Batch]:
    """``pending`` cut into batches of up to ``batch_models`` models per stacked training.

    Method by method (plan order within each); under ``stop="cv"`` a batch holds ``K // folds``
    tasks, as each trains its folds together. A method whose configs cannot be stacked (see
    :func:`hamfast.training.batched.batching_problem`) becomes one unstacked batch, with a log line
    saying why.
    """
    from hamfast.training.batched import batching_problem

    by_method: dict[str, list[Task]] = {}
    for task in pending:  # plan order within each method
        by_method.setdefault(task.method, []).append(task)
    per_chunk = max(1, batch_models // settings.cv_folds) if settings.stop == "cv" else batch_models
    batches = []
    for method, tasks in by_method.items():
        problem = batching_problem([task_inputs(t, settings, samples, device).config for t in tasks[:2]])
        if problem is None and per_chunk == 1 and settings.stop != "cv":
            problem = "one model per batch"
        if problem is not None:
            log.info("%s: training task by task (%s)", method, problem)
            batches.append(Batch(tasks, stacked=False))
            continue
        batches += [Batch(tasks[i : i + per_chunk], stacked=True) for i in range(0, len(tasks), per_chunk)]
    return batches


def model_bytes(settings: ExperimentSettings, method: str, image_size: int) -> int:
    """A rough upper estimate of the memory one model needs while training (bytes, float32):
    activations kept for backward for one batch, plus parameters, gradients and optimiser state."""
    from hamfast.models import build_model
    from hamfast.models.inputs import POOL_KERNEL, POOL_STRIDE

    size, activations = image_size, 0
    for width in settings.widths:
        size = size - settings.kernel_size + 1
        activations += 4 * width * size * size  # conv out, norm out, relu out, and their grads in flight
        size = (size - POOL_KERNEL) // POOL_STRIDE + 1
        activations += width * size * size
    per_sample = activations * (2 * 4 if method == "featimpute" else 1)  # 2 trunks per modality, 1 channel each
    params = sum(p.numel() for p in build_model(method, widths=settings.widths, kernel_size=settings.kernel_size,
                                                   hidden=settings.hidden).parameters())
    return 4 * (settings.batch_size * per_sample + 4 * params)


def default_batch_models(settings: ExperimentSettings, image_size: int, device: str) -> int:
    """K, the models trained at once: on CUDA as many as half the free memory holds (the costliest
    method decides), capped at 64; on the CPU :data:`CPU_BATCH_MODELS` (1: task by task)."""
    import torch

    if not str(device).startswith("cuda"):
        return CPU_BATCH_MODELS
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    need = max(model_bytes(settings, m, image_size) for m in settings.methods)
    return int(max(1, min(MAX_BATCH_MODELS, (free // 2) // max(need, 1))))


def run_stacked(chunk: Sequence[Task], settings: ExperimentSettings, samples: Samples, *, device: str = "cpu", bar=None,
                finish: Callable[[Task, dict], None]) -> None:
    """Train and evaluate the tasks of one batch: cross-validation folds stacked, then the final trainings stacked.

    Args:
        chunk: the batch's tasks (one method).
        settings, samples: the study and its cohort.
        device: torch device.
        bar: a tqdm bar over training steps (or None); under ``stop="cv"`` its total drops by the
            steps the chosen lengths leave out.
        finish: called with each task and its record as soon as its model is done.
    """
    from hamfast.experiments.stopping import cv_folds, cv_result, fold_scorer
    from hamfast.training.batched import train_batched

    start = time.perf_counter()
    on_step = bar.update if bar is not None else None
    inputs = [task_inputs(t, settings, samples, device) for t in chunk]
    cvs = [None] * len(chunk)
    if settings.stop == "cv":
        configs, data, callbacks, scores = [], [], [], []
        for task_data in inputs:
            task_scores = []
            for fold in cv_folds(task_data.config, task_data.images, task_data.available, task_data.labels, settings.cv_folds):
                fold_scores = {}
                configs.append(task_data.config)
                data.append(fold["fit"])
                callbacks.append(fold_scorer(fold_scores, fold, task_data.config))
                task_scores.append(fold_scores)
            scores.append(task_scores)
        log.debug("cross-validating %s (%d models at once)", ", ".join(t.name for t in chunk), len(configs))
        train_batched(configs, data, callbacks=callbacks, eval_every=min(settings.cv_every, settings.iterations),
                      on_step=on_step)
        cvs = [cv_result(task_scores) for task_scores in scores]
        if bar is not None:  # the final trainings run to the chosen count, not the maximum
            bar.total -= sum(settings.iterations - cv.iterations for cv in cvs)
            bar.refresh()
    configs = []
    for task_data, cv in zip(inputs, cvs):
        config = copy.copy(task_data.config)
        if cv is not None:
            config.iterations = cv.iterations
        configs.append(config)
    cv_seconds = time.perf_counter() - start

    def done(r: int, result) -> None:
        # Wall time of a task: its share of the batched cross-validation plus the final training so far.
        seconds = cv_seconds / len(chunk) + (time.perf_counter() - start - cv_seconds) / len(chunk)
        finish(chunk[r], task_result(chunk[r], settings, samples, inputs[r], result, cvs[r], seconds, device))

    log.debug("training %s (%d models at once)", ", ".join(t.name for t in chunk), len(configs))
    train_batched(configs, [(d.images, d.available, d.labels) for d in inputs], on_step=on_step, on_done=done)


def estimate_study(
    settings: ExperimentSettings,
    samples: Samples,
    tasks: Sequence[Task],
    *,
    batch_models: int,
    device: str = "cpu",
    steps: int = 7,
    warmup: int = 2,
    timer: Callable[[], float] = time.perf_counter,
) -> dict:
    """Time a few training steps per method, one model alone and ``batch_models`` stacked, and
    extrapolate the wall time of ``tasks``.

    Per method, the first task's data is trained for ``warmup + steps`` steps: once with
    :func:`~hamfast.training.train` and once with ``batch_models`` copies (different seeds) in
    :func:`~hamfast.training.batched.train_batched`, each twice: the first run fills the op's
    autotune cache (its first call per shape signature times candidate paths, a cost a study pays
    once), the second is timed. ``timer`` is read once before the first step and once after each
    step (the device synchronised first); a step's time is the difference of two readings, the
    figure the median of the ``steps`` timed steps after the ``warmup`` ones: one slow step
    (another process taking the CPU) does not move it, and it is never zero or negative.
    The study's steps per method (tasks x (folds + 1) x iterations under ``stop="cv"``, the
    maximum) then give the totals. Evaluation and HAM's batch-norm recalibration are not included.

    Returns:
        ``{"methods": {method: {"tasks", "steps", "seconds_per_step", "seconds_per_model_step_batched"}},
        "sequential_seconds", "batched_seconds", "batch_models", "device"}``.
    """
    from hamfast.training import train
    from hamfast.training.batched import batching_problem, train_batched

    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got {steps} and {warmup}")
    if not tasks:
        return {"methods": {}, "sequential_seconds": 0.0, "batched_seconds": 0.0, "batch_models": batch_models, "device": device}
    methods: dict = {}
    for method in settings.methods:
        mine = [t for t in tasks if t.method == method]
        if not mine:
            continue
        inputs = task_inputs(mine[0], settings, samples, device)
        data = (inputs.images, inputs.available, inputs.labels)

        def configs(count: int):
            out = []
            for r in range(count):
                config = copy.copy(inputs.config)
                config.iterations, config.seed, config.recalibrate = warmup + steps, config.seed + r, False
                out.append(config)
            return out

        def step_seconds(run: Callable[[Callable[..., None]], object]) -> float:
            # Timed on a second run: the first call of the op per shape signature measures its
            # candidate paths (hamfast.ops autotune), at steps a long study pays once per process,
            # and HAM's changing pattern groups give new signatures during its first steps.
            for _ in range(2):
                stamps = [timer()]

                def stamp(*_) -> None:
                    _sync(device)
                    stamps.append(timer())

                run(stamp)
            return median_step_seconds(stamps, warmup)

        one = step_seconds(lambda stamp: train(configs(1)[0], *data, callback=lambda *_: stamp(), eval_every=1))
        stacked = configs(batch_models)
        if batch_models > 1 and batching_problem(stacked) is None:
            many = step_seconds(lambda stamp: train_batched(stacked, [data] * batch_models, on_step=stamp))
        else:
            many = one * batch_models
        total = len(mine) * task_steps(settings)
        methods[method] = {
            "tasks": len(mine),
            "steps": total,
            "seconds_per_step": one,
            "seconds_per_model_step_batched": many / batch_models,
        }
    return {
        "methods": methods,
        "sequential_seconds": sum(m["steps"] * m["seconds_per_step"] for m in methods.values()),
        "batched_seconds": sum(m["steps"] * m["seconds_per_model_step_batched"] for m in methods.values()),
        "batch_models": batch_models,
        "device": device,
    }


def median_step_seconds(stamps: Sequence[float], warmup: int) -> float:
    """The median time of one step from timer readings taken before the first step and after each.

    Args:
        stamps: ``1 + warmup + steps`` readings of a monotonic clock, seconds.
        warmup: leading steps left out (set-up, first-call costs).

    Raises:
        ValueError: fewer than one timed step, or readings that do not increase.
    """
    import statistics

    durations = [b - a for a, b in zip(stamps[:-1], stamps[1:])][warmup:]
    if not durations or min(durations) <= 0:
        raise ValueError(f"cannot time the training steps: readings {list(stamps)} after {warmup} warm-up step(s)")
    return statistics.median(durations)


def format_estimate(estimate: dict, settings: ExperimentSettings) -> str:
    """The estimate as a few readable lines."""
    lines = [f"cost estimate of experiment {settings.experiment} ({settings.preset} preset, stop {settings.stop}, "
             f"{settings.iterations} iterations, device {estimate['device']}):"]
    for method, m in estimate["methods"].items():
        lines.append(
            f"  {method:<10} {m['tasks']:>4} tasks, {m['steps']:>9} steps: {1000 * m['seconds_per_step']:8.1f} ms/step alone, "
            f"{1000 * m['seconds_per_model_step_batched']:8.1f} ms/model-step with {estimate['batch_models']} stacked"
        )
    lines.append(f"  task by task (--batch-models 1): {_duration(estimate['sequential_seconds'])}")
    lines.append(f"  batched (--batch-models {estimate['batch_models']}): {_duration(estimate['batched_seconds'])}")
    if estimate["sequential_seconds"] > 0 and estimate["batched_seconds"] > 0:
        ratio = estimate["sequential_seconds"] / estimate["batched_seconds"]
        verdict = "faster" if ratio > 1 else "slower"
        lines.append(f"  batched is {verdict} here: {ratio:.2f}x the speed of task by task (medians of "
                     "the timed steps)")
    lines.append("  (training steps only; evaluation and HAM's recalibration add a little; under stop cv the final "
                 "trainings are counted at the maximum length)")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()
