"""The experiment's outputs: ``runs.csv``, ``predictions.csv`` and ``summary.md``.

* ``runs.csv``: one row per run x method x condition with ``experiment, method, condition, run,
  seed, iterations, balanced_accuracy, sensitivity, specificity, precision``. The condition is the
  training completeness (``"75%"``, Experiment A) or the test subset (``"t1+t2"``, Experiment B).
* ``predictions.csv``: one row per run x method x condition x test case with ``experiment, method,
  condition, run, seed, id, y_true, y_pred, prob_0, prob_1, prob_2`` (classes 0 short, 1 mid,
  2 long survival), enough to recompute every metric.
* ``summary.md``: the paper's tables (1a/1b for A, 2 for B): per cell the mean over runs, its 95 %
  t confidence interval (clipped to [0, 1]) and the significance marks, then the settings used.
  Table 1's marks are those of :func:`hamfast.experiments.stats.significance_marks` (``*`` better
  than Standard, ``×`` better than both Dropout and FeatImpute); Table 2's are the paper's Table 2
  marks, :func:`table2_marks`: ``*`` better than Dropout and ``⊗`` better than FeatImpute, each on
  its own.

Every file is written atomically (``hamfast.files``).
"""
from __future__ import annotations

import csv
import io
import platform
from collections import defaultdict
from typing import Iterable, Optional

import numpy as np

from hamfast.experiments import stats
from hamfast.experiments.config import ExperimentSettings, completeness_label, subset_label
from hamfast.files import write_text_atomic

__all__ = [
    "METRICS",
    "RUN_COLUMNS",
    "PREDICTION_COLUMNS",
    "run_rows",
    "prediction_rows",
    "write_csv",
    "cell_table",
    "table2_marks",
    "MARK_OVER_DROPOUT",
    "MARK_OVER_FEATIMPUTE",
    "summary_markdown",
]

METRICS = ("balanced_accuracy", "sensitivity", "specificity", "precision")
METRIC_LABELS = {"balanced_accuracy": "BAcc", "sensitivity": "Sens", "specificity": "Spec", "precision": "Prec"}
METHOD_LABELS = {"standard": "Standard", "dropout": "Dropout", "featimpute": "FeatImpute", "ham": "HAM"}
MARK_OVER_DROPOUT = "*"
MARK_OVER_FEATIMPUTE = "⊗"
RUN_COLUMNS = ("experiment", "method", "condition", "run", "seed", "iterations") + METRICS
PREDICTION_COLUMNS = ("experiment", "method", "condition", "run", "seed", "id", "y_true", "y_pred", "prob_0", "prob_1", "prob_2")


def run_rows(results: Iterable[dict]) -> list[dict]:
    """The ``runs.csv`` rows of task results (``hamfast.experiments.runner.run_task``)."""
    rows = []
    for result in results:
        for evaluation in result["evaluations"]:
            row = {k: result[k] for k in ("experiment", "method", "run", "seed", "iterations")}
            row["condition"] = evaluation["condition"]
            row.update(evaluation["metrics"])
            rows.append(row)
    return rows


def prediction_rows(results: Iterable[dict]) -> list[dict]:
    """The ``predictions.csv`` rows: one per test case of every evaluation."""
    rows = []
    for result in results:
        for evaluation in result["evaluations"]:
            for case, truth, pred, probs in zip(evaluation["ids"], evaluation["y_true"], evaluation["y_pred"], evaluation["probs"]):
                row = {k: result[k] for k in ("experiment", "method", "run", "seed")}
                row.update(condition=evaluation["condition"], id=case, y_true=truth, y_pred=pred)
                row.update({f"prob_{c}": p for c, p in enumerate(probs)})
                rows.append(row)
    return rows


def write_csv(path, rows: list[dict], columns: Optional[Iterable[str]] = None) -> None:
    """Write ``rows`` as CSV with ``columns`` (default: the first row's keys), atomically."""
    columns = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def table2_marks(scores: dict, alpha: float = stats.ALPHA) -> dict:
    """The marks of the paper's Table 2 for one condition: method -> ``"*"`` when it is
    significantly better than Dropout, ``"⊗"`` when better than FeatImpute, both (``"*⊗"``) or
    ``""``; each baseline is tested on its own (paired Wilcoxon, :func:`stats.is_better`), and a
    method is not compared with itself or with a baseline that is missing.

    Args:
        scores: method name -> scores [n] of the same runs, in the same order.
        alpha: significance level.
    """
    marks = {}
    for method, values in scores.items():
        mark = ""
        for baseline, symbol in (("dropout", MARK_OVER_DROPOUT), ("featimpute", MARK_OVER_FEATIMPUTE)):
            if method != baseline and baseline in scores and stats.is_better(values, scores[baseline], alpha):
                mark += symbol
        marks[method] = mark
    return marks


def cell_table(rows: list[dict], metric: str, alpha: float = stats.ALPHA, marks=None) -> dict:
    """Per (condition, method): mean, 95 % CI and significance marks of ``metric`` over runs.

    Methods are compared on the runs every method of the condition has finished (paired by run),
    with ``marks(scores, alpha)`` (default :func:`stats.significance_marks`, Table 1's marks;
    :func:`table2_marks` for Table 2).

    Returns:
        ``{(condition, method): {"mean", "low", "high", "n", "mark"}}``.
    """
    by_condition = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        by_condition[row["condition"]][row["method"]][int(row["run"])] = float(row[metric])
    table = {}
    for condition, methods in by_condition.items():
        shared = sorted(set.intersection(*(set(runs) for runs in methods.values())))
        paired = {m: [runs[r] for r in shared] for m, runs in methods.items()}
        found = (marks or stats.significance_marks)(paired, alpha) if shared else {}
        for method, runs in methods.items():
            mean, low, high = stats.mean_ci(list(runs.values()), bounds=stats.METRIC_BOUNDS)
            table[condition, method] = {"mean": mean, "low": low, "high": high, "n": len(runs), "mark": found.get(method, "")}
    return table


def _cell(entry: Optional[dict]) -> str:
    if entry is None:
        return "–"
    ci = "" if np.isnan(entry["low"]) else f" [{entry['low']:.3f}, {entry['high']:.3f}]"
    return f"{entry['mean']:.3f}{ci}{entry['mark']}"


def _markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _methods_in(settings: ExperimentSettings, rows: list[dict]) -> list[str]:
    present = {row["method"] for row in rows}
    return [m for m in settings.methods if m in present]


def _tables_a(settings: ExperimentSettings, rows: list[dict]) -> str:
    methods = _methods_in(settings, rows)
    conditions = [completeness_label(c) for c in settings.completeness]
    tables = {metric: cell_table(rows, metric) for metric in METRICS}
    ba = tables["balanced_accuracy"]
    parts = [
        "### Table 1a: balanced accuracy on the complete test set, by training-data completeness",
        "",
        _markdown_table(
            ["Method"] + conditions,
            [[METHOD_LABELS[m]] + [_cell(ba.get((c, m))) for c in conditions] for m in methods],
        ),
        "",
        "### Table 1b: sensitivity, specificity and precision (means over classes)",
        "",
        _markdown_table(
            ["Completeness", "Method"] + [METRIC_LABELS[k] for k in METRICS[1:]],
            [[c, METHOD_LABELS[m]] + [_cell(tables[k].get((c, m))) for k in METRICS[1:]] for c in conditions for m in methods],
        ),
    ]
    return "\n".join(parts)


def _tables_b(settings: ExperimentSettings, rows: list[dict]) -> str:
    methods = _methods_in(settings, rows)
    subsets = [s for s in settings.subsets if any(row["condition"] == s for row in rows)]
    tables = {metric: cell_table(rows, metric, marks=table2_marks) for metric in METRICS}
    ba = tables["balanced_accuracy"]
    completeness = completeness_label(settings.completeness[0])
    parts = [
        f"### Table 2: balanced accuracy by test modality subset (trained at {completeness} completeness)",
        "",
        _markdown_table(
            ["Test modalities"] + [METHOD_LABELS[m] for m in methods],
            [[subset_label(s)] + [_cell(ba.get((s, m))) for m in methods] for s in subsets],
        ),
        "",
        "### Table 2b: sensitivity, specificity and precision (means over classes)",
        "",
        _markdown_table(
            ["Test modalities", "Method"] + [METRIC_LABELS[k] for k in METRICS[1:]],
            [[subset_label(s), METHOD_LABELS[m]] + [_cell(tables[k].get((s, m))) for k in METRICS[1:]] for s in subsets for m in methods],
        ),
    ]
    return "\n".join(parts)


def _iterations_text(results: list[dict]) -> str:
    counts = np.array([r["iterations"] for r in results])
    if counts.min() == counts.max():
        return str(int(counts[0]))
    return f"median {np.median(counts):.0f} (range {counts.min()}-{counts.max()})"


def cv_cap_hits(results: list[dict]) -> tuple[int, int]:
    """``(hits, choices)``: how many cross-validated tasks chose the largest step count evaluated
    (the cap: training longer might have been better), out of the tasks with a CV record."""
    records = [r["cv"] for r in results if r.get("cv")]
    hits = sum(1 for cv in records if cv["iterations"] >= max(cv["eval_iterations"]))
    return hits, len(records)


def cv_cap_text(results: list[dict]) -> str:
    """The summary's sentence on the cap, by method."""
    hits, total = cv_cap_hits(results)
    if total == 0:
        return "no cross-validation finished yet"
    by_method = []
    for method in METHOD_LABELS:
        h, n = cv_cap_hits([r for r in results if r["method"] == method])
        if n:
            by_method.append(f"{METHOD_LABELS[method]} {h}/{n}")
    return f"{hits} of {total} CV choices hit the cap ({', '.join(by_method)})"


def failed_text(results: list[dict]) -> list[str]:
    """summary.md lines on the tasks that failed (their training diverged): named, with the
    reason, and left out of every table (no score), so a cell may hold fewer runs."""
    failed = [r for r in results if r.get("failed")]
    if not failed:
        return []
    lines = [f"> **FAILED: {len(failed)} of {len(results)} task(s) did not train (their training diverged) and "
             "have no score; they are left out of every table below, whose cells then average fewer runs:**"]
    for r in failed:
        name = f"run {r['run']}, {completeness_label(r['completeness'])}, {METHOD_LABELS.get(r['method'], r['method'])}"
        lines.append(f"> - {name}: {r['failed']}")
    return lines + [""]


def summary_markdown(settings: ExperimentSettings, results: list[dict], context: dict) -> str:
    """The ``summary.md`` text.

    Args:
        settings: the experiment.
        results: task results (``run_task`` dicts).
        context: ``data`` (path or description), ``cohort`` (text), ``command``, ``wall_seconds`` and
            ``tasks_run`` (the last invocation's), all optional: shown in the settings section.
    """
    import torch

    import hamfast

    rows = run_rows(results)
    trained = [r for r in results if not r.get("failed")]
    finished_runs = sorted({r["run"] for r in results})
    title = "Experiment A: completeness of the training data" if settings.experiment == "a" else "Experiment B: test modality subsets"
    lines = [f"# {title}", ""]
    warning = stats.few_runs_warning(len(finished_runs))
    if warning:
        lines += [f"> **Warning:** {warning}.", ""]
    lines += failed_text(results)
    if not rows:
        lines += ["No finished runs yet.", ""]
    else:
        lines += [_tables_a(settings, rows) if settings.experiment == "a" else _tables_b(settings, rows), ""]
    if settings.experiment == "a":
        legend = (f"`{stats.MARK_STANDARD}` better than Standard, `{stats.MARK_BASELINES}` better than both Dropout and "
                  "FeatImpute (Table 1's marks)")
    else:
        legend = (f"`{MARK_OVER_DROPOUT}` better than Dropout, `{MARK_OVER_FEATIMPUTE}` better than FeatImpute, each "
                  "tested on its own (the paper's Table 2 marks)")
    lines += [
        "Cells: mean over runs [95 % confidence interval of the mean, Student t, clipped to [0, 1]]. Marks: paired "
        f"two-sided Wilcoxon signed-rank test over runs, alpha {stats.ALPHA}: {legend}. Balanced accuracy is the mean "
        "recall over the three survival classes; sensitivity, specificity and precision are means over the classes.",
        "",
        "## Settings",
        "",
    ]
    if settings.stop == "cv":
        stop = (f"{settings.cv_folds}-fold cross-validation on the train set, up to {settings.iterations} iterations evaluated every "
                f"{settings.cv_every}, then retrained on the whole train set; {cv_cap_text(results)}")
    else:
        stop = f"fixed, {settings.iterations} iterations"
    devices = sorted({r["device"] for r in results})
    items = [
        ("command", f"`{context['command']}`" if context.get("command") else None),
        ("data", context.get("data")),
        ("cohort", context.get("cohort")),
        ("preset", settings.preset),
        ("runs", f"{len(finished_runs)} finished of {settings.runs} (run r: seed {settings.seed} + r)"),
        ("split", f"stratified, {settings.test_size} test cases, " + ("its own split per run" if settings.split == "per-run" else "the same split every run")),
        ("completeness", ", ".join(completeness_label(c) for c in settings.completeness)
         + ("; incomplete training samples miss exactly one modality" if settings.experiment == "a" else "; incomplete training samples miss 1 to 3 modalities")),
        ("methods", ", ".join(METHOD_LABELS[m] for m in settings.methods)),
        ("model", f"CBRTiny widths {list(settings.widths)}, kernel {settings.kernel_size}, HAM hidden width {settings.hidden}, HAM schedule {settings.schedule} (n_it {settings.n_it})"),
        ("training", f"batch {settings.batch_size}, lr {settings.lr:g}, augmentation {'on' if settings.augment else 'off'}"),
        ("normalisation", f"HAM batch norm {settings.ham_norm}; precise-BN recalibration "
         + ("on (HAM per pattern after training, the baselines per test pattern)" if settings.recalibrate else "off")),
        ("dropout masking", f"{settings.dropout_mode}" + (f", p {settings.dropout_p:g}" if settings.dropout_mode == "channel" else "")
         + f", own pattern kept with probability {settings.dropout_keep:g}"),
        ("stopping", stop),
        ("iterations trained", _iterations_text(trained) if trained else None),
        ("slice size", f"{settings.size} px" if settings.size else "the data's own"),
        ("device", ", ".join(devices) if devices else None),
        ("compute", f"{sum(r['seconds'] for r in results) / 60:.1f} min summed over tasks" if results else None),
        ("wall time", f"{context['wall_seconds'] / 60:.1f} min for the last invocation, which ran {context.get('tasks_run', '?')} of the {len(results)} tasks"
         if context.get("wall_seconds") else None),
        ("software", f"hamfast {hamfast.__version__}, torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}"),
    ]
    lines += [f"- {name}: {value}" for name, value in items if value is not None]
    return "\n".join(lines) + "\n"
