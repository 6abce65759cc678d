"""Experiments A and B of the paper, their statistics and reports.

Modules (import them directly; this package imports none of them, so ``hamfast.cli`` stays light):

* ``config``: :class:`~hamfast.experiments.config.ExperimentSettings`, the ``quick`` and ``paper``
  presets, modality-subset names;
* ``tasks``: the plan: tasks (run x completeness x method), shards (``--shard``), how one task trains and is evaluated;
* ``runner``: the one executor: resumable, task by task, in worker processes or batched, as each study decides;
* ``workers``: the worker processes (``--jobs``);
* ``batching``: tasks trained many models at once (``--batch-models``), the cost estimate (``--estimate``);
* ``stopping``: the number of iterations chosen by k-fold cross-validation;
* ``stats``: t confidence intervals, paired Wilcoxon tests, the paper's significance marks, the
  runs x test cases bootstrap and Holm's correction;
* ``report``: ``runs.csv``, ``predictions.csv``, ``summary.md``, ``comparisons.csv``;
* ``plots``: ``accuracy_vs_completeness.png``, ``loss_curves.png`` (matplotlib, optional);
* ``study``: one experiment from data to report (what ``hamfast experiment`` runs);
* ``files``: atomic writes.
"""
