"""Experiments A and B of the paper, their statistics and reports.

Modules (import them directly; this package imports none of them, so ``hamfast.cli`` stays light):

* ``config``: :class:`~hamfast.experiments.config.ExperimentSettings`, the ``quick`` and ``paper``
  presets, modality-subset names;
* ``runner``: tasks (run x completeness x method), resumable execution, parallel jobs;
* ``stopping``: the number of iterations chosen by k-fold cross-validation;
* ``batching``: tasks trained many models at once (``--batch-models``), shards (``--shard``), the cost estimate (``--estimate``);
* ``stats``: t confidence intervals, paired Wilcoxon tests, the paper's significance marks;
* ``report``: ``runs.csv``, ``predictions.csv``, ``summary.md``;
* ``plots``: ``accuracy_vs_completeness.png``, ``loss_curves.png`` (matplotlib, optional);
* ``study``: one experiment from data to report (what ``hamfast experiment`` runs);
* ``files``: atomic writes.
"""
