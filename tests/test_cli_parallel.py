"""Parallel experiment runs as a user meets them: Ctrl-C stops at once and keeps finished tasks,
workers die with a parent killed by SIGKILL, and two runs never share an output folder.

The experiment runs in a subprocess with ``--jobs 2`` and a fake task (``slow_task`` below, which
the spawned workers import by name): the first tasks finish at once, the others sleep for ten
minutes, so only a prompt stop lets a test end.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hamfast import cli
from hamfast.experiments import runner
from hamfast.experiments.config import make_settings
from hamfast.files import FolderLockedError, lock_folder, lock_holder

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and relies on PR_SET_PDEATHSIG")

FAST_TASKS = 2  # tasks of run 0 that finish at once; every later one sleeps

def _terminal_signals() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


# The script the subprocess runs: experiment A, 1 run x 1 completeness x 4 methods = 4 tasks, 2 jobs.
SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np
from hamfast.experiments import runner
from hamfast.experiments.config import make_settings
import test_cli_parallel as fakes

settings = make_settings("a", "quick", runs=1, completeness=(1.0,), iterations=3, widths=(2, 2, 2, 2), size=96)
samples = runner.Samples(np.zeros((4, 4, 2, 2), np.float32), np.ones((4, 4), bool), np.zeros(4, np.int64), list("abcd"))
try:
    runner.run_experiment(settings, samples, {out!r}, jobs=2, progress=False, task_fn=fakes.slow_task)
except KeyboardInterrupt as exc:
    print(exc, file=sys.stderr)
    sys.exit(130)
"""


def slow_task(task, settings, samples, device="cpu"):
    """Record this worker's pid, then finish at once (the first FAST_TASKS tasks) or sleep."""
    folder = Path(os.environ["HAMFAST_TEST_PIDS"])
    (folder / f"{task.name}.pid").write_text(str(os.getpid()))
    order = [m for m in settings.methods].index(task.method)
    if order >= FAST_TASKS:
        time.sleep(600)
    return {
        "experiment": settings.experiment, "run": task.run, "seed": task.seed, "completeness": task.completeness,
        "method": task.method, "iterations": 3, "cv": None, "loss": [1.0], "train_samples": 4, "train_complete": 4,
        "seconds": 0.0, "device": device,
        "evaluations": [{"condition": "100%", "subset": "t1+t1ce+t2+flair",
                         "metrics": {"balanced_accuracy": 0.5, "sensitivity": 0.5, "specificity": 0.5, "precision": 0.5},
                         "ids": ["a"], "y_true": [0], "y_pred": [0], "probs": [[1.0, 0.0, 0.0]]}],
    }


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _wait_for(condition, what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def _start(tmp_path):
    pids, out = tmp_path / "pids", tmp_path / "out"
    pids.mkdir()
    script = SCRIPT.format(tests=str(Path(__file__).parent), out=str(out))
    env = dict(os.environ, HAMFAST_TEST_PIDS=str(pids))
    # Its own session, so a Ctrl-C can go to its whole process group as a terminal would send it.
    # A terminal's fresh process: Ctrl-C neither ignored nor blocked, whatever this pytest process inherited.
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, preexec_fn=_terminal_signals)
    sleeping = lambda: [p for p in pids.glob("*.pid") if not p.stem.endswith(("standard", "dropout"))]  # noqa: E731
    try:
        # Both workers are inside a sleeping task once the fast ones are written.
        _wait_for(lambda: len(list((out / "tasks").glob("*.json"))) == FAST_TASKS and len(sleeping()) == 2,
                  "two finished tasks and two sleeping ones")
    except BaseException:
        process.kill()
        raise
    return process, out, [int(p.read_text()) for p in sleeping()]


@linux_only
def test_ctrl_c_stops_workers_at_once_and_keeps_finished_tasks(tmp_path):
    process, out, workers = _start(tmp_path)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    try:
        # The sleeping tasks would hold a waiting parent for ten minutes.
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "interrupted: 2 of 4 tasks are finished and kept" in err and "rerun the same command to resume" in err
    assert "Traceback" not in err  # the workers never saw the Ctrl-C
    assert sorted(p.stem for p in (out / "tasks").glob("*.json")) == ["run000-c100-dropout", "run000-c100-standard"]
    _wait_for(lambda: not any(_alive(pid) for pid in workers), "the workers to end", limit=10)


@linux_only
def test_workers_die_with_a_parent_killed_by_sigkill(tmp_path):
    process, _, workers = _start(tmp_path)
    assert all(_alive(pid) for pid in workers)
    process.send_signal(signal.SIGKILL)
    process.wait()
    _wait_for(lambda: not any(_alive(pid) for pid in workers), "the orphaned workers to end", limit=15)


def test_an_error_in_a_worker_stops_the_others_and_keeps_finished_tasks(tmp_path):
    settings = make_settings("a", "quick", runs=1, completeness=(1.0,), iterations=3, widths=(2, 2, 2, 2), size=96)
    samples = runner.Samples(np.zeros((4, 4, 2, 2), np.float32), np.ones((4, 4), bool), np.zeros(4, np.int64), list("abcd"))
    with pytest.raises(ValueError, match="featimpute refuses"):
        runner.run_experiment(settings, samples, tmp_path, jobs=2, progress=False, task_fn=failing_task)
    kept = {p.stem for p in (tmp_path / "tasks").glob("*.json")}
    # The worker that took featimpute had finished standard or dropout first; ham never ran or was kept.
    assert kept & {"run000-c100-standard", "run000-c100-dropout"} and "run000-c100-featimpute" not in kept


def failing_task(task, settings, samples, device="cpu"):
    """Fails on featimpute (the exception travels to the parent as itself), finishes the others at once."""
    if task.method == "featimpute":
        raise ValueError("featimpute refuses")
    return {
        "experiment": settings.experiment, "run": task.run, "seed": task.seed, "completeness": task.completeness,
        "method": task.method, "iterations": 3, "cv": None, "loss": [1.0], "train_samples": 4, "train_complete": 4,
        "seconds": 0.0, "device": device, "evaluations": [],
    }


# --- one writer per output folder ---------------------------------------------------------------


def _fake_cache(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cohort.json").write_text("{}")
    return cache


def test_a_second_run_into_a_locked_folder_refuses_naming_the_holder(tmp_path, capsys, monkeypatch):
    import hamfast.experiments.study as study

    monkeypatch.setattr(study, "load_cohort", lambda *a, **k: pytest.fail("the cohort was read"))
    out = tmp_path / "out"
    with lock_folder(out, command="hamfast experiment a --data elsewhere"):
        argv = ["experiment", "a", "--data", str(_fake_cache(tmp_path)), "--out", str(out), "--device", "cpu", "-q"]
        assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {out} is in use by pid {os.getpid()} on " in err
    assert "(hamfast experiment a --data elsewhere)" in err and "--wait" in err
    assert lock_holder(out) is not None  # the holder's record stays for the next reader


def test_a_second_demo_refuses_before_writing_its_cohort(tmp_path, capsys, monkeypatch):
    import hamfast.data

    monkeypatch.setattr(hamfast.data, "make_synthetic_brats", lambda *a, **k: pytest.fail("wrote a cohort"))
    with lock_folder(tmp_path, command="hamfast demo"):
        assert cli.main(["demo", "--out", str(tmp_path), "--device", "cpu", "-q"]) == 2
    assert f"--out {tmp_path} is in use by pid {os.getpid()}" in capsys.readouterr().err


def test_lock_waits_when_asked_and_is_free_after_the_holder(tmp_path):
    held, seen = threading.Event(), []

    def hold():
        with lock_folder(tmp_path, command="first"):
            held.set()
            time.sleep(0.5)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait()
    with pytest.raises(FolderLockedError, match="in use by pid"):
        with lock_folder(tmp_path):
            pass
    with lock_folder(tmp_path, command="second", wait=True, on_wait=seen.append):
        assert "second" in lock_holder(tmp_path)
    thread.join()
    assert len(seen) == 1 and "(first)" in seen[0]
    with lock_folder(tmp_path):  # free again
        pass
    assert json.loads((tmp_path / ".hamfast.lock").read_text())["pid"] == os.getpid()
