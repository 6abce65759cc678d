"""Figures (matplotlib, an optional dependency, imported on use).

* ``accuracy_vs_completeness.png`` (Experiment A, like the paper's Fig. 2b): mean balanced
  accuracy over runs against training-data completeness, one line per method with its 95 % t
  confidence band (clipped to [0, 1]).
* ``loss_curves.png`` (like Fig. 3b): the training loss per iteration, averaged over runs and
  smoothed with a moving average, one line per method; Experiment A gets one panel per
  completeness level. FeatImpute's loss includes its auxiliary (consistency, domain) terms.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from hamfast.experiments.config import ExperimentSettings, completeness_label
from hamfast.experiments.report import METHOD_LABELS, cell_table, num_classes, run_rows

__all__ = ["matplotlib_available", "plot_accuracy_vs_completeness", "plot_loss_curves", "write_plots", "mean_loss_curve"]

log = logging.getLogger(__name__)

COLORS = {"standard": "C0", "dropout": "C1", "featimpute": "C2", "ham": "C3", "ham-mixed": "C4", "ham-paper": "C5",
          "ham-exact": "C6", "ham-frozen": "C7", "ham-per-sample": "C8"}  # the same in every figure


def _color(method: str) -> str:
    """A method's colour: its own for the known methods, otherwise one from the rest of the cycle."""
    return COLORS.get(method, f"C{9 + sum(map(ord, method)) % 10}")


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_completeness(settings: ExperimentSettings, results: list[dict], path) -> None:
    """Write the balanced-accuracy-vs-completeness figure of Experiment A to ``path``."""
    plt = _pyplot()
    table = cell_table(run_rows(results), "balanced_accuracy")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    levels = sorted(settings.completeness, reverse=True)
    for method in settings.methods:
        points = [(100 * c, table[completeness_label(c), method]) for c in levels if (completeness_label(c), method) in table]
        if not points:
            continue
        x = np.array([p[0] for p in points])
        mean = np.array([p[1]["mean"] for p in points])
        (line,) = ax.plot(x, mean, marker="o", color=_color(method), label=METHOD_LABELS[method])
        low = np.array([p[1]["low"] for p in points])
        high = np.array([p[1]["high"] for p in points])
        if not np.isnan(low).all():
            # Balanced accuracy lies in [0, 1]; a t interval of few runs can reach past it.
            ax.fill_between(x, np.clip(low, 0, 1), np.clip(high, 0, 1), color=line.get_color(), alpha=0.2, linewidth=0)
    runs = len({r["run"] for r in results})
    ax.set_xlabel("completeness of the training data (%)")
    ax.set_ylabel("balanced accuracy (complete test set)")
    ax.set_title(f"Experiment A: mean of {runs} run(s), 95% CI")
    ax.invert_xaxis()  # from complete to sparse, as completeness drops
    ax.set_ylim(0, 1)
    if num_classes(results):
        ax.axhline(1 / num_classes(results), color="grey", linestyle=":", linewidth=1, label="chance")
    ax.legend(frameon=False, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def mean_loss_curve(losses: list[list[float]], window: int) -> np.ndarray:
    """Mean over runs of loss histories of possibly different lengths, then a moving average.

    Args:
        losses: per run, the loss of each iteration.
        window: moving-average width in iterations (1: none). Each point averages the runs still
            training at that iteration, and the window is shortened at the start.

    Returns:
        float [max length].
    """
    length = max(len(loss) for loss in losses)
    padded = np.full((len(losses), length), np.nan)
    for i, loss in enumerate(losses):
        padded[i, : len(loss)] = loss
    mean = np.nanmean(padded, axis=0)
    cumulative = np.concatenate([[0.0], np.cumsum(mean)])
    ends = np.arange(1, length + 1)
    starts = np.maximum(ends - window, 0)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def plot_loss_curves(settings: ExperimentSettings, results: list[dict], path) -> None:
    """Write the training-loss figure to ``path`` (A: one panel per completeness level)."""
    plt = _pyplot()
    levels = settings.completeness if settings.experiment == "a" else settings.completeness[:1]
    fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels), 3.6), sharey=True, squeeze=False)
    for ax, level in zip(axes[0], levels):
        for method in settings.methods:
            losses = [r["loss"] for r in results if r["method"] == method and r["completeness"] == level and r["loss"]]
            if not losses:
                continue
            window = max(1, max(len(loss) for loss in losses) // 20)
            curve = mean_loss_curve(losses, window)
            ax.plot(np.arange(1, curve.size + 1), curve, color=_color(method), label=METHOD_LABELS[method], linewidth=1.2)
        ax.set_title(f"{completeness_label(level)} complete training data")
        ax.set_xlabel("iteration")
    axes[0][0].set_ylabel("training loss (mean over runs, smoothed)")
    axes[0][-1].legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def write_plots(settings: ExperimentSettings, results: list[dict], out) -> list[Path]:
    """Write the experiment's figures into ``out``; without matplotlib, log that and write none.

    Returns:
        The files written.
    """
    if not results:
        return []
    if not matplotlib_available():
        log.warning("matplotlib is not installed: skipping the plots (pip install matplotlib, or hamfast[plots])")
        return []
    out = Path(out)
    written = []
    if settings.experiment == "a":
        path = out / "accuracy_vs_completeness.png"
        plot_accuracy_vs_completeness(settings, results, path)
        written.append(path)
    path = out / "loss_curves.png"
    plot_loss_curves(settings, results, path)
    written.append(path)
    return written
