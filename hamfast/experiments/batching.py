"""Whole studies fast: tasks trained batched, shards of a study, and a cost estimate.

* :func:`run_batched`: the pending tasks of one method are taken ``K`` models at a time and
  trained as one stacked model (:func:`hamfast.training.batched.train_batched`): under
  ``stop="cv"`` first the cross-validation folds of ``K // folds`` tasks together, then those
  tasks' final trainings together (each to its own chosen length). Every task's result is the
  same, up to float rounding, as :func:`~hamfast.experiments.runner.run_task`'s and is written to
  ``OUT/tasks/`` as soon as its model is done, so resuming works as before. One progress bar
  counts the training steps of the whole study, with its ETA.
* :func:`shard_tasks`: the i-th of N disjoint, contiguous parts of a study's task list.
* :func:`default_batch_models`: K from the device (free GPU memory; a fixed value on the CPU).
* :func:`estimate_study`: times a few steps per method, one model and K stacked, and extrapolates
  the wall time of the whole study.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Callable, Optional, Sequence

from hamfast.experiments.config import ExperimentSettings
from hamfast.experiments.runner import TASKS_DIR, Samples, Task, run_task, task_inputs, task_result
from hamfast.files import write_json_atomic

__all__ = [
    "CPU_BATCH_MODELS",
    "parse_shard",
    "shard_tasks",
    "default_batch_models",
    "task_steps",
    "run_batched",
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


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``; a clear error otherwise."""
    parts = str(text).split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--shard must look like i/N (e.g. 0/4), got {text!r}")
    index, count = int(parts[0]), int(parts[1])
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need N >= 1 and 0 <= i < N (shards are numbered from 0)")
    return index, count


def shard_tasks(tasks: Sequence[Task], index: int, count: int) -> list[Task]:
    """The ``index``-th of ``count`` disjoint parts of ``tasks``: a contiguous block in plan order.

    Plan order is run by run, so each shard gets whole runs (every method and completeness of
    them): the shards cost about the same, and a shard's runs of a method batch together. The
    partition depends only on the task list, so every shard of a study computes the same one.
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index must lie in [0, {count}), got {index}")
    tasks = list(tasks)
    start, stop = index * len(tasks) // count, (index + 1) * len(tasks) // count
    return tasks[start:stop]


def task_steps(settings: ExperimentSettings) -> int:
    """Training steps of one task at most: the folds' and the final training's."""
    folds = settings.cv_folds if settings.stop == "cv" else 0
    return (folds + 1) * settings.iterations


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


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_batched(
    pending: Sequence[Task],
    settings: ExperimentSettings,
    samples: Samples,
    out,
    *,
    batch_models: int,
    device: str = "cpu",
    progress: bool = True,
    finish: Optional[Callable[[Task, dict], None]] = None,
) -> None:
    """Run ``pending`` tasks with up to ``batch_models`` models per stacked training.

    Args:
        pending: the tasks to run.
        settings: the experiment.
        samples: the cohort.
        out: the experiment folder; each task's record goes to ``OUT/tasks/<name>.json``.
        batch_models: K >= 1, the models trained at once.
        device: torch device.
        progress: one tqdm bar over the training steps of all tasks, with ETA.
        finish: called with each task and its record after it is written (logging).

    A method whose configs cannot be batched (see
    :func:`hamfast.training.batched.batching_problem`) runs task by task, with a log line saying why.
    """
    from pathlib import Path

    out = Path(out)
    if batch_models < 1:
        raise ValueError(f"--batch-models must be >= 1, got {batch_models}")
    total = len(pending) * task_steps(settings)
    bar = None
    if progress and pending:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"experiment {settings.experiment} ({len(pending)} tasks)", unit="step",
                   dynamic_ncols=True, smoothing=0.05)
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():
            _run_all(pending, settings, samples, out, batch_models, device, bar, finish)
    finally:
        if bar is not None:
            bar.close()


def _run_all(pending, settings, samples, out, batch_models, device, bar, finish) -> None:
    from hamfast.training.batched import batching_problem
    from hamfast.training.divergence import DivergenceError

    def write(task: Task, record: dict) -> None:
        write_json_atomic(out / TASKS_DIR / f"{task.name}.json", record)
        if finish is not None:
            finish(task, record)
        if bar is not None:
            bar.set_postfix_str(f"last: {task.name}", refresh=False)

    by_method: dict[str, list[Task]] = {}
    for task in pending:  # plan order within each method
        by_method.setdefault(task.method, []).append(task)
    per_chunk = max(1, batch_models // settings.cv_folds) if settings.stop == "cv" else batch_models
    for method, tasks in by_method.items():
        problem = batching_problem([task_inputs(t, settings, samples, device).config for t in tasks[:2]])
        if problem is None and per_chunk == 1 and settings.stop != "cv":
            problem = "one model per batch"
        if problem is not None:
            log.info("%s: training task by task (%s)", method, problem)
            for task in tasks:
                record = run_task(task, settings, samples, device)
                write(task, record)
                if bar is not None:
                    bar.update(task_steps(settings))
            continue
        for chunk in _chunks(tasks, per_chunk):
            try:
                _run_chunk(chunk, settings, samples, device, bar, write)
            except DivergenceError as exc:
                # One stacked model diverged: the chunk's unwritten tasks run one by one, so the
                # diverged one is recorded as failed and the others as usual.
                log.warning("%s; training the chunk's unfinished tasks one by one", exc)
                for task in chunk:
                    if not (out / TASKS_DIR / f"{task.name}.json").exists():
                        write(task, run_task(task, settings, samples, device))


def _run_chunk(chunk: list[Task], settings, samples, device, bar, write) -> None:
    """Train and evaluate the tasks of one chunk: cross-validation folds batched, then the final trainings batched."""
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
        write(chunk[r], task_result(chunk[r], settings, samples, inputs[r], result, cvs[r], seconds, device))

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
    :func:`~hamfast.training.batched.train_batched`. ``timer`` is read once before the first step
    and once after each step (the device synchronised first); a step's time is the difference of
    two readings, the figure the median of the ``steps`` timed steps after the ``warmup`` ones: one
    slow step (another process taking the CPU) does not move it, and it is never zero or negative.
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
