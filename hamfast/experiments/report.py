"""The experiment's outputs: ``runs.csv``, ``predictions.csv``, ``summary.md`` and ``comparisons.csv``.

* ``runs.csv``: one row per run x method x condition with ``experiment, method, condition, run,
  seed, iterations, balanced_accuracy, sensitivity, specificity, precision``. The condition is the
  training completeness (``"75%"``, Experiment A) or the test subset (``"t1+t2"``, Experiment B).
* ``predictions.csv``: one row per run x method x condition x test case with ``experiment, method,
  condition, run, seed, id, y_true, y_pred`` and ``prob_<class>`` per class of the data
  (BraTS: ``prob_short, prob_mid, prob_long``; ``y_true``/``y_pred`` are class indices in that
  order), enough to recompute every metric.
* ``summary.md``: the paper's tables (1a/1b for A, 2 for B): per cell the mean over runs, its 95 %
  t confidence interval (clipped to [0, 1]) and the significance marks.
  Table 1's marks are those of :func:`hamfast.experiments.stats.significance_marks` (``*`` better
  than Standard, ``×`` better than both Dropout and FeatImpute); Table 2's are the paper's Table 2
  marks, :func:`table2_marks`: ``*`` better than Dropout and ``⊗`` better than FeatImpute, each on
  its own. Then the pairwise differences in balanced accuracy of every two methods at every
  condition, from :func:`hamfast.experiments.stats.paired_bootstrap` (runs x test cases),
  Holm-corrected over the whole experiment (:func:`comparison_rows`), then the settings used.
* ``comparisons.csv``: those pairwise differences, one row per condition x pair of methods with
  ``COMPARISON_COLUMNS``.

Every file is written atomically (``hamfast.files``).
"""
from __future__ import annotations

import csv
import io
import platform
from collections import defaultdict
from typing import Iterable, Optional, Sequence

import numpy as np

from hamfast.experiments import stats
from hamfast.experiments.config import ExperimentSettings, completeness_label, subset_label
from hamfast.files import write_text_atomic

__all__ = [
    "METRICS",
    "RUN_COLUMNS",
    "PREDICTION_KEYS",
    "num_classes",
    "prediction_columns",
    "COMPARISON_COLUMNS",
    "METHOD_LABELS",
    "run_rows",
    "prediction_rows",
    "write_csv",
    "cell_table",
    "table2_marks",
    "MARK_OVER_DROPOUT",
    "MARK_OVER_FEATIMPUTE",
    "comparison_rows",
    "summary_markdown",
]

METRICS = ("balanced_accuracy", "sensitivity", "specificity", "precision")
METRIC_LABELS = {"balanced_accuracy": "BAcc", "sensitivity": "Sens", "specificity": "Spec", "precision": "Prec"}


class _MethodLabels(dict):
    """Method name -> label; a variant ``base-rest`` of a known method reads ``Label-rest``
    (``ham-paper`` -> ``HAM-paper``), any other unknown name as it is."""

    def __missing__(self, name: str) -> str:
        base, _, rest = str(name).partition("-")
        return f"{self[base]}-{rest}" if rest and base in self else str(name)


METHOD_LABELS = _MethodLabels({"standard": "Standard", "dropout": "Dropout", "featimpute": "FeatImpute", "ham": "HAM"})
MARK_OVER_DROPOUT = "*"
MARK_OVER_FEATIMPUTE = "⊗"
RUN_COLUMNS = ("experiment", "method", "condition", "run", "seed", "iterations") + METRICS
PREDICTION_KEYS = ("experiment", "method", "condition", "run", "seed", "id", "y_true", "y_pred")
COMPARISON_COLUMNS = ("experiment", "condition", "method_a", "method_b", "mean_a", "mean_b", "difference", "ci_low", "ci_high",
                      "p", "p_holm", "runs", "cases", "cases_per_run", "shared_cases", "replicates", "seed")


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


def prediction_columns(classes: Sequence[str]) -> tuple[str, ...]:
    """The ``predictions.csv`` columns for the data's class names."""
    return PREDICTION_KEYS + tuple(f"prob_{name}" for name in classes)


def prediction_rows(results: Iterable[dict], classes: Sequence[str]) -> list[dict]:
    """The ``predictions.csv`` rows: one per test case of every evaluation (``classes``: the C names)."""
    rows = []
    for result in results:
        for evaluation in result["evaluations"]:
            for case, truth, pred, probs in zip(evaluation["ids"], evaluation["y_true"], evaluation["y_pred"], evaluation["probs"]):
                row = {k: result[k] for k in ("experiment", "method", "run", "seed")}
                row.update(condition=evaluation["condition"], id=case, y_true=truth, y_pred=pred)
                if len(probs) != len(classes):
                    raise ValueError(f"task {result['method']} run {result['run']}: {len(probs)} class probabilities, "
                                     f"but the data has {len(classes)} classes ({', '.join(classes)})")
                row.update({f"prob_{name}": p for name, p in zip(classes, probs)})
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
    """The methods of ``rows``: those of the settings in their order, then any other (a variant
    such as ``ham-paper``) in order of appearance."""
    present = list(dict.fromkeys(row["method"] for row in rows))
    return [m for m in settings.methods if m in present] + [m for m in present if m not in settings.methods]


def _conditions_in(settings: ExperimentSettings, rows: list[dict]) -> list[str]:
    present = list(dict.fromkeys(row["condition"] for row in rows))
    return [c for c in settings.conditions() if c in present] + [c for c in present if c not in settings.conditions()]


def num_classes(results: list[dict]) -> Optional[int]:
    """C as the runner scored it (the length of the predicted probability vectors), or None."""
    sizes = {len(e["probs"][0]) for r in results for e in r["evaluations"] if e.get("probs")}
    return max(sizes) if sizes else None


def comparison_rows(settings: ExperimentSettings, results: list[dict], replicates: Optional[int] = None,
                    seed: int = 0) -> list[dict]:
    """The ``comparisons.csv`` rows: every pair of methods at every condition.

    For methods listed in the order of :func:`_methods_in`, each pair ``(a, b)`` with b listed
    before a gives ``a - b`` in mean balanced accuracy over the runs both finished, its bootstrap
    interval and p-value over runs and test cases (:func:`stats.paired_bootstrap`, one set of draws
    for the whole experiment), and ``p_holm``: Holm-adjusted over the family of every row.

    Args:
        replicates: bootstrap replicates; default :func:`stats.replicates_for` the number of rows
            (at least 2000, more for a large family, so that Holm's correction can reach alpha).
        seed: seed of the draws.

    Returns:
        Dicts with ``COMPARISON_COLUMNS``, condition by condition; none for a pair without a shared run.
    """
    rows = run_rows(results)
    methods = _methods_in(settings, rows)
    finished = defaultdict(set)
    for row in rows:
        finished[row["condition"], row["method"]].add(int(row["run"]))
    pairs = [(condition, a, b) for condition in _conditions_in(settings, rows) for i, a in enumerate(methods) for b in methods[:i]
             if finished[condition, a] & finished[condition, b]]
    draws = stats.BootstrapDraws(stats.replicates_for(len(pairs)) if replicates is None else replicates, seed)
    classes = num_classes(results)
    found = []
    for condition, method_a, method_b in pairs:
        diff = stats.paired_bootstrap(results, method_a, method_b, condition, num_classes=classes, draws=draws)
        counts = sorted(set(diff.cases_per_run))
        found.append({
            "experiment": settings.experiment, "condition": condition, "method_a": method_a, "method_b": method_b,
            "mean_a": diff.mean_a, "mean_b": diff.mean_b, "difference": diff.difference,
            "ci_low": diff.low, "ci_high": diff.high, "p": diff.p, "runs": diff.runs, "cases": diff.cases,
            "cases_per_run": str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}",
            "shared_cases": diff.shared_cases, "replicates": diff.replicates, "seed": seed,
        })
    for row, adjusted in zip(found, stats.holm([row["p"] for row in found])):
        row["p_holm"] = float(adjusted)
    return [{k: row[k] for k in COMPARISON_COLUMNS} for row in found]


def _p_text(p: float, replicates: int) -> str:
    floor = 1 / (replicates + 1)
    return f"≤ {floor:.2g}" if p <= floor * (1 + 1e-9) else f"{p:.3g}"


def _comparisons_section(settings: ExperimentSettings, comparisons: list[dict]) -> str:
    title = "## Pairwise differences (bootstrap over runs and test cases, Holm-corrected)"
    if not comparisons:
        return f"{title}\n\nNo two methods have a finished run in common yet."
    body = []
    for row in comparisons:
        cases = str(row["cases"]) if row["shared_cases"] else f"{row['cases_per_run']} per run, {row['cases']} distinct"
        condition = row["condition"] if settings.experiment == "a" else subset_label(row["condition"], settings.modalities)
        body.append([
            condition, f"{METHOD_LABELS[row['method_a']]} − {METHOD_LABELS[row['method_b']]}",
            f"{row['difference']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]",
            _p_text(row["p"], row["replicates"]), _p_text(row["p_holm"], row["replicates"]), str(row["runs"]), cases,
        ])
    header = ["Completeness" if settings.experiment == "a" else "Test modalities", "A − B", "BAcc difference [95 % CI]", "p",
              "p (Holm)", "Runs", "Test cases"]
    replicates = comparisons[0]["replicates"]
    method = (
        "Each row: mean balanced accuracy of A minus that of B over the runs where both finished, paired by run. The "
        f"interval is the 2.5-97.5 % percentile interval of {replicates} bootstrap replicates (seed {comparisons[0]['seed']}), "
        "each resampling the runs with replacement and the test cases with replacement: when every run was tested on the "
        "same cases, one case draw serves every run and both methods, otherwise each run's cases are resampled within that "
        "run. The interval thus covers both the spread between runs (split, missingness draw, seed) and the finite test "
        "set, which the Wilcoxon marks above ignore. p: two-sided bootstrap p-value, 2 x the smaller share of replicates "
        f"<= 0 or >= 0, at least 1/({replicates} + 1). p (Holm): Holm-Bonferroni step-down adjusted over the family of all "
        f"{len(comparisons)} rows (every pair of methods at every condition of this experiment); a difference is "
        f"significant at alpha {stats.ALPHA} when it is below {stats.ALPHA}. The replicates are at least "
        f"{stats.BOOTSTRAP_REPLICATES} and at least 4 x rows / alpha, so that the smallest adjusted p the bootstrap can give, "
        f"rows/(replicates + 1), stays below alpha/4. The rows are also in comparisons.csv."
    )
    return "\n".join([title, "", _markdown_table(header, body), "", method])


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
            [[subset_label(s, settings.modalities)] + [_cell(ba.get((s, m))) for m in methods] for s in subsets],
        ),
        "",
        "### Table 2b: sensitivity, specificity and precision (means over classes)",
        "",
        _markdown_table(
            ["Test modalities", "Method"] + [METRIC_LABELS[k] for k in METRICS[1:]],
            [[subset_label(s, settings.modalities), METHOD_LABELS[m]] + [_cell(tables[k].get((s, m))) for k in METRICS[1:]] for s in subsets for m in methods],
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
    for method in dict.fromkeys(r["method"] for r in results):
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


def _diagnostics_lines(settings: ExperimentSettings, results: list[dict]) -> list[str]:
    """HAM's hypernetwork per method: alive hidden units and distinct task models, at init and after training."""
    rows = []
    for method in settings.methods:
        found = [r["diagnostics"] for r in results if r["method"] == method and r.get("diagnostics")]
        if not found:
            continue

        def mean(stage: str, key: str) -> float:
            return float(np.mean([d[stage][key] if key != "alive_units" else min(d[stage][key]) for d in found]))

        patterns, hidden = found[0]["final"]["patterns"], found[0]["final"]["hidden"]
        rows.append([METHOD_LABELS[method], str(len(found)),
                     f"{mean('initial', 'alive_units'):.1f} -> {mean('final', 'alive_units'):.1f} of {hidden}",
                     f"{mean('initial', 'distinct_models'):.1f} -> {mean('final', 'distinct_models'):.1f} of {patterns}"])
    if not rows:
        return []
    return [
        "### HAM's hypernetwork",
        "",
        _markdown_table(["Method", "Tasks", "Alive units, narrowest hidden layer (init -> trained)",
                         "Distinct task models (init -> trained)"], rows),
        "",
        "Means over tasks. A hidden unit of h is alive when its ReLU passes a positive value for at least one pattern; "
        "patterns with equal last hidden activations get the same task model exactly. HAM-frozen has one model by "
        "construction.",
        "",
    ]


def summary_markdown(settings: ExperimentSettings, results: list[dict], context: dict,
                     comparisons: Optional[list[dict]] = None) -> str:
    """The ``summary.md`` text.

    Args:
        settings: the experiment.
        results: task results (``run_task`` dicts).
        context: ``data`` (path or description), ``cohort`` (text), ``command``, ``wall_seconds`` and
            ``tasks_run`` (the last invocation's), all optional: shown in the settings section.
        comparisons: :func:`comparison_rows` of the same results, when already computed (for
            ``comparisons.csv``); computed here when None.
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
    ]
    if rows:
        lines += [_comparisons_section(settings, comparison_rows(settings, results) if comparisons is None else comparisons), ""]
    lines += _diagnostics_lines(settings, results)
    lines += [
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
        ("test set", f"--test-data {settings.test_data}: {context.get('test_cohort')}, the same cases for every run"
         if settings.test_data else f"{settings.test_size} held-out cases per run ({settings.split} split)"),
        ("preset", settings.preset),
        ("runs", f"{len(finished_runs)} finished of {settings.runs} (run r: seed {settings.seed} + r)"),
        ("split", f"stratified, {settings.test_size} test cases, " + ("its own split per run" if settings.split == "per-run" else "the same split every run")),
        ("completeness", ", ".join(completeness_label(c) for c in settings.completeness)
         + ("; incomplete training samples miss exactly one modality" if settings.experiment == "a" else f"; incomplete training samples miss 1 to {len(settings.modalities) - 1} modalities")),
        ("methods", ", ".join(METHOD_LABELS[m] for m in settings.methods)),
        ("model", f"CBRTiny widths {list(settings.widths)}, kernel {settings.kernel_size}, HAM hidden width {settings.hidden}, HAM schedule {settings.schedule} (n_it {settings.n_it}; mixed batches of {settings.mixed_groups} pattern groups)"),
        ("training", f"batch {settings.batch_size}, lr {settings.lr:g}, augmentation {'on' if settings.augment else 'off'}"),
        ("normalisation", f"HAM batch norm {settings.ham_norm}; HAM's precise-BN recalibration {'on' if settings.recalibrate else 'off'}; "
         f"the baselines' recalibration per test pattern {'on' if settings.recalibrate_baselines else 'off'}"),
        ("masking (Dropout and HAM's mixed schedule)", f"{settings.dropout_mode}" + (f", p {settings.dropout_p:g}" if settings.dropout_mode == "channel" else "")
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
