"""Running an experiment: tasks, resumability and parallel jobs.

An experiment is split into *tasks*, one per run x training completeness x method: train one
model (with the stopping rule), then evaluate it on every test subset. Experiment A has a task per
run, completeness level and method, evaluated on the complete test set; Experiment B a task per run
and method at its one completeness, evaluated on each modality subset.

Each finished task is written at once, atomically, to ``OUT/tasks/<name>.json`` (metrics,
predictions, loss history, the chosen iteration count). Running the same experiment again skips
the tasks already there, so an interrupted experiment loses only the tasks in progress; asking for
more runs adds them. ``OUT/experiment.json`` holds the settings; rerunning with settings that
would change results is refused. ``jobs > 1`` runs tasks in that many worker processes (each with
``cpu_count // jobs`` torch threads; with several GPUs visible and ``device="cuda"``, worker i uses
GPU ``i mod count``). On Ctrl-C or an error the workers are terminated at once, every result that
arrived is written, and :class:`ExperimentInterrupted` says how many tasks are finished; workers
also die with their parent when it is killed (see ``_die_with_parent``). Two runs into one folder
are kept apart by :func:`hamfast.files.lock_folder`, taken by ``hamfast.experiments.study.run_study``.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from hamfast.checks import resolve_device
from hamfast.experiments.config import ExperimentSettings, completeness_label
from hamfast.files import write_json_atomic
from hamfast.patterns import NAMES

__all__ = [
    "Samples",
    "Task",
    "TaskInputs",
    "plan_tasks",
    "run_task",
    "task_inputs",
    "task_result",
    "failed_result",
    "run_experiment",
    "ExperimentInterrupted",
    "WorkerDied",
]

log = logging.getLogger(__name__)

SETTINGS_FILE = "experiment.json"
TASKS_DIR = "tasks"


@dataclass
class Samples:
    """The cohort arrays an experiment needs (picklable, sent once to each worker).

    Attributes:
        images: float32 [N, 4, H, W]; available: bool [N, 4] (what each case really has);
        labels: int64 [N]; ids: N case ids.
    """

    images: np.ndarray
    available: np.ndarray
    labels: np.ndarray
    ids: list

    @classmethod
    def from_cohort(cls, cohort) -> "Samples":
        return cls(
            np.asarray(cohort.images, dtype=np.float32),
            np.asarray(cohort.available, dtype=bool),
            np.asarray(cohort.labels, dtype=np.int64),
            [str(i) for i in cohort.ids],
        )


@dataclass(frozen=True)
class Task:
    """One model to train and evaluate.

    Attributes:
        run: 0-based run number; seed: the run's seed (``settings.seed + run``);
        completeness: the training data's completeness; method: the method.
    """

    run: int
    seed: int
    completeness: float
    method: str

    @property
    def name(self) -> str:
        """File stem, e.g. ``run003-c075-ham``."""
        return f"run{self.run:03d}-c{round(100 * self.completeness):03d}-{self.method}"


def plan_tasks(settings: ExperimentSettings) -> list[Task]:
    """Every task of the experiment, run by run (so early runs finish first)."""
    return [
        Task(run, settings.seed + run, completeness, method)
        for run in range(settings.runs)
        for completeness in settings.completeness
        for method in settings.methods
    ]


def subset_mask(subset: str) -> np.ndarray:
    """bool [4] of a canonical subset name such as ``"t1+t2"``."""
    parts = subset.split("+")
    return np.array([name in parts for name in NAMES])


def run_task(task: Task, settings: ExperimentSettings, samples: Samples, device: str = "cpu") -> dict:
    """Train and evaluate one task.

    The run's split (``stratified_split``, seed: the run seed, or ``settings.seed`` for a fixed
    split) and missingness draw (``drop_one_modality`` for A, ``drop_random_modalities`` for B,
    seed ``1000 * run seed + round(100 * completeness)``) depend only on the run and completeness,
    so every method of a run trains on the same data.

    Returns:
        A JSON-ready dict: the task fields, ``iterations`` (trained), ``cv`` (the cross-validation
        record or None), ``loss`` (the final training's loss per step), ``seconds``, ``device``, and
        ``evaluations``: per test subset, ``condition``, ``subset``, ``metrics`` (balanced accuracy,
        sensitivity, specificity, precision) and the ``ids``, ``y_true``, ``y_pred``, ``probs``
        [n, 3] of the test cases used.
    """
    from hamfast.experiments.stopping import cross_validate_iterations
    from hamfast.training import train
    from hamfast.training.divergence import DivergenceError

    start = time.perf_counter()
    inputs = task_inputs(task, settings, samples, device)
    config = inputs.config
    cv = None
    try:
        if settings.stop == "cv":
            cv = cross_validate_iterations(
                config, inputs.images, inputs.available, inputs.labels, folds=settings.cv_folds, eval_every=settings.cv_every
            )
            config.iterations = cv.iterations
        result = train(config, inputs.images, inputs.available, inputs.labels)
    except DivergenceError as exc:
        log.warning("task %s failed: %s", task.name, exc)
        return failed_result(task, settings, inputs, exc, time.perf_counter() - start, device)
    return task_result(task, settings, samples, inputs, result, cv, time.perf_counter() - start, device)


def failed_result(task: Task, settings: ExperimentSettings, inputs: "TaskInputs", error: Exception, seconds: float,
                  device: str) -> dict:
    """The record of a task whose training diverged: ``failed`` holds the one-line reason, it has no
    evaluations (no score enters the tables) and ``iterations`` is the step where it stopped."""
    return {
        "experiment": settings.experiment, "run": task.run, "seed": task.seed, "completeness": task.completeness,
        "method": task.method, "iterations": int(getattr(error, "step", None) or 0), "cv": None, "loss": [],
        "train_samples": int(len(inputs.train_idx)), "train_complete": int(inputs.available.all(1).sum()),
        "seconds": round(seconds, 2), "device": str(device), "evaluations": [], "failed": str(error),
    }


@dataclass
class TaskInputs:
    """What a task trains on: its config (before the stopping rule) and training data.

    Attributes:
        config: the ``TrainConfig`` (``iterations``: the fixed count or the cross-validation maximum).
        images: float32 [n, 4, H, W]; available: bool [n, 4] (the simulated training mask);
        labels: int64 [n]; train_idx, test_idx: the split, positions into the cohort.
    """

    config: object
    images: np.ndarray
    available: np.ndarray
    labels: np.ndarray
    train_idx: np.ndarray
    test_idx: np.ndarray


def task_inputs(task: Task, settings: ExperimentSettings, samples: Samples, device: str = "cpu") -> TaskInputs:
    """The split, missingness draw and training config of a task (see :func:`run_task`)."""
    from hamfast import data
    from hamfast.training import TrainConfig

    split_seed = task.seed if settings.split == "per-run" else settings.seed
    train_idx, test_idx = data.stratified_split(samples.labels, test_size=settings.test_size, seed=split_seed)
    drop = data.drop_one_modality if settings.experiment == "a" else data.drop_random_modalities
    missing_seed = 1000 * task.seed + round(100 * task.completeness)
    train_available = np.asarray(drop(samples.available[train_idx], task.completeness, seed=missing_seed), dtype=bool)
    config = TrainConfig(task.method, seed=task.seed, device=device, **settings.train_options())
    return TaskInputs(config, samples.images[train_idx], train_available, samples.labels[train_idx], train_idx, test_idx)


def task_result(task: Task, settings: ExperimentSettings, samples: Samples, inputs: TaskInputs, result, cv,
                seconds: float, device: str) -> dict:
    """Evaluate a task's trained model (``result``: a ``TrainResult``) on its test subsets: the
    task's JSON-ready record (see :func:`run_task`)."""
    from hamfast.metrics import classification_metrics
    from hamfast.training import calibration_set, predict_proba

    test_idx = inputs.test_idx
    # The baselines' precise batch-norm statistics per test pattern (None for HAM or when off).
    calibration = calibration_set(result.config, inputs.images, inputs.available)
    evaluations = []
    for subset in settings.subsets:
        mask = subset_mask(subset)
        # Only test cases that really have every modality of the subset can be tested on it.
        cases = test_idx[(samples.available[test_idx] | ~mask).all(1)]
        if cases.size == 0:
            log.warning("no test case has every modality of %s; it is left out", subset)
            continue
        probs = predict_proba(result.model, samples.images[cases], np.repeat(mask[None], cases.size, axis=0), device=device,
                              calibration=calibration)
        y_pred = probs.argmax(1).numpy()
        metrics = classification_metrics(samples.labels[cases], y_pred, num_classes=probs.shape[1])
        evaluations.append(
            {
                "condition": completeness_label(task.completeness) if settings.experiment == "a" else subset,
                "subset": subset,
                "metrics": {k: metrics[k] for k in ("balanced_accuracy", "sensitivity", "specificity", "precision")},
                "ids": [samples.ids[i] for i in cases],
                "y_true": samples.labels[cases].tolist(),
                "y_pred": y_pred.tolist(),
                "probs": np.round(probs.numpy().astype(np.float64), 6).tolist(),
            }
        )
    return {
        "experiment": settings.experiment,
        "run": task.run,
        "seed": task.seed,
        "completeness": task.completeness,
        "method": task.method,
        "iterations": int(result.history["iterations"]),
        "cv": cv.to_dict() if cv is not None else None,
        "loss": [round(v, 6) for v in result.history["loss"]],
        "train_samples": int(len(inputs.train_idx)),
        "train_complete": int(inputs.available.all(1).sum()),
        "seconds": round(seconds, 2),
        "device": str(device),
        "evaluations": evaluations,
    }


def check_settings(out: Path, settings: ExperimentSettings) -> None:
    """Record ``settings`` in ``out``, or refuse when ``out`` holds an experiment with other settings."""
    path = out / SETTINGS_FILE
    if path.exists():
        stored = ExperimentSettings.from_dict(json.loads(path.read_text())["settings"])
        old, new = stored.identity(), settings.identity()
        changed = sorted(k for k in new if old.get(k) != new[k])
        if changed:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in changed)
            raise ValueError(
                f"--out {out} holds an experiment with other settings ({details}); "
                "use another --out folder, or delete that one to start over"
            )
    write_json_atomic(path, {"settings": settings.to_dict()})


def finished_tasks(out: Path) -> set[str]:
    """Names of the tasks with a result file in ``out``."""
    folder = out / TASKS_DIR
    return {p.stem for p in folder.glob("*.json")} if folder.is_dir() else set()


def _worker_devices(device: str, jobs: int) -> list[str]:
    """One device per worker: GPUs in turn when ``device`` is plain "cuda" and several are visible."""
    import torch

    if device == "cuda" and torch.cuda.device_count() > 1:
        return [f"cuda:{i % torch.cuda.device_count()}" for i in range(jobs)]
    return [device] * jobs


def run_experiment(
    settings: ExperimentSettings,
    samples: Samples,
    out,
    *,
    jobs: int = 1,
    device: str = "cpu",
    progress: bool = True,
    task_fn: Optional[Callable] = None,
    batch_models: int = 1,
    shard: Optional[tuple[int, int]] = None,
) -> list[dict]:
    """Run the tasks of ``settings`` that ``out`` does not hold yet; return every task result in ``out``.

    Args:
        settings: the experiment.
        samples: the cohort.
        out: output folder (created).
        jobs: worker processes (1: run in this process).
        device: torch device for training and prediction.
        progress: show a tqdm bar over tasks, with ETA.
        task_fn: what runs one task, ``task_fn(task, settings, samples, device) -> dict``
            (default :func:`run_task`); with ``jobs > 1`` it must be importable by name (a module-level
            function), as the workers unpickle it.

        batch_models: K > 1 trains up to K models at once, stacked
            (:func:`hamfast.experiments.batching.run_batched`, in this process).
        shard: ``(i, N)``: only the i-th of N disjoint parts of the tasks
            (:func:`hamfast.experiments.batching.shard_tasks`).

    Returns:
        The results of the experiment's tasks (of the shard) found in ``out`` (finished now or
        before), in plan order.

    Raises:
        ExperimentInterrupted: on Ctrl-C (a ``KeyboardInterrupt``): the workers are stopped at once,
            every finished task is kept, and the message says how many.
    """
    from hamfast.experiments.batching import run_batched, shard_tasks

    out = Path(out)
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    check_settings(out, settings)
    tasks = plan_tasks(settings)
    if shard is not None:
        tasks = shard_tasks(tasks, *shard)
        log.info("shard %d/%d: %d of the experiment's tasks", shard[0], shard[1], len(tasks))
    done = finished_tasks(out)
    pending = [t for t in tasks if t.name not in done]
    log.info(
        "experiment %s: %d tasks (%d runs x %d completeness x %d methods), %d already finished, %d to run on %s with %d job(s)",
        settings.experiment, len(tasks), settings.runs, len(settings.completeness), len(settings.methods),
        len(tasks) - len(pending), len(pending), device, jobs,
    )
    if pending:
        try:
            if batch_models > 1:
                if jobs > 1:
                    log.info("--jobs %d is ignored: batched training (--batch-models %d) runs in one process", jobs, batch_models)
                run_batched(pending, settings, samples, out, batch_models=batch_models, device=device, progress=progress,
                            finish=_log_finished)
            else:
                _run_pending(pending, settings, samples, out, jobs, device, progress, task_fn)
        except KeyboardInterrupt:
            finished = len(finished_tasks(out) & {t.name for t in tasks})
            raise ExperimentInterrupted(
                f"interrupted: {finished} of {len(tasks)} tasks are finished and kept in {out / TASKS_DIR} "
                f"({finished - (len(tasks) - len(pending))} of them in this run); rerun the same command to resume"
            ) from None
    results = []
    for task in tasks:
        path = out / TASKS_DIR / f"{task.name}.json"
        if path.exists():
            results.append(json.loads(path.read_text()))
    return results


def _run_pending(pending, settings, samples, out, jobs, device, progress, task_fn) -> None:
    if not progress:
        _run_tasks(pending, settings, samples, out, jobs, device, None, task_fn)
        return
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    # Log lines go above the bar instead of through it.
    with logging_redirect_tqdm(), tqdm(total=len(pending), desc=f"experiment {settings.experiment}", unit="task", dynamic_ncols=True) as bar:
        _run_tasks(pending, settings, samples, out, jobs, device, bar, task_fn)


def _log_finished(task: Task, result: dict) -> None:
    scores = ", ".join(f"{e['condition']} {e['metrics']['balanced_accuracy']:.3f}" for e in result["evaluations"][:3])
    log.info("finished %s: %d iterations, balanced accuracy %s (%.0f s)", task.name, result["iterations"], scores, result["seconds"])


def _run_tasks(pending, settings, samples, out, jobs, device, bar, task_fn) -> None:
    """Run ``pending`` here (jobs == 1) or in worker processes, writing each result as it arrives."""

    def finish(task: Task, result: dict) -> None:
        write_json_atomic(out / TASKS_DIR / f"{task.name}.json", result)
        _log_finished(task, result)
        if bar is not None:
            bar.set_postfix_str(f"last: {task.name}", refresh=False)
            bar.update(1)

    if jobs == 1 or len(pending) == 1:
        fn = task_fn or run_task  # looked up now, so tests can replace run_task
        for task in pending:
            finish(task, fn(task, settings, samples, device))
        return
    _run_in_workers(pending, settings, samples, min(jobs, len(pending)), device, finish, task_fn or run_task)


# --- worker processes ---------------------------------------------------------------------------
#
# A small pool of our own rather than ProcessPoolExecutor: on Ctrl-C or an error the workers are
# terminated at once (the executor can only wait for running tasks, a minute or more), results
# that arrived in the meantime are still written, and each worker dies with its parent even when
# the parent is killed with SIGKILL (PR_SET_PDEATHSIG on Linux, and a parent-pid watchdog thread
# everywhere), so no orphan keeps a GB of cohort and model memory.

_POLL_SECONDS = 0.5  # how often the parent checks its workers while waiting for results
_TERMINATE_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when stopping workers


class ExperimentInterrupted(KeyboardInterrupt):
    """Ctrl-C during an experiment; the message says how many tasks are finished and kept."""


class WorkerDied(RuntimeError):
    """A worker process ended without reporting its task (killed, out of memory, crashed)."""


def _run_in_workers(pending, settings, samples, jobs, device, finish, task_fn) -> None:
    import queue
    import signal
    import threading

    context = multiprocessing.get_context("spawn")  # fork is unsafe with torch threads / CUDA
    threads = max(1, (os.cpu_count() or 1) // jobs)
    tasks_q, results_q = context.Queue(), context.Queue()
    by_name = {task.name: task for task in pending}
    for task in pending:
        tasks_q.put(task)
    for _ in range(jobs):
        tasks_q.put(None)  # one stop sign per worker
    workers = [
        context.Process(target=_worker_main, name=f"hamfast-worker-{i}", daemon=True,
                        args=(task_fn, settings, samples, worker_device, threads, tasks_q, results_q, os.getpid()))
        for i, worker_device in enumerate(_worker_devices(device, jobs))
    ]
    # The workers must never see Ctrl-C (the terminal sends it to the whole process group): this
    # process stops them itself. A blocked SIGINT is inherited through fork and exec, and here a
    # Ctrl-C pressed while they start stays pending and arrives right after.
    block = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    if block:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        for worker in workers:
            worker.start()
    finally:
        if block:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    running = {}  # worker pid -> task name
    left = len(pending)
    problem = None
    try:
        while left:
            try:
                kind, name, payload = results_q.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if problem is not None:  # still nothing after a worker ended: it is gone for good
                    raise WorkerDied(problem) from None
                problem = _worker_problem(workers, running, left)  # looked at again after one more wait
                continue
            problem = None
            if kind == "start":
                running[payload] = name
            elif kind == "done":
                left -= 1
                finish(by_name[name], payload)
            else:  # "error": the task's exception, re-raised here
                raise payload
    except BaseException:
        # Keep every task that finished before we stop the others.
        for kind, name, payload in _drain(results_q):
            if kind == "done":
                finish(by_name[name], payload)
        raise
    finally:
        _stop_workers(workers)
        for q in (tasks_q, results_q):
            q.cancel_join_thread()  # never block the exit on tasks no worker will take
            q.close()


def _worker_problem(workers, running: dict, left: int) -> Optional[str]:
    """What went wrong with the workers (one ended abnormally, or all ended with tasks left), or None."""
    for worker in workers:
        if worker.exitcode not in (None, 0):
            task = running.get(worker.pid)
            what = f" while running {task}" if task else ""
            hint = " (killed: often the out-of-memory killer; try fewer --jobs)" if worker.exitcode == -9 else ""
            return f"worker process {worker.pid} ended with exit code {worker.exitcode}{what}{hint}"
    if all(worker.exitcode is not None for worker in workers):
        return f"every worker process ended with {left} task(s) left"
    return None


def _drain(results_q):
    import queue

    while True:
        try:
            yield results_q.get(timeout=0.05)
        except (queue.Empty, OSError, EOFError, ValueError):
            return


def _stop_workers(workers) -> None:
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    deadline = time.monotonic() + _TERMINATE_GRACE
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            worker.kill()
            worker.join()


def _die_with_parent(parent_pid: int) -> None:
    """Make this process end when ``parent_pid`` does, however it ends."""
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: the kernel kills us with the parent
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="hamfast-parent-watchdog", daemon=True).start()


def _worker_main(task_fn, settings, samples, device, threads, tasks_q, results_q, parent_pid) -> None:
    import pickle
    import signal
    import traceback

    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    import torch

    torch.set_num_threads(threads)
    while True:
        task = tasks_q.get()
        if task is None:
            return
        results_q.put(("start", task.name, os.getpid()))
        try:
            result = task_fn(task, settings, samples, device)
        except Exception as exc:
            try:
                pickle.dumps(exc)
                error = exc
            except Exception:
                error = RuntimeError(f"{type(exc).__name__}: {exc}")
            log.debug("task %s failed in worker %d:\n%s", task.name, os.getpid(), traceback.format_exc())
            results_q.put(("error", task.name, error))
            return
        results_q.put(("done", task.name, result))
