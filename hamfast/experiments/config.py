"""Experiment settings and the ``quick`` and ``paper`` presets.

Experiment A (paper Sec. 3.2, Table 1): the training set is made incomplete at several
completeness levels (the fraction of training samples that keep all four modalities; every other
sample misses exactly one); all methods train on the same data and are tested on the complete test
set. Experiment B (Table 2): 25 % completeness, incomplete samples miss 1 to 3 modalities; each
method is tested on the test set restricted to each modality subset.

Seeds. Run ``r`` (0-based) has seed ``seed + r``. It seeds the stratified train/test split (with
``split="per-run"``, the quick preset's; ``split="fixed"``, the paper's protocol and preset, uses
``seed`` for every run: one 177/36 split), the missingness
draw (seed ``1000 * run_seed + round(100 * completeness)``), the cross-validation folds and the
training of every method. So the methods of a run see exactly the same data, and runs differ in
split, missingness and initialisation.

Presets (every field can be overridden):

* ``quick``: CBRTiny widths (16, 32, 32, 64), 96 px slices, 200 iterations without
  cross-validation (``stop="fixed"``), 3 runs, HAM with the ``mixed`` schedule (per-sample
  patterns: in a few hundred steps the paper's schedule, one pattern for 10 steps among up to 15,
  has barely started to learn); sized for a 2-core CPU.
* ``paper``: the paper's protocol (docs/paper.md): full widths (64, 128, 256, 512), slices
  resized to 128 px after cropping to the brain (any BraTS-like input works, including the
  synthetic cohort at its default shape), one fixed stratified split for all 30 runs,
  iterations chosen by 5-fold cross-validation (``stop="cv"``) among 100, 200, ..., 3000, batch
  16, lr 1e-4, HAM with the paper's schedule; meant for a GPU.

Both presets keep HAM's per-pattern batch norm and its precise-BN recalibration (the baselines
keep their trained statistics, as in the paper: ``recalibrate_baselines`` off), one masking
distribution for Dropout and HAM's mixed schedule (each modality dropped with p 0.5: every pattern
equally likely), and HAM's mixed batches made of 4 pattern groups; ``ham_norm``, ``recalibrate``,
``recalibrate_baselines``, ``dropout_*`` and ``mixed_groups`` switch them for ablations.

Methods. Besides the four methods (``hamfast.models.METHODS``; ``"ham"`` trains with the settings'
``schedule``) an experiment may compare HAM variants side by side (:data:`METHOD_VARIANTS`):
``ham-mixed``, ``ham-paper`` and ``ham-exact`` fix the schedule (``mixed``, ``paper``,
``paper-exact``), ``ham-per-sample`` is the mixed schedule with a pattern per sample
(``mixed_groups=0``, hamfast's earlier mixed batches), ``ham-frozen`` is the frozen-hypernetwork
control (the settings' schedule).

Test set. By default each run tests on the ``test_size`` cases its split holds out. With
``test_data`` (a second cohort from the same source, e.g. ``hamfast synth --seed 1``), every run
tests on all of that cohort instead; the split still decides the training cases, so the training
set is the same as without it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from hamfast.checks import check_network_fits
from hamfast.names import check_modality_names
from hamfast.models import METHODS
from hamfast.models.featimpute import SHARED_INPUTS
from hamfast.training.trainer import PRECISIONS
from hamfast.patterns import NAMES, pattern_name

# Experiment-level HAM variants: name -> the TrainConfig fields it fixes (method "ham").
METHOD_VARIANTS = {
    "ham-mixed": {"schedule": "mixed"},
    "ham-per-sample": {"schedule": "mixed", "mixed_groups": 0},
    "ham-paper": {"schedule": "paper"},
    "ham-exact": {"schedule": "paper-exact"},
    "ham-frozen": {"ham_frozen": True},
}
EXPERIMENT_METHODS = METHODS + tuple(METHOD_VARIANTS)

__all__ = [
    "EXPERIMENTS",
    "EXPERIMENT_METHODS",
    "METHOD_VARIANTS",
    "base_method",
    "PRESETS",
    "STOP_RULES",
    "SPLITS",
    "HAM_NORMS",
    "DROPOUT_MODES",
    "COMPLETENESS_LEVELS",
    "PAPER_SUBSETS",
    "ALL_SUBSETS",
    "complete_subset",
    "all_subsets",
    "default_subsets",
    "parse_subsets",
    "DEMO_OVERRIDES",
    "ExperimentSettings",
    "make_settings",
    "parse_subset",
    "subset_label",
    "completeness_label",
]

EXPERIMENTS = ("a", "b")
HAM_NORMS = ("per-pattern", "shared")
DROPOUT_MODES = ("channel", "subset")
STOP_RULES = ("cv", "fixed")
SPLITS = ("per-run", "fixed")
COMPLETENESS_LEVELS = (1.0, 0.75, 0.5, 0.25)
COMPLETE = "t1+t1ce+t2+flair"  # BraTS's complete set; any dataset's: complete_subset(modalities)
# Table 2's rows, in the paper's order (BraTS only).
PAPER_SUBSETS = ("t1+t2", "t1+t1ce", "t1+flair", "t2+flair", "t1+t1ce+t2", "t1+t2+flair", COMPLETE)
ALL_SUBSETS = tuple(pattern_name(code) for code in range(1, 2 ** len(NAMES)))
_DISPLAY = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}  # the paper's spelling of BraTS's names

_COMMON = dict(
    seed=0,
    split="per-run",
    test_size=36,
    hidden=4,
    kernel_size=5,
    batch_size=16,
    lr=1e-4,
    augment=True,
    n_it=10,
    cv_folds=5,
    ham_norm="per-pattern",
    recalibrate=True,
    recalibrate_baselines=False,
    dropout_mode="channel",
    dropout_p=0.5,
    dropout_keep=0.0,
    mixed_groups=4,
    featimpute_shared="stacked",
)
PRESETS = {
    "quick": dict(_COMMON, runs=3, widths=(16, 32, 32, 64), size=96, stop="fixed", iterations=200, cv_every=50, schedule="mixed"),
    "paper": dict(_COMMON, runs=30, widths=(64, 128, 256, 512), size=128, split="fixed", stop="cv", iterations=3000, cv_every=100,
                  schedule="paper"),
}
# `hamfast demo`: the quick preset made smaller still, to finish in a few minutes on 2 CPU cores:
# 64 px slices with 3x3 kernels (the smallest input for 4 such blocks is 61 px) and no augmentation
# (on a CPU the per-sample MONAI transforms cost as much as a narrow network's step).
DEMO_OVERRIDES = dict(runs=2, widths=(8, 16, 16, 32), iterations=150, size=64, kernel_size=3, augment=False)


@dataclass
class ExperimentSettings:
    """Everything that defines an experiment's results (not how it is executed: jobs, device).

    Attributes:
        experiment: ``"a"`` or ``"b"``.
        preset: the preset the settings started from (a label; the fields below are what count).
        runs: number of runs (run r has seed ``seed + r``).
        methods: methods compared: ``hamfast.models.METHODS`` and :data:`METHOD_VARIANTS` names.
        completeness: A: the completeness levels (fractions in (0, 1]); B: one level.
        subsets: test modality subsets (``"t1+t2"``, ...: names of ``modalities`` joined by ``+``,
            in channel order); A: the complete set only.
        seed: base seed.
        split: ``"per-run"`` (each run its own stratified split) or ``"fixed"``.
        test_size: test cases per split (stratified).
        test_data: None, or the folder of a second cohort every run tests on instead of its
            split's held-out cases (a label: the study reads it; see the module).
        size: slice side in pixels when reading a BraTS folder (None: the data's default).
        widths, hidden, kernel_size, batch_size, lr, schedule, augment, n_it, ham_norm,
            recalibrate, recalibrate_baselines, dropout_mode, dropout_p, dropout_keep,
            mixed_groups, featimpute_shared, precision: training (``hamfast.training.TrainConfig``; ``precision`` is
            ``"fp32"``, ``"tf32"`` or ``"bf16"``).
        modalities: the data's M modality names, in channel order (BraTS's by default; a study
            takes them from its data, :func:`hamfast.experiments.study.dataset_names`).
        stop: ``"fixed"``: train ``iterations`` steps; ``"cv"``: choose the step count up to
            ``iterations`` by ``cv_folds``-fold cross-validation on the train set, evaluated every
            ``cv_every`` steps, then retrain on the whole train set.
    """

    experiment: str
    preset: str
    runs: int
    methods: tuple[str, ...]
    completeness: tuple[float, ...]
    subsets: tuple[str, ...]
    widths: tuple[int, ...]
    size: Optional[int]
    stop: str
    iterations: int
    cv_every: int
    seed: int = 0
    split: str = "per-run"
    test_size: int = 36
    hidden: int = 4
    kernel_size: int = 5
    batch_size: int = 16
    lr: float = 1e-4
    schedule: str = "paper"
    augment: bool = True
    n_it: int = 10
    cv_folds: int = 5
    ham_norm: str = "per-pattern"
    recalibrate: bool = True
    dropout_mode: str = "channel"
    dropout_p: float = 0.5
    dropout_keep: float = 0.0
    precision: str = "fp32"
    recalibrate_baselines: bool = False
    mixed_groups: int = 4
    test_data: Optional[str] = None
    featimpute_shared: str = "stacked"
    modalities: tuple[str, ...] = NAMES

    def __post_init__(self):
        self.methods = tuple(self.methods)
        self.completeness = tuple(float(c) for c in self.completeness)
        self.modalities = check_modality_names(self.modalities, where="experiment modalities", least=2)
        self.subsets = tuple(parse_subset(s, self.modalities) for s in self.subsets)
        self.widths = tuple(int(w) for w in self.widths)
        _check(self.experiment in EXPERIMENTS, f"experiment must be one of {EXPERIMENTS}, got {self.experiment!r}")
        _check(self.preset in PRESETS, f"preset must be one of {tuple(PRESETS)}, got {self.preset!r}")
        _check(self.runs >= 1, f"runs must be >= 1, got {self.runs}")
        _check(len(self.methods) > 0, "methods must not be empty")
        for method in self.methods:
            _check(method in EXPERIMENT_METHODS, f"method must be one of {EXPERIMENT_METHODS}, got {method!r}")
        _check(len(set(self.methods)) == len(self.methods), f"methods repeat: {self.methods}")
        _check(len(self.completeness) > 0, "completeness must not be empty")
        for c in self.completeness:
            _check(0 < c <= 1, f"completeness must lie in (0, 1], got {c}")
        labels = [completeness_label(c) for c in self.completeness]
        _check(len(set(labels)) == len(labels), f"completeness levels repeat (to the percent): {labels}")
        _check(len(set(self.subsets)) == len(self.subsets), f"subsets repeat: {self.subsets}")
        if self.experiment == "a":
            _check(self.subsets == (complete_subset(self.modalities),),
                   f"experiment a tests on the complete set only, got subsets {self.subsets}")
        if self.experiment == "b":
            _check(len(self.completeness) == 1, f"experiment b trains at one completeness, got {self.completeness}")
        _check(len(self.subsets) > 0, "subsets must not be empty")
        _check(self.stop in STOP_RULES, f"stop must be one of {STOP_RULES}, got {self.stop!r}")
        _check(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        _check(self.split in SPLITS, f"split must be one of {SPLITS}, got {self.split!r}")
        for name in ("iterations", "cv_every", "test_size", "batch_size", "cv_folds", "n_it"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _check(self.stop != "cv" or self.cv_folds >= 2, f"cv_folds must be >= 2 for stop='cv', got {self.cv_folds}")
        _check(self.size is None or self.size >= 1, f"size must be a positive pixel count, got {self.size}")
        _check(self.ham_norm in HAM_NORMS, f"ham_norm must be one of {HAM_NORMS}, got {self.ham_norm!r}")
        _check(self.dropout_mode in DROPOUT_MODES, f"dropout_mode must be one of {DROPOUT_MODES}, got {self.dropout_mode!r}")
        _check(0 <= self.dropout_p < 1, f"dropout_p must lie in [0, 1), got {self.dropout_p}")
        _check(0 <= self.dropout_keep <= 1, f"dropout_keep must lie in [0, 1], got {self.dropout_keep}")
        _check(self.mixed_groups >= 0, f"mixed_groups must be >= 0, got {self.mixed_groups}")
        _check(self.featimpute_shared in SHARED_INPUTS,
               f"featimpute_shared must be one of {SHARED_INPUTS}, got {self.featimpute_shared!r}")
        self.recalibrate = bool(self.recalibrate)
        self.recalibrate_baselines = bool(self.recalibrate_baselines)
        if self.size is not None:
            check_network_fits(self.size, self.widths, self.kernel_size)

    def conditions(self) -> tuple[str, ...]:
        """The table columns/rows: completeness labels (A) or subset names (B)."""
        if self.experiment == "a":
            return tuple(completeness_label(c) for c in self.completeness)
        return self.subsets

    def to_dict(self) -> dict:
        """Plain JSON types (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def train_options(self, method: Optional[str] = None) -> dict:
        """The ``hamfast.training.TrainConfig`` fields these settings fix (all but method, seed,
        device), with those a method variant fixes (:data:`METHOD_VARIANTS`) when ``method`` is one."""
        names = ("schedule", "iterations", "batch_size", "lr", "widths", "hidden", "kernel_size", "augment", "n_it",
                 "recalibrate", "recalibrate_baselines", "ham_norm", "dropout_mode", "dropout_p", "dropout_keep",
                 "mixed_groups", "featimpute_shared", "precision")
        return {**{name: getattr(self, name) for name in names}, **METHOD_VARIANTS.get(method, {})}

    @classmethod
    def from_dict(cls, data: dict) -> "ExperimentSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown experiment settings: {unknown}")
        return cls(**data)

    def identity(self) -> dict:
        """The fields that decide every run's result (all but ``runs`` and ``preset``): two
        settings with the same identity can share finished runs."""
        out = self.to_dict()
        del out["runs"], out["preset"]
        return out


def make_settings(experiment: str, preset: str = "quick", *, modalities=NAMES, **overrides) -> ExperimentSettings:
    """Settings of ``experiment`` from ``preset`` with ``overrides`` (None values are ignored).

    Defaults by experiment: A compares all four methods at completeness 100/75/50/25 % on the
    complete test set; B compares dropout, featimpute and ham at 25 % on
    :func:`default_subsets` (BraTS: the paper's seven subsets; other data: every subset).
    ``modalities``: the data's modality names (BraTS's by default).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    if experiment not in EXPERIMENTS:
        raise ValueError(f"experiment must be one of {EXPERIMENTS}, got {experiment!r}")
    modalities = check_modality_names(modalities, where="experiment modalities", least=2)
    if experiment == "a":
        defaults = dict(methods=METHODS, completeness=COMPLETENESS_LEVELS)
    else:
        defaults = dict(methods=("dropout", "featimpute", "ham"), completeness=(0.25,))
    defaults["subsets"] = default_subsets(experiment, modalities)
    fields = dict(PRESETS[preset], **defaults)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return ExperimentSettings(experiment=experiment, preset=preset, modalities=modalities, **fields)


def base_method(method: str) -> str:
    """The ``hamfast.models.METHODS`` name behind an experiment method: ``"ham-paper"`` -> ``"ham"``."""
    return "ham" if method in METHOD_VARIANTS else method


def complete_subset(modalities=NAMES) -> str:
    """The subset of every modality: ``"t1+t1ce+t2+flair"`` for BraTS."""
    return "+".join(modalities)


def all_subsets(modalities=NAMES) -> tuple[str, ...]:
    """The ``2**M - 1`` non-empty subsets, in pattern-code order (BraTS: :data:`ALL_SUBSETS`)."""
    return tuple(pattern_name(code, modalities) for code in range(1, 2 ** len(modalities)))


def default_subsets(experiment: str, modalities=NAMES) -> tuple[str, ...]:
    """A's test subset (the complete set) or B's (BraTS: the paper's Table 2 rows; else every subset)."""
    if experiment == "a":
        return (complete_subset(modalities),)
    return PAPER_SUBSETS if tuple(modalities) == NAMES else all_subsets(modalities)


def parse_subset(text: str, modalities=NAMES) -> str:
    """The canonical name of a modality subset, names matched regardless of case and put in channel
    order: ``"T2+t1"`` -> ``"t1+t2"``; ``"all"`` is the complete set."""
    modalities = tuple(modalities)
    if str(text).strip().lower() == "all":
        return complete_subset(modalities)
    by_lower = {name.lower(): name for name in modalities}
    parts = [p.strip().lower() for p in str(text).split("+") if p.strip()]
    unknown = [p for p in parts if p not in by_lower]
    if unknown or not parts:
        raise ValueError(f"modality subset {text!r}: use the data's modality names ({', '.join(modalities)}) joined by "
                         f"'+', e.g. '{'+'.join(modalities[:2])}', or 'all'")
    if len(set(parts)) != len(parts):
        raise ValueError(f"modality subset {text!r} repeats a modality")
    return "+".join(name for name in modalities if name.lower() in parts)


def parse_subsets(text: str, modalities=NAMES) -> tuple[str, ...]:
    """``--subsets``: ``paper`` (Table 2's rows; BraTS only), ``every`` (all ``2**M - 1``; ``all15``
    for BraTS's 4 modalities), or a comma list of subsets (``t1+t2,all``; see :func:`parse_subset`)."""
    modalities = tuple(modalities)
    keyword = text.strip().lower()
    if keyword == "paper":
        if modalities != NAMES:
            raise ValueError(f"--subsets paper: Table 2's rows are BraTS subsets; this data has modalities "
                             f"{', '.join(modalities)} (use 'every' or a comma list)")
        return PAPER_SUBSETS
    if keyword == "every" or keyword == f"all{2 ** len(modalities) - 1}":
        return all_subsets(modalities)
    return tuple(parse_subset(part, modalities) for part in text.split(","))


def subset_label(subset: str, modalities=NAMES) -> str:
    """Display name: the complete set -> ``"all"``; BraTS's names in the paper's style
    (``"t1+t1ce"`` -> ``"T1+T1ce"``), other names as the data spells them."""
    if subset == complete_subset(modalities):
        return "all"
    return "+".join(_DISPLAY.get(p, p) if tuple(modalities) == NAMES else p for p in subset.split("+"))


def completeness_label(completeness: float) -> str:
    """``0.75`` -> ``"75%"``."""
    return f"{round(100 * completeness):d}%"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
