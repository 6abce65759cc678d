"""Worker processes for a study's tasks: :func:`run_in_workers`.

``jobs`` processes (spawned) each take tasks from a queue and run ``task_fn(task, settings, samples,
device)``, with ``cpu_count // jobs`` torch threads; with several GPUs visible and
``device="cuda"``, worker i uses GPU ``i mod count``. On Ctrl-C or an error the workers are
terminated at once and every result that arrived is still handed to ``finish``; workers also die
with their parent when it is killed (see ``_die_with_parent``).

Whether tasks run here at all is decided by :func:`hamfast.experiments.runner.run_experiment`.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import time
from typing import Callable, Optional, Sequence

__all__ = ["WorkerDied", "run_in_workers"]

log = logging.getLogger(__name__)


def _worker_devices(device: str, jobs: int) -> list[str]:
    """One device per worker: GPUs in turn when ``device`` is plain "cuda" and several are visible."""
    import torch

    if device == "cuda" and torch.cuda.device_count() > 1:
        return [f"cuda:{i % torch.cuda.device_count()}" for i in range(jobs)]
    return [device] * jobs


# --- worker processes ---------------------------------------------------------------------------
#
# A small pool of our own rather than ProcessPoolExecutor: on Ctrl-C or an error the workers are
# terminated at once (the executor can only wait for running tasks, a minute or more), results
# that arrived in the meantime are still written, and each worker dies with its parent even when
# the parent is killed with SIGKILL (PR_SET_PDEATHSIG on Linux, and a parent-pid watchdog thread
# everywhere), so no orphan keeps a GB of cohort and model memory.

_POLL_SECONDS = 0.5  # how often the parent checks its workers while waiting for results
_TERMINATE_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when stopping workers


class WorkerDied(RuntimeError):
    """A worker process ended without reporting its task (killed, out of memory, crashed)."""


def run_in_workers(pending: Sequence, settings, samples, jobs: int, device: str, finish: Callable[[object, dict], None],
                   task_fn: Callable) -> None:
    """Run ``pending`` tasks in ``jobs`` worker processes, calling ``finish(task, result)`` here as each result arrives.

    Raises:
        WorkerDied: a worker ended without reporting its task; the exception a task raised, re-raised here.
    """
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
