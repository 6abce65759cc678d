"""One experiment from data to report: load the cohort, run the pending tasks, write every output."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

from hamfast.checks import check_memory, check_network_fits, cohort_memory, count_cases, training_memory
from hamfast.experiments.config import ExperimentSettings
from hamfast.files import LOCK_FILE, check_output_dir, lock_folder, remove_if_only_locks, write_text_atomic
from hamfast.experiments.plots import write_plots
from hamfast.experiments.report import (
    COMPARISON_COLUMNS,
    prediction_columns,
    RUN_COLUMNS,
    comparison_rows,
    prediction_rows,
    run_rows,
    summary_markdown,
    write_csv,
)
from hamfast.experiments.runner import finished_tasks, pending_tasks, run_experiment
from hamfast.names import BRATS_MODALITIES
from hamfast.experiments.tasks import Samples

__all__ = ["is_brats_root", "is_dataset_root", "dataset_names", "load_cohort", "cohort_description", "run_study"]

log = logging.getLogger(__name__)


def is_brats_root(path) -> bool:
    """Whether ``open_cohort`` would read ``path`` as a BraTS copy (rather than a cohort cache)."""
    from hamfast.data.sources import dataset_layout

    return dataset_layout(path) == "brats"


def is_dataset_root(path) -> bool:
    """Whether ``open_cohort`` would read ``path`` as a dataset folder of any layout (BraTS or
    nnU-Net: NIfTI files to read and cache), rather than load a cohort cache."""
    from hamfast.data.sources import dataset_layout

    return dataset_layout(path) is not None


def dataset_names(data) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(modalities, classes)`` of the data at ``data`` without reading its images: a BraTS
    root's are BraTS's; an nnU-Net dataset's come from its ``dataset.json`` and ``classes.csv``
    (checked: a malformed one is refused here, in one line); a cohort file's or cache folder's come from its manifest(s) (written
    before names were recorded: BraTS's). So settings that depend on the names (test subsets)
    can be made, and checked, before any long work.

    Raises:
        ValueError: a cache folder whose cohorts disagree on the names.
    """
    from hamfast.data.cohort import cohort_paths, read_manifest
    from hamfast.data.sources import dataset_layout as dataset_layout_of
    from hamfast.names import SURVIVAL_CLASSES

    from hamfast.data.nnunet import find_nnunet_layout

    path = Path(data).expanduser()
    layout = dataset_layout_of(path)
    if layout == "brats":
        return BRATS_MODALITIES, SURVIVAL_CLASSES
    if layout == "nnunet":
        found_layout = find_nnunet_layout(path)
        return tuple(found_layout.spec.modalities), tuple(found_layout.classes)
    candidates = sorted(path.glob("*.json")) if path.is_dir() else [cohort_paths(path)[1]]
    found = set()
    for candidate in candidates:
        try:
            manifest = read_manifest(candidate)
        except (ValueError, OSError):
            continue
        found.add((tuple(manifest.get("modalities", BRATS_MODALITIES)), tuple(manifest.get("classes", SURVIVAL_CLASSES))))
    if len(found) > 1:
        raise ValueError(f"--data {data}: its cohorts have different modalities or classes ({sorted(found)}); give one "
                         "cohort file")
    return found.pop() if found else (BRATS_MODALITIES, SURVIVAL_CLASSES)


def load_cohort(data, *, cache_dir=None, progress: bool = False, **settings):
    """``hamfast.data.open_cohort`` of ``data`` (a BraTS root, an nnU-Net raw dataset or a cohort cache).

    Args:
        data: the path.
        cache_dir: where a dataset folder's slices are cached (ignored for a cache).
        progress: progress bar while reading NIfTI files.
        **settings: reader settings (``size``, ...); a cache must have been made with them, a
            dataset folder is read with them. Leave one out to accept a cache made with any value.
    """
    from hamfast.data import open_cohort

    log.info("opening the cohort %s", data)
    return open_cohort(data, cache_dir=cache_dir, progress=progress, **settings)


def cohort_description(cohort) -> str:
    """One line: cases, slice size, class and modality counts (BraTS: ``classes short/mid/long [n0, n1, n2]``)."""
    import numpy as np

    counts = np.bincount(cohort.labels, minlength=len(cohort.classes)).tolist()
    shape = "x".join(str(s) for s in cohort.images.shape[2:])
    missing = int((~cohort.available).any(1).sum())
    modalities = "" if tuple(cohort.modalities) == BRATS_MODALITIES else f", modalities {'/'.join(cohort.modalities)}"
    return (f"{len(cohort)} cases, {shape} px slices{modalities}, classes {'/'.join(cohort.classes)} {counts}, "
            f"{missing} with a modality missing")


def _check_testable(settings: ExperimentSettings, cohort, data) -> None:
    """Refuse, before training, test subsets that no case of ``cohort`` (the test cases' source) has."""
    from hamfast.experiments.tasks import subset_mask

    untestable = [s for s in settings.subsets
                  if not (cohort.available | ~subset_mask(s, settings.modalities)).all(1).any()]
    if untestable:
        what = ("no case has every modality (" + ", ".join(settings.modalities) + "), and experiment a tests on "
                "complete cases only" if settings.experiment == "a" else
                f"no case has every modality of the test subset(s) {', '.join(untestable)}; leave them out (--subsets)")
        raise ValueError(f"--data {data}: {what}")


def _load_test_cohort(settings: ExperimentSettings, cohort, cache_dir, progress: bool, size: dict):
    """The cohort of ``settings.test_data``, checked against the training cohort (slice shape, names)."""
    test = load_cohort(settings.test_data, cache_dir=cache_dir, progress=progress, **size)
    for what in ("modalities", "classes"):
        if tuple(getattr(test, what)) != tuple(getattr(cohort, what)):
            raise ValueError(f"--test-data {settings.test_data}: {what} {', '.join(getattr(test, what))}, but the "
                             f"training cohort's are {', '.join(getattr(cohort, what))}")
    if test.images.shape[1:] != cohort.images.shape[1:]:
        raise ValueError(f"--test-data {settings.test_data}: slices of shape {tuple(test.images.shape[1:])}, but the "
                         f"training cohort's are {tuple(cohort.images.shape[1:])}; read both at the same --size")
    log.info("testing every run on --test-data %s: %s", settings.test_data, cohort_description(test))
    return test


def run_study(
    settings: ExperimentSettings,
    data,
    out,
    *,
    jobs: int = 1,
    device: str = "cpu",
    cache_dir=None,
    progress: bool = True,
    command: Optional[str] = None,
    wait: bool = False,
    batch_models="auto",
    shard: Optional[tuple[int, int]] = None,
    estimate: bool = False,
) -> dict:
    """Run (or resume) an experiment and write ``runs.csv``, ``predictions.csv``, ``summary.md``,
    ``comparisons.csv`` and the plots.

    Args:
        settings: the experiment.
        data: BraTS root or cohort cache.
        out: output folder.
        jobs: worker processes.
        device: torch device (already resolved, not "auto").
        cache_dir: where a BraTS root's slices are cached.
        progress: progress bars.
        command: the command line, quoted in the summary and recorded in the folder's lock.
        wait: when another process holds ``out`` (see :func:`hamfast.files.lock_folder`), wait for
            it instead of refusing.
        batch_models: models trained at once (an int, or ``"auto"``:
            :func:`hamfast.experiments.batching.default_batch_models`); 1 trains task by task.
        shard: ``(i, N)``: run only the i-th of N parts of the tasks and write no report (rerun
            without ``shard`` to merge the shards' task files and write the reports). Each shard
            locks ``out`` with its own lock file, so the shards of a study can share the folder.
        estimate: time a few steps and return the expected wall time instead of running.

    Returns:
        ``{"results": task results, "summary": summary.md text (or the estimate, or a shard's
        one-line account), "files": paths written}``.

    Raises:
        ValueError: before any training: ``out`` cannot be written or is in use, the slices are too
            small for the network, the memory estimate exceeds what is available, too few cases.
    """
    start = time.perf_counter()
    out = check_output_dir(out, "--out")
    if settings.size is not None:
        check_network_fits(settings.size, settings.widths, settings.kernel_size)
        if is_dataset_root(data):  # reading it at that size must fit, before it is read
            cases = count_cases(data)
            check_memory(cohort_memory(cases, settings.size), f"reading {cases} cases at --size {settings.size}")
    lock_name = LOCK_FILE if shard is None else f".hamfast-shard-{shard[0]}-of-{shard[1]}.lock"
    fresh = not out.exists()
    try:
        with lock_folder(out, command=command, wait=wait, name=lock_name,
                         on_wait=lambda holder: log.warning("--out %s is in use by %s; waiting for it to finish", out, holder)):
            return _run_locked(settings, data, out, jobs, device, cache_dir, progress, command, start, batch_models,
                               shard, estimate)
    finally:
        if fresh:  # a study refused (or estimated) before it wrote anything leaves no folder behind
            remove_if_only_locks(out)


def _run_locked(settings, data, out, jobs, device, cache_dir, progress, command, start, batch_models, shard,
                estimate) -> dict:
    size = {} if settings.size is None else {"size": settings.size}  # None: a cache of any size will do
    cohort = load_cohort(data, cache_dir=cache_dir, progress=progress, **size)
    if len(cohort) <= settings.test_size:
        raise ValueError(f"--data {data}: {len(cohort)} cases cannot hold a test set of {settings.test_size} plus training cases")
    if tuple(cohort.modalities) != settings.modalities:
        raise ValueError(f"--data {data}: modalities {', '.join(cohort.modalities)}, but the experiment's settings were "
                         f"made for {', '.join(settings.modalities)} (make them with the data's names: "
                         "hamfast.experiments.study.dataset_names)")
    side = int(min(cohort.images.shape[2:]))
    native = "" if settings.size is not None else ", the data's own size"
    check_network_fits(side, settings.widths, settings.kernel_size, option=f"--data {data} ({side} px slices{native})")
    # Every worker holds a copy of the cohort and trains one model; this process holds the cohort too.
    workers = max(1, min(jobs, settings.runs * len(settings.completeness) * len(settings.methods)))
    per_worker = training_memory(side, settings.widths, settings.kernel_size, settings.batch_size, settings.methods)
    if device.startswith("cuda"):
        check_memory(per_worker, f"training at {side} px with --batch-size {settings.batch_size}", device)
        per_worker = 0
    check_memory((workers + (workers > 1)) * cohort.images.nbytes + workers * per_worker,
                 f"{workers} worker(s) with {len(cohort)} cases of {side} px", "cpu")

    from hamfast.experiments import batching

    samples = Samples.from_cohort(cohort)
    test_cohort = None if settings.test_data is None else _load_test_cohort(settings, cohort, cache_dir, progress, size)
    if test_cohort is not None:
        samples.test = Samples.from_cohort(test_cohort)
    _check_testable(settings, cohort if test_cohort is None else test_cohort, settings.test_data or data)
    if batch_models == "auto":
        batch_models = batching.default_batch_models(settings, int(cohort.images.shape[-1]), device)
        log.info("training up to %d models at once (--batch-models auto on %s)", batch_models, device)
    if estimate:
        _, pending = pending_tasks(settings, out, shard)
        found = batching.estimate_study(settings, samples, pending, batch_models=max(2, int(batch_models)), device=device)
        return {"results": [], "summary": batching.format_estimate(found, settings), "files": [], "estimate": found}
    done_before = len(finished_tasks(out))
    results = run_experiment(settings, samples, out, jobs=jobs, device=device, progress=progress,
                             batch_models=int(batch_models), shard=shard)
    if shard is not None:
        summary = (f"shard {shard[0]}/{shard[1]}: {len(results)} task files in {out / 'tasks'}; rerun the same command "
                   "without --shard (after every shard) to merge them and write the reports")
        return {"results": results, "summary": summary, "files": []}
    files = [out / "runs.csv", out / "predictions.csv", out / "summary.md", out / "comparisons.csv"]
    # Every report is made before any is written, so results that cannot be reported replace none.
    runs, predictions = run_rows(results), prediction_rows(results, cohort.classes)
    comparisons = comparison_rows(settings, results)
    context = {
        "command": command,
        "data": str(data),
        "cohort": cohort_description(cohort),
        "test_cohort": None if test_cohort is None else cohort_description(test_cohort),
        "wall_seconds": time.perf_counter() - start,
        "tasks_run": len(results) - min(done_before, len(results)),
    }
    summary = summary_markdown(settings, results, context, comparisons)
    write_csv(files[0], runs, RUN_COLUMNS)
    write_csv(files[1], predictions, prediction_columns(cohort.classes))
    write_csv(files[3], comparisons, COMPARISON_COLUMNS)
    write_text_atomic(files[2], summary)
    files += write_plots(settings, results, out)
    log.info("wrote %s", ", ".join(str(f) for f in files))
    return {"results": results, "summary": summary, "files": files}
