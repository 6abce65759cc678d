"""Running a study's tasks: the one executor (plan -> execute -> report).

:func:`run_experiment` plans the tasks (:func:`hamfast.experiments.tasks.plan_tasks`, a shard of
them, minus those already finished), then decides, in one place (:func:`_execute`), how they run:
task by task in this process, in worker processes (:mod:`hamfast.experiments.workers`), or many
models stacked per training (:mod:`hamfast.experiments.batching`). Every way writes each finished
task at once, atomically, to ``OUT/tasks/<name>.json`` (metrics, predictions, loss history, the
chosen iteration count); the reports are made from those files (:mod:`hamfast.experiments.report`,
by :func:`hamfast.experiments.study.run_study`). The modules it calls import nothing back.

Running the same experiment again skips the tasks already there, so an interrupted experiment
loses only the tasks in progress; asking for more runs adds them. ``OUT/experiment.json`` holds
the settings; rerunning with settings that would change results is refused. On Ctrl-C the workers
are stopped at once, every result that arrived is written, and :class:`ExperimentInterrupted`
says how many tasks are finished. Two runs into one folder are kept apart by
:func:`hamfast.files.lock_folder`, taken by ``hamfast.experiments.study.run_study``.
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Callable, Iterator, Optional

from hamfast.experiments import batching, workers
from hamfast.experiments.config import ExperimentSettings
from hamfast.experiments.tasks import (
    TASKS_DIR,
    Samples,
    Task,
    TaskInputs,
    plan_tasks,
    run_task,
    shard_tasks,
    subset_mask,
    task_inputs,
    task_result,
    task_steps,
)
from hamfast.experiments.workers import WorkerDied
from hamfast.files import write_json_atomic

__all__ = [
    "Samples",
    "Task",
    "TaskInputs",
    "plan_tasks",
    "pending_tasks",
    "run_task",
    "subset_mask",
    "task_inputs",
    "task_result",
    "run_experiment",
    "ExperimentInterrupted",
    "WorkerDied",
]

log = logging.getLogger(__name__)

SETTINGS_FILE = "experiment.json"


class ExperimentInterrupted(KeyboardInterrupt):
    """Ctrl-C during an experiment; the message says how many tasks are finished and kept."""


def check_settings(out: Path, settings: ExperimentSettings, data: Optional[str] = None) -> None:
    """Record ``settings`` and the cohort's fingerprint ``data`` in ``out``, or refuse when ``out``
    holds an experiment with other settings or of other data (a study's identity is both)."""
    path = out / SETTINGS_FILE
    if path.exists():
        record = json.loads(path.read_text())
        stored = ExperimentSettings.from_dict(record["settings"])
        old, new = stored.identity(), settings.identity()
        changed = sorted(k for k in new if old.get(k) != new[k])
        if changed:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in changed)
            raise ValueError(
                f"--out {out} holds an experiment with other settings ({details}); "
                "use another --out folder, or delete that one to start over"
            )
        if data is not None and record.get("data") not in (None, data):  # records before fingerprints have none
            raise ValueError(
                f"--out {out} holds an experiment of other data (cohort fingerprint {record['data']}, this --data "
                f"{data}); use the same --data to resume, or another --out folder"
            )
    write_json_atomic(path, {"settings": settings.to_dict(), "data": data})


def finished_tasks(out: Path) -> set[str]:
    """Names of the tasks with a result file in ``out``."""
    folder = out / TASKS_DIR
    return {p.stem for p in folder.glob("*.json")} if folder.is_dir() else set()


def pending_tasks(settings: ExperimentSettings, out, shard: Optional[tuple[int, int]] = None) -> tuple[list[Task], list[Task]]:
    """The study's plan: ``(tasks, pending)``, the tasks of ``settings`` (of the shard ``(i, N)``)
    in plan order, and those of them ``out`` holds no result for yet."""
    tasks = plan_tasks(settings)
    if shard is not None:
        tasks = shard_tasks(tasks, *shard)
    done = finished_tasks(Path(out))
    return tasks, [t for t in tasks if t.name not in done]


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
        progress: show a tqdm bar over tasks (or training steps when batched), with ETA.
        task_fn: what runs one task alone, ``task_fn(task, settings, samples, device) -> dict``
            (default :func:`~hamfast.experiments.tasks.run_task`); with ``jobs > 1`` it must be
            importable by name (a module-level function), as the workers unpickle it.
        batch_models: K > 1 trains up to K models at once, stacked
            (:mod:`hamfast.experiments.batching`, in this process).
        shard: ``(i, N)``: only the i-th of N disjoint parts of the tasks
            (:func:`hamfast.experiments.tasks.shard_tasks`).

    Returns:
        The results of the experiment's tasks (of the shard) found in ``out`` (finished now or
        before), in plan order.

    Raises:
        ExperimentInterrupted: on Ctrl-C (a ``KeyboardInterrupt``): the workers are stopped at once,
            every finished task is kept, and the message says how many.
    """
    out = Path(out)
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    if batch_models < 1:
        raise ValueError(f"--batch-models must be >= 1, got {batch_models}")
    check_settings(out, settings, samples.fingerprint())
    tasks, pending = pending_tasks(settings, out, shard)
    if shard is not None:
        log.info("shard %d/%d: %d of the experiment's tasks", shard[0], shard[1], len(tasks))
    log.info(
        "experiment %s: %d tasks (%d runs x %d completeness x %d methods), %d already finished, %d to run on %s with %d job(s)",
        settings.experiment, len(tasks), settings.runs, len(settings.completeness), len(settings.methods),
        len(tasks) - len(pending), len(pending), device, jobs,
    )
    if pending:
        try:
            _execute(pending, settings, samples, out, jobs=jobs, device=device, progress=progress, task_fn=task_fn,
                     batch_models=batch_models)
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
            results.append(_read_record(path, task, settings))
    return results


def _read_record(path: Path, task: Task, settings: ExperimentSettings) -> dict:
    """A task's record, refused in one line (before any report is written) when it is not that task's."""
    try:
        record = json.loads(path.read_text())
        wrong = [key for key, want in (("experiment", settings.experiment), ("run", task.run), ("seed", task.seed),
                                       ("completeness", task.completeness), ("method", task.method))
                 if record.get(key) != want]
        if not wrong and not all(isinstance(e.get("metrics"), dict) for e in record.get("evaluations", [])):
            wrong = ["evaluations"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        wrong = [f"unreadable: {exc}"]
    if wrong:
        raise ValueError(f"{path} is not the record of task {task.name} ({', '.join(map(str, wrong))}: edited or "
                         "damaged); delete it and rerun the same command to train that task again")
    return record


def _execute(pending: list[Task], settings: ExperimentSettings, samples: Samples, out: Path, *, jobs: int, device: str,
             progress: bool, task_fn: Optional[Callable], batch_models: int) -> None:
    """Run ``pending``, writing each task's record as it finishes: the one place that decides how.

    ``batch_models > 1``: the tasks that can be stacked are trained K at a time, the others alone,
    all in this process, under one bar over training steps; else ``jobs > 1``: in worker
    processes; else one by one here. Both bars count what is pending and show the ETA.
    """
    from hamfast.training.divergence import DivergenceError

    fn = task_fn or run_task  # looked up now, so tests can replace run_task
    if batch_models > 1:
        if jobs > 1:
            log.info("--jobs %d is ignored: batched training (--batch-models %d) runs in one process", jobs, batch_models)
        batches = batching.plan_batches(pending, settings, samples, batch_models=batch_models, device=device)
        steps = task_steps(settings)
        with _bar(progress, total=len(pending) * steps, desc=f"experiment {settings.experiment} ({len(pending)} tasks)",
                  unit="step", smoothing=0.05) as bar:
            finish = _recorder(out, bar, advance=0)
            for batch in batches:
                tasks = batch.tasks
                if batch.stacked:
                    try:
                        batching.run_stacked(tasks, settings, samples, device=device, bar=bar, finish=finish)
                        continue
                    except DivergenceError as exc:
                        # One stacked model diverged: the batch's unwritten tasks run one by one, so
                        # the diverged one is recorded as failed and the others as usual.
                        log.warning("%s; training the batch's unfinished tasks one by one", exc)
                        tasks = [t for t in tasks if not (out / TASKS_DIR / f"{t.name}.json").exists()]
                for task in tasks:
                    finish(task, fn(task, settings, samples, device))
                    if bar is not None:
                        bar.update(steps)
        return
    with _bar(progress, total=len(pending), desc=f"experiment {settings.experiment}", unit="task") as bar:
        finish = _recorder(out, bar, advance=1)
        if jobs == 1 or len(pending) == 1:
            for task in pending:
                finish(task, fn(task, settings, samples, device))
        else:
            workers.run_in_workers(pending, settings, samples, min(jobs, len(pending)), device, finish, fn)


@contextlib.contextmanager
def _bar(progress: bool, **options) -> Iterator:
    """A tqdm bar (None without ``progress``), with log lines going above it instead of through it."""
    if not progress:
        yield None
        return
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(), tqdm(dynamic_ncols=True, **options) as bar:
        yield bar


def _recorder(out: Path, bar, advance: int) -> Callable[[Task, dict], None]:
    """``finish(task, record)``: write the record to ``OUT/tasks/``, log it, move ``bar`` on by ``advance``."""

    def finish(task: Task, record: dict) -> None:
        write_json_atomic(out / TASKS_DIR / f"{task.name}.json", record)
        _log_finished(task, record)
        if bar is not None:
            bar.set_postfix_str(f"last: {task.name}", refresh=False)
            if advance:
                bar.update(advance)

    return finish


def _log_finished(task: Task, result: dict) -> None:
    scores = ", ".join(f"{e['condition']} {e['metrics']['balanced_accuracy']:.3f}" for e in result["evaluations"][:3])
    log.info("finished %s: %d iterations, balanced accuracy %s (%.0f s)", task.name, result["iterations"], scores, result["seconds"])
