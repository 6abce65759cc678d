"""The ``hamfast`` command (also ``python -m hamfast``).

Subcommands: ``synth``, ``prepare``, ``train``, ``evaluate``, ``predict``, ``experiment``, ``demo``
and ``bench``; ``hamfast COMMAND --help`` explains each. The data, training and plotting modules
(monai, nibabel, matplotlib) are imported inside the subcommands that need them, so ``--help``
works without them.

Errors. Every setting that can be checked without reading data (the device, the data path, every
output location, the slice size against the network's depth, a memory estimate) is checked before
any work starts. An expected failure (bad argument, unreadable file or checkpoint, filesystem
error, out of memory) ends the command with one line, ``hamfast COMMAND: error: ...``, naming the
option or file, and exit status 2; Ctrl-C exits with 130. Anything else is a bug in hamfast: one
line with exit status 1 and the hint to rerun with ``-v``, which shows the full traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

import hamfast
from hamfast.experiments.config import (
    DEMO_OVERRIDES,
    EXPERIMENT_METHODS,
    PRESETS,
    make_settings,
    parse_subsets,
    subset_label,
)
from hamfast.checks import (
    check_checkpoint_size,
    check_data_path,
    check_memory,
    check_network_fits,
    cohort_memory,
    count_cases,
    resolve_device,
    training_memory,
)
from hamfast.data.synthetic import DEFAULT_PRIVATE, DEFAULT_SHAPE, DEFAULT_SIGNAL
from hamfast.files import check_output_dir, check_output_file, lock_folder, write_json_atomic
from hamfast.experiments.tasks import subset_mask
from hamfast.experiments.workers import WorkerDied
from hamfast.experiments.stats import few_runs_warning
from hamfast.experiments.study import (
    cohort_description,
    dataset_names,
    is_brats_root,
    is_dataset_root,
    load_cohort,
    run_study,
)
from hamfast.models import METHODS
from hamfast.names import SURVIVAL_CLASSES
from hamfast.patterns import NAMES
from hamfast.models.featimpute import SHARED_INPUTS
from hamfast.training.trainer import SCHEDULES

__all__ = ["main", "build_parser"]

log = logging.getLogger("hamfast")

DEFAULT_CACHE = Path.home() / ".cache" / "hamfast" / "cohorts"
# Outside any checkout, so the demo never litters a git tree; printed at the end of the demo.
DEFAULT_DEMO_OUT = Path.home() / ".cache" / "hamfast" / "demo"
TRAIN_SIZE = 96  # `train`'s slice side for a dataset folder (BraTS or nnU-Net): the smallest a 4-block, 5x5 CBRTiny takes (91) rounded up


class _Formatter(argparse.HelpFormatter):
    """Wrap description paragraphs one by one (keeping indented lines as they are); append each
    option's default unless it is None or a flag's."""

    def _fill_text(self, text, width, indent):
        paragraphs = []
        for paragraph in text.split("\n\n"):
            if any(line.startswith("  ") for line in paragraph.splitlines()):
                paragraphs.append("\n".join(indent + line for line in paragraph.splitlines()))
            else:
                paragraphs.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(paragraphs)

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, argparse.SUPPRESS) or isinstance(action.default, bool) or "default" in text:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            default = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
            return f"{text} (default: {default})"
        return text


class CommandError(Exception):
    """A user error the command reports in one line (bad argument, missing file)."""


def _logging_options(default) -> argparse.ArgumentParser:
    """-v/-q, accepted before and after the subcommand (the subcommand's copy leaves an unset flag alone)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="log warnings only, no progress bars")
    return parser


def _add(sub, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=summary, description=description, formatter_class=_Formatter,
                          parents=[_logging_options(argparse.SUPPRESS)])


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _learning_rate(text: str) -> float:
    value = float(text)
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def _drop_probability(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text}")
    return value


def _training_switches(args) -> dict:
    """The ablation and masking options given on the command line (TrainConfig / settings field names)."""
    out = {"ham_norm": args.ham_norm, "dropout_mode": args.dropout_mode, "dropout_p": args.dropout_p,
           "dropout_keep": args.dropout_keep, "mixed_groups": args.mixed_groups,
           "ham_frozen": getattr(args, "ham_frozen", None), "featimpute_shared": args.featimpute_shared}
    for name in ("recalibrate", "recalibrate_baselines"):
        if getattr(args, name) is not None:
            out[name] = getattr(args, name) == "on"
    return {k: v for k, v in out.items() if v is not None}


def _slice_index(text: str):
    from hamfast.data.slices import SLICE_POLICIES

    if text in SLICE_POLICIES:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an axial index (an integer) or one of {', '.join(SLICE_POLICIES)}, "
                                         f"got {text!r}") from None


def _percentile(text: str) -> float:
    value = float(text)
    if not 50 < value <= 100:
        raise argparse.ArgumentTypeError(f"must lie in (50, 100], got {text}")
    return value


def _add_device(parser) -> None:
    parser.add_argument("--device", default="auto", help="torch device: auto (cuda if visible, else cpu), cpu, cuda, cuda:1, ...")


def _add_wait(parser) -> None:
    parser.add_argument("--wait", action="store_true",
                        help="if another hamfast process is writing into the same output folder, wait for it to "
                        "finish (then resume from its results) instead of stopping at once with its pid and command")


def _add_model_options(parser, defaults: dict) -> None:
    group = parser.add_argument_group("model and training")
    group.add_argument("--widths", type=_positive_int, nargs="+", metavar="W", default=defaults.get("widths"),
                       help="CBRTiny block widths, one conv block per value, any number >= 1 (the paper: 64 128 256 512)")
    group.add_argument("--hidden", type=_positive_int, default=defaults.get("hidden"), help="HAM hypernetwork width")
    group.add_argument("--kernel-size", type=_positive_int, default=defaults.get("kernel_size"), help="conv kernel side")
    group.add_argument("--batch-size", type=_positive_int, default=defaults.get("batch_size"), help="samples per step")
    group.add_argument("--lr", type=_learning_rate, default=defaults.get("lr"),
                       help="learning rate (RMSprop for HAM, Adam otherwise), a finite number > 0")
    group.add_argument("--schedule", choices=SCHEDULES, default=defaults.get("schedule"),
                       help="HAM's pattern schedule: paper (one pattern for n_it steps, each batch from the cases that "
                       "have it, masked down to it), paper-exact (the same, from the cases whose own pattern it is) "
                       "or mixed (--mixed-groups pattern groups per batch, patterns drawn by the --dropout-* masking)")
    group.add_argument("--mixed-groups", type=_non_negative_int, default=None, metavar="G",
                       help="HAM's mixed schedule: pattern groups per batch, of batch-size/G cases each (0: every "
                       "case its own pattern) (default: 4)")
    group.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                       help="switch off the training augmentation")
    group.add_argument("--ham-norm", choices=("per-pattern", "shared"), default=None,
                       help="HAM's batch norm: per-pattern statistics (hamfast's default) or one shared set (the paper's "
                       "plain task model) (default: per-pattern)")
    group.add_argument("--recalibrate", choices=("on", "off"), default=None,
                       help="HAM's precise batch-norm statistics, recomputed per pattern after training (default: on)")
    group.add_argument("--recalibrate-baselines", choices=("on", "off"), default=None,
                       help="the baselines' batch-norm statistics recomputed per test pattern at evaluation "
                       "(default: off, as in the paper)")
    group.add_argument("--featimpute-shared", choices=SHARED_INPUTS, default=None,
                       help="what FeatImpute's shared encoder reads: the stacked modalities (the paper's wording) or "
                       "each modality on its own (ShaSpec's form) (default: stacked)")
    group.add_argument("--dropout-mode", choices=("channel", "subset"), default=None,
                       help="the masking of Dropout and of HAM's mixed schedule: each present modality dropped with "
                       "probability --dropout-p, or a uniform non-empty subset (default: channel)")
    group.add_argument("--dropout-p", type=_drop_probability, default=None,
                       help="drop probability per modality in channel mode (default: 0.5, every pattern equally likely)")
    group.add_argument("--dropout-keep", type=_share, default=None,
                       help="probability that a case is shown with its own pattern (default: 0)")
    group.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default=defaults.get("precision"),
                       help="training arithmetic: fp32 (float32, TF32 off: the same numbers on CPU and GPU), "
                       "tf32 (TF32 tensor cores for float32 convs and matmuls on a GPU), bf16 (forward and loss "
                       "under torch.autocast in bfloat16; weights stay float32) (default: fp32)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="hamfast",
        description="HAM, the Hypernetwork for Absent Modalities: train, evaluate and compare models for "
        "incomplete multi-modal MRI (BraTS survival classification).",
        epilog="Quick start: `hamfast demo`. Paper-scale experiments: docs/experiments.md.",
        formatter_class=_Formatter,
        parents=[_logging_options(False)],
    )
    parser.add_argument("--version", action="version", version=f"hamfast {hamfast.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _add(sub, "synth", "write a synthetic dataset (BraTS-like, or nnU-Net layout)",
             "Write a synthetic cohort in the BraTS2019 layout (HGG/LGG case folders with t1, t1ce, t2, flair and seg "
             "NIfTI files, survival_data.csv) whose survival class is learnable from the images; or, with --layout "
             "nnunet, a dataset in nnU-Net v2's raw layout (dataset.json, imagesTr/<case>_<XXXX>.nii.gz, "
             "labelsTr/<case>.nii.gz, classes.csv) with the --modalities and --classes given, whose class is "
             "learnable from the lesion's intensity and where some cases lack modalities (docs/data.md).")
    p.add_argument("out", type=Path, help="folder to create")
    p.add_argument("--layout", choices=("brats", "nnunet"), default="brats", help="the dataset layout to write")
    p.add_argument("--cases", type=_positive_int, default=213,
                   help="BraTS: patients with a usable survival label (BraTS2019 has 213); on top, 1.5 %% of that (at "
                   "least 1) each of censored, unparsable-survival and no-survival-row cases, so 40 writes 43 folders, "
                   "213 writes 222. nnunet: the cases (at least one per class). At most 100000; an interrupted write "
                   "resumes when rerun with the same arguments")
    p.add_argument("--shape", type=_positive_int, nargs=3, metavar=("H", "W", "D"), default=DEFAULT_SHAPE, help="volume shape in voxels")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--signal", type=_share, default=None,
                   help=f"BraTS only: share of the survival risk's variance the images explain (the rest is unlearnable "
                   f"noise; default {DEFAULT_SIGNAL})")
    p.add_argument("--private", type=_share, default=None,
                   help=f"BraTS only: share of the explained risk carried by traits each visible in one modality only "
                   f"(default {DEFAULT_PRIVATE})")
    p.add_argument("--modalities", nargs="+", default=None, metavar="NAME",
                   help="nnunet only: the channel names, 2 to 8 (default: t2w adc dwi)")
    p.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                   help="nnunet only: the class names, at least 2 (default: low high)")
    p.add_argument("--missing", type=_share, default=None,
                   help="nnunet only: share of the cases lacking 1 to M-1 modalities (default 0.3)")

    p = _add(sub, "prepare", "read a dataset folder (BraTS or nnU-Net) into the slice cache",
             "Read a BraTS-layout folder, or an nnU-Net v2 raw dataset (dataset.json, imagesTr/, optional labelsTr/, "
             "classes.csv), into a cohort cache that --data accepts: one axial slice per patient, the largest tumour "
             "(lesion) area, or --slice-policy for cases without a segmentation. Damaged, empty or non-finite "
             "files, unparsable table rows and unused files are reported; see docs/data.md.")
    p.add_argument("root", type=Path, help="the BraTS copy (holding MICCAI_BraTS_2019_Data_Training/ or "
                   "survival_data.csv), or the nnU-Net dataset (holding dataset.json and imagesTr/)")
    p.add_argument("--cache", type=Path, required=True, help="cache folder to write the cohort into")
    p.add_argument("--size", type=_positive_int, default=None, help="slice side in pixels (default: native, padded to the largest)")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="raise: stop at the first unreadable case, and (BraTS) when more than half of the case folders "
                   "would be lost (no or unparsable survival row, unreadable) or (nnU-Net) at a case without a row in "
                   "classes.csv; skip: leave such cases out, warn, list them in the cache's report and go on")
    p.add_argument("--include-censored", action="store_true", help="BraTS only: keep 'ALIVE (N days later)' cases with N days")
    p.add_argument("--slice-policy", type=_slice_index, default=None, metavar="largest_brain|central|INDEX",
                   help="the slice of a case without a segmentation (or with an empty one): largest_brain (the most "
                   "brain pixels), central (the middle of the slices holding brain) or an axial index (negative counts "
                   "from the end); cases with a tumour label always use their largest tumour slice (default: BraTS: "
                   "such a case is an error; nnU-Net: central)")
    p.add_argument("--percentile", type=_percentile, default=None, metavar="P",
                   help="clip each modality to the (100-P, P) percentiles of the brain before scaling (default: robust "
                   "min-max: min-max with outlier voxels clipped, docs/data.md)")
    p.add_argument("--grid", choices=("resample", "refuse"), default=None,
                   help="nnU-Net only: a channel file on another voxel grid than the case's first channel is resampled "
                   "onto it (trilinear; the label nearest) or refused (default: resample; BraTS always refuses)")

    p = _add(sub, "train", "train one model; writes a checkpoint and its history",
             "Train one method on a cohort and write the checkpoint (weights, config, loss history, and the data "
             "settings that `predict` and `evaluate` need) plus CKPT.history.json. A stratified test set of "
             "--test-size cases is held out (its ids are stored for `evaluate`); --completeness simulates "
             "missing modalities in the training part.")
    p.add_argument("--data", type=Path, required=True, help="BraTS root or cohort cache")
    p.add_argument("--method", choices=METHODS, required=True, help="standard, dropout, featimpute or ham")
    p.add_argument("--frozen", dest="ham_frozen", action="store_true", default=None,
                   help="HAM only: the frozen-hypernetwork control (one shared CBRTiny for every pattern, batch-norm "
                   "statistics per pattern), to see what per-pattern weights add")
    p.add_argument("--out", type=Path, default=None, help="checkpoint path (default: hamfast-METHOD.pt)")
    p.add_argument("--iterations", type=_positive_int, default=300, help="training steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the missingness draw and training")
    p.add_argument("--test-size", type=int, default=36, help="held-out test cases (0: train on every case)")
    p.add_argument("--completeness", type=_fraction, default=1.0, help="fraction of training cases kept complete")
    p.add_argument("--missing", choices=("one", "random"), default="one",
                   help="incomplete cases miss exactly one modality (Experiment A) or 1 to 3 (Experiment B)")
    p.add_argument("--size", type=_positive_int, default=None,
                   help="slice side in pixels (default: a cohort cache's own; 96 for a BraTS root)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where a BraTS root's slices are cached")
    _add_model_options(p, dict(widths=(16, 32, 32, 64), hidden=4, kernel_size=5, batch_size=16, lr=1e-4, schedule="paper",
                                 precision="fp32"))
    _add_device(p)

    p = _add(sub, "evaluate", "metrics of a checkpoint per test modality subset",
             "Evaluate a checkpoint on a cohort, once per modality subset: each case is shown with that subset "
             "only (cases lacking one of its modalities are left out). Default cases: the test set held out by "
             "`train`. Prints balanced accuracy, sensitivity, specificity and precision (means over classes).")
    p.add_argument("checkpoint", type=Path, help="checkpoint written by `hamfast train`")
    p.add_argument("--data", type=Path, required=True, help="BraTS root or cohort cache (read with the checkpoint's settings)")
    p.add_argument("--cases", choices=("held-out", "all"), default="held-out", help="which cases to evaluate")
    p.add_argument("--subsets", default="every",
                   help="every (all 2^M-1 subsets of the model's M modalities; all15 for BraTS's four), paper "
                   "(Table 2's seven, BraTS only) or a comma list of the model's modality names like t1+t2,flair,all "
                   "(all: the complete set, as the table labels it)")
    p.add_argument("--json", type=Path, default=None, help="also write the metrics to this JSON file")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where a BraTS root's slices are cached")
    _add_device(p)

    p = _add(sub, "predict", "class probabilities for one patient folder",
             "Predict the class of one patient (printed with the dataset's class names) from any subset of its "
             "modality files, read the way the checkpoint's training data was read. BraTS: a patient folder with "
             "t1, t1ce, t2, flair files and a segmentation (for the slice choice) or --slice-index. nnU-Net layout: "
             "a folder of <case>_XXXX.nii.gz channel files (XXXX: the channel index of the training dataset.json) "
             "with an optional <case>.nii.gz lesion mask, or the dataset root with --case. The model uses the "
             "modalities present that carry signal (a file that is all zero or constant is not used, with a warning); "
             "the slice is preprocessed with the checkpoint's data settings.")
    p.add_argument("checkpoint", type=Path, help="checkpoint written by `hamfast train`")
    p.add_argument("case_dir", type=Path, help="patient folder (or an nnU-Net dataset root with --case)")
    p.add_argument("--case", default=None, help="nnU-Net layout: the case id when CASE_DIR holds several cases")
    p.add_argument("--slice-index", type=_slice_index, default=None,
                   help="axial slice (an int, negative counts from the end, or largest_brain); default: the largest "
                   "tumour area of the segmentation. A slice without brain is refused")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_device(p)

    _add_experiment_parser(sub)

    _add_demo_parser(sub)

    sub.add_parser("bench", help="throughput benchmarks (see `hamfast bench --help`)", add_help=False)
    return parser


def _add_demo_parser(sub) -> None:
    demo = dict(PRESETS["quick"], **DEMO_OVERRIDES)
    widths = " ".join(map(str, demo["widths"]))
    p = _add(sub, "demo", "synthetic cohort + reduced Experiment A, in a few minutes on a CPU",
             "On a fresh machine: write the synthetic cohort, run a reduced Experiment A (every method, completeness "
             f"100/75/50/25 %, the quick preset made smaller: widths {widths}, {demo['size']} px slices, "
             f"{demo['kernel_size']}x{demo['kernel_size']} kernels, {demo['iterations']} iterations, augmentation {'on' if demo['augment'] else 'off'}), print "
             "Table 1a and write the plots into OUT/experiment_a. Rerunning reuses the cohort and the finished tasks.")
    p.add_argument("--out", type=Path, default=DEFAULT_DEMO_OUT, help="output folder")
    p.add_argument("--runs", type=_positive_int, default=demo["runs"], help="runs")
    p.add_argument("--jobs", type=_positive_int, default=2, help="parallel worker processes")
    p.add_argument("--cases", type=_positive_int, default=213, help="synthetic patients")
    _add_device(p)
    _add_wait(p)


def _add_experiment_parser(sub) -> None:
    quick, paper = PRESETS["quick"], PRESETS["paper"]
    p = _add(sub, "experiment", "Experiment A (completeness) or B (test modality subsets)",
             "Experiment A: train every method on the same data at completeness 100/75/50/25 % (incomplete cases miss "
             "exactly one modality), test on the complete test set. Experiment B: train at 25 % (incomplete cases miss 1 "
             "to 3 modalities), test on each modality subset.\n\n"
             "Presets:\n"
             f"  quick  widths {list(quick['widths'])}, {quick['size']} px, {quick['runs']} runs, {quick['iterations']} iterations, "
             f"stop fixed, HAM schedule {quick['schedule']} (a 2-core CPU)\n"
             f"  paper  widths {list(paper['widths'])}, native size, {paper['runs']} runs, stop cv (5-fold, up to "
             f"{paper['iterations']} iterations), batch 16, lr 1e-4, HAM schedule {paper['schedule']} (a GPU)\n"
             "Options below override the preset.\n\n"
             "Writes runs.csv, predictions.csv, summary.md, comparisons.csv, accuracy_vs_completeness.png (A) and loss_curves.png into "
             "--out, and each finished task to OUT/tasks/ at once: rerunning the same command skips finished work.")
    p.add_argument("which", choices=("a", "b"), nargs="?", default=None, help="the experiment (or taken from --from)")
    p.add_argument("--from", dest="record", type=Path, default=None, metavar="EXPERIMENT_JSON",
                   help="take every setting from a study's record (OUT/experiment.json) to reproduce it (another "
                   "--out) or extend it (the same --out, e.g. more --runs); options given here override it")
    p.add_argument("--data", type=Path, required=True, help="BraTS root or cohort cache")
    p.add_argument("--out", type=Path, required=True, help="output folder (rerun with the same folder to resume)")
    p.add_argument("--preset", choices=tuple(PRESETS), default=None, help="base settings (default: quick)")
    p.add_argument("--runs", type=_positive_int, default=None, help="runs (default: the preset's)")
    p.add_argument("--jobs", type=_positive_int, default=1, help="parallel worker processes (one per GPU with several GPUs)")
    _add_device(p)
    _add_wait(p)
    p.add_argument("--stop", nargs="+", metavar="RULE", default=None,
                   help="'cv' (iterations chosen by 5-fold cross-validation, up to --iterations) or 'fixed N' "
                   "(default: the preset's)")
    p.add_argument("--iterations", type=_positive_int, default=None, help="fixed iterations, or the cross-validation maximum")
    p.add_argument("--cv-every", type=_positive_int, default=None, help="iterations between cross-validation evaluations")
    p.add_argument("--cv-folds", type=_positive_int, default=None, help="cross-validation folds")
    p.add_argument("--methods", nargs="+", choices=EXPERIMENT_METHODS, default=None,
                   help="methods (default: all four for A; dropout featimpute ham for B); ham uses --schedule, "
                   "ham-mixed / ham-paper / ham-exact fix the schedule (mixed / paper / paper-exact), ham-per-sample is "
                   "the mixed schedule with a pattern per case (--mixed-groups 0), ham-frozen is the frozen-hypernetwork control, so HAM variants can be compared in one study")
    p.add_argument("--completeness", type=_fraction, nargs="+", default=None,
                   help="training completeness levels (default: 1 0.75 0.5 0.25 for A, 0.25 for B)")
    p.add_argument("--subsets", default=None,
                   help="B: paper (Table 2's seven rows, BraTS only; its default for BraTS), every (all 2^M-1 subsets "
                   "of the data's M modalities; the default for other data; all15 for BraTS), or a comma list of the "
                   "data's modality names like t1+t2,t2+flair,all (all: the complete set)")
    p.add_argument("--seed", type=int, default=None, help="base seed (run r uses seed + r)")
    p.add_argument("--split", choices=("per-run", "fixed"), default=None, help="a new stratified split per run (quick), or one for all runs (paper)")
    p.add_argument("--test-size", type=_positive_int, default=None, help="test cases per split")
    p.add_argument("--test-data", type=Path, default=None,
                   help="a second cohort (cache or BraTS root, read at the same --size) that every run tests on "
                   "instead of its split's held-out cases; the split still decides the training cases")
    p.add_argument("--size", type=_positive_int, default=None, help="slice side in pixels after cropping to the brain (quick: 96; paper: 128)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where a BraTS root's slices are cached")
    _add_study_options(p)
    _add_model_options(p, {})


def _batch_models(text: str):
    return text if text == "auto" else _positive_int(text)


def _add_study_options(parser) -> None:
    group = parser.add_argument_group("speed and clusters (docs/experiments.md)")
    group.add_argument("--batch-models", type=_batch_models, default="auto", metavar="K",
                       help="train up to K models of a method at once as one stacked model (the runs and "
                       "cross-validation folds of the study; same results up to float rounding); 1: task by task; "
                       "auto: from the GPU's free memory on CUDA, 1 on a CPU (where stacking measured slower)")
    group.add_argument("--shard", default=None, metavar="i/N",
                       help="run only the i-th (from 0) of N disjoint parts of the study, e.g. one per SLURM array "
                       "task; rerun without --shard to merge the parts and write the reports")
    group.add_argument("--estimate", action="store_true",
                       help="time a few training steps on the device (one model and K stacked) and print the "
                       "expected wall time of the study, without running it")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``hamfast`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging_flags = ("-v", "--verbose", "-q", "--quiet")
    if "bench" in argv and all(a in logging_flags for a in argv[: argv.index("bench")]):
        from hamfast import bench

        at = argv.index("bench")  # -v/-q before `bench` go on to it, as for the other subcommands
        return bench.main(argv[:at] + argv[at + 1 :]) or 0
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Warnings (e.g. the data reader's skipped cases) go through the log, one line each.
    logging.captureWarnings(True)
    warnings.formatwarning = lambda message, category, *rest, **kw: f"{category.__name__}: {message}"
    handler = globals()[f"_cmd_{args.command}"]
    try:
        return handler(args) or 0
    except KeyboardInterrupt as exc:
        resume = " (finished runs are kept: rerun the same command to resume)" if args.command in ("experiment", "demo") else ""
        print(f"hamfast {args.command}: {str(exc) or 'interrupted' + resume}", file=sys.stderr)
        return 130
    except Exception as exc:
        message = _expected_error(exc)
        if message is None:
            if args.verbose:
                raise
            print(f"hamfast {args.command}: internal error: {type(exc).__name__}: {_one_line(str(exc))} (a bug in "
                  "hamfast: rerun with -v for the traceback, and please report it)", file=sys.stderr)
            return 1
        log.debug("the error's traceback", exc_info=True)
        print(f"hamfast {args.command}: error: {message}", file=sys.stderr)
        return 2


def _expected_error(exc: BaseException) -> Optional[str]:
    """The one-line message of an expected failure (bad input, filesystem, memory), or None for a bug."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    ):
        return ("out of memory; use a smaller --size, --batch-size, --widths or fewer --jobs "
                f"({type(exc).__name__}: {_one_line(str(exc), 160)})")
    if isinstance(exc, OSError):
        if exc.filename is None:
            return _one_line(str(exc))
        names = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else f"{exc.filename}"
        return f"{names}: {exc.strerror or exc}"
    if isinstance(exc, (CommandError, ValueError, WorkerDied)):  # ValueError: the data reader's, the checkpoint's, ...
        return _one_line(str(exc))
    return None


def _one_line(text: str, limit: int = 600) -> str:
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- subcommands -------------------------------------------------------------------------------


def _cmd_synth(args) -> int:
    start = time.perf_counter()
    out = check_output_dir(args.out, "out")
    if args.layout == "nnunet":
        return _synth_nnunet(args, out, start)
    for option in ("modalities", "classes", "missing"):
        if getattr(args, option) is not None:
            raise CommandError(f"--{option} applies to --layout nnunet only (the BraTS layout has t1, t1ce, t2, flair "
                               "and 3 survival classes)")
    from hamfast.data import make_synthetic_brats
    from hamfast.data.synthetic import case_counts, estimate_bytes

    existed = is_brats_root(out)  # made before: reused when the arguments match, refused otherwise
    counts = case_counts(args.cases)
    folders = sum(counts.values())
    if not existed:
        log.info("writing %d case folders (%d with a survival label; %d censored, %d unparsable and %d without a "
                 "survival row exercise the reader), at most %.3g GB", folders, counts["ok"], counts["censored"],
                 counts["unparsable"], counts["no_row"], estimate_bytes(args.cases, tuple(args.shape)) / 1e9)
    signal = DEFAULT_SIGNAL if args.signal is None else args.signal
    private = DEFAULT_PRIVATE if args.private is None else args.private
    root = make_synthetic_brats(out, n_cases=args.cases, shape=tuple(args.shape), seed=args.seed,
                                signal=signal, private=private, progress=not args.quiet)
    verb = "reusing the" if existed else "wrote"
    print(f"{verb} {args.cases} synthetic cases with a survival label in {root}, {folders} case folders in all "
          f"(+{folders - args.cases} that exercise the reader's report) ({time.perf_counter() - start:.0f} s)")
    return 0


def _synth_nnunet(args, out: Path, start: float) -> int:
    from hamfast.data.nnunet import is_nnunet_root
    from hamfast.data.synthetic_nnunet import DEFAULT_CLASSES, DEFAULT_MISSING, DEFAULT_MODALITIES, make_synthetic_nnunet

    for option in ("signal", "private"):
        if getattr(args, option) is not None:
            raise CommandError(f"--{option} applies to the BraTS layout only (the survival risk model)")
    modalities = tuple(args.modalities or DEFAULT_MODALITIES)
    classes = tuple(args.classes or DEFAULT_CLASSES)
    existed = is_nnunet_root(out)
    root = make_synthetic_nnunet(out, modalities, classes, n_cases=args.cases, shape=tuple(args.shape), seed=args.seed,
                                 missing=DEFAULT_MISSING if args.missing is None else args.missing,
                                 progress=not args.quiet)
    verb = "reusing the" if existed else "wrote"
    print(f"{verb} {args.cases} synthetic cases in the nnU-Net layout in {root}: modalities {', '.join(modalities)}, "
          f"classes {', '.join(classes)} ({time.perf_counter() - start:.0f} s)")
    return 0


def _cmd_prepare(args) -> int:
    from hamfast.data.sources import dataset_layout, prepare_dataset

    check_output_dir(args.cache, "--cache")
    layout = dataset_layout(args.root)
    if layout is None:
        check_data_path(args.root, "root")  # says what the folder lacks
        raise CommandError(f"root {args.root} is neither a BraTS copy nor an nnU-Net raw dataset (dataset.json and "
                           "imagesTr/); a cache is read by --data, not prepared")
    settings = dict(size=args.size, on_error=args.on_error, percentile=args.percentile)
    if layout == "brats":
        if args.grid is not None:
            raise CommandError("--grid applies to nnU-Net datasets only (the BraTS reader refuses another voxel grid)")
        settings.update(include_censored=args.include_censored, slice_policy=args.slice_policy)
    else:
        if args.include_censored:
            raise CommandError("--include-censored applies to BraTS survival only")
        if args.slice_policy is not None:
            settings["slice_policy"] = args.slice_policy
        if args.grid is not None:
            settings["grid"] = args.grid
    cohort = prepare_dataset(args.root, cache_dir=args.cache, progress=not args.quiet, **settings)
    counts = cohort.report.get("counts", {})
    print(f"cohort: {cohort_description(cohort)}")
    if counts.get("skipped"):
        print(f"skipped {counts['skipped']} case(s): {counts.get('skipped_by_reason')}")
    no_signal = {m: n for m, n in counts.get("no_signal", {}).items() if n}
    if no_signal:
        print(f"modality files without signal, not used: {no_signal}")
        dropped = cohort.report.get("no_signal", [])
        for entry in dropped[:5]:
            print(f"  case {entry['id']}: {entry['modality']} {entry['reason']}")
        if len(dropped) > 5:
            print(f"  ... and {len(dropped) - 5} more (the cache's report lists all, under no_signal)")
    if counts.get("unparsable_table_lines") or counts.get("notes"):
        print(f"{counts.get('unparsable_table_lines', 0)} unparsable survival table line(s), {counts.get('notes', 0)} "
              "note(s) (listed in the cache's report)")
    print(f"cache: {cohort.report.get('cache', {}).get('path')} (use it as --data)")
    return 0


def _cmd_train(args) -> int:
    from hamfast import data
    from hamfast.training import TrainConfig, save_checkpoint, train
    from hamfast.training.divergence import DivergenceError

    # Everything that can fail is checked before the cohort is read and the model trained.
    device = resolve_device(args.device)
    check_data_path(args.data)
    out = check_output_file(args.out or Path(f"hamfast-{args.method}.pt"), "--out")
    history_path = check_output_file(out.with_suffix(".history.json"), "--out")
    folder = is_dataset_root(args.data)  # NIfTI files to read (and cache), not a cohort cache
    if folder:
        check_output_dir(args.cache, "--cache")
    size = args.size if args.size is not None else (TRAIN_SIZE if folder else None)
    if size is not None:
        check_network_fits(size, args.widths, args.kernel_size)
        if folder:
            cases = count_cases(args.data)
            check_memory(cohort_memory(cases, size) + training_memory(size, args.widths, args.kernel_size, args.batch_size, [args.method]),
                         f"reading {cases} cases at --size {size} and training with --batch-size {args.batch_size}")
    reader = {} if size is None else {"size": size}  # no size: a cache of any size will do
    cohort = load_cohort(args.data, cache_dir=args.cache, progress=not args.quiet, **reader)
    log.info("cohort: %s", cohort_description(cohort))
    side = int(min(cohort.images.shape[2:]))
    check_network_fits(side, args.widths, args.kernel_size, option=f"--data {args.data} ({side} px slices)")
    check_memory(training_memory(side, args.widths, args.kernel_size, args.batch_size, [args.method]),
                 f"training at {side} px with --batch-size {args.batch_size}", device)
    if args.test_size < 0 or args.test_size >= len(cohort):
        raise CommandError(f"--test-size must lie in [0, {len(cohort) - 1}] for {len(cohort)} cases, got {args.test_size}")
    if args.test_size:
        train_idx, test_idx = data.stratified_split(cohort.labels, test_size=args.test_size, seed=args.seed)
    else:
        train_idx, test_idx = np.arange(len(cohort)), np.array([], dtype=np.int64)
    untrained = [name for k, name in enumerate(cohort.classes) if not (cohort.labels[train_idx] == k).any()]
    if untrained:
        raise CommandError(f"--data {args.data}: class(es) {', '.join(untrained)} have no training case (of "
                           f"{len(train_idx)}); a classifier cannot learn them")
    available = cohort.available[train_idx]
    if args.completeness < 1:
        drop = data.drop_one_modality if args.missing == "one" else data.drop_random_modalities
        available = np.asarray(drop(available, args.completeness, seed=args.seed), dtype=bool)
    config = TrainConfig(
        args.method, schedule=args.schedule, iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
        widths=args.widths, hidden=args.hidden, kernel_size=args.kernel_size, seed=args.seed, device=device,
        augment=args.augment is not False, precision=args.precision, modalities=cohort.modalities,
        classes=cohort.classes, **_training_switches(args),
    )
    log.info("training %s for %d iterations on %d cases (%d complete) on %s", args.method, args.iterations,
             len(train_idx), int(available.all(1).sum()), device)
    try:
        result = train(config, cohort.images[train_idx], available, cohort.labels[train_idx], progress=not args.quiet)
    except DivergenceError as exc:
        raise CommandError(f"{exc}; no checkpoint written") from None
    # The data settings travel in the checkpoint's history, so predict/evaluate preprocess the same way.
    result.history["data"] = {
        "source": str(args.data),
        "reader_settings": cohort.settings,
        "test_ids": [cohort.ids[i] for i in test_idx],
        "seed": args.seed,
        "completeness": args.completeness,
        "missing": args.missing,
    }
    save_checkpoint(out, result)
    write_json_atomic(history_path, {"config": config.to_dict(), **result.history})
    loss = result.history["loss"]
    window = max(1, len(loss) // 10)
    print(f"loss {np.mean(loss[:window]):.4f} -> {np.mean(loss[-window:]):.4f} (mean of the first/last {window} steps)")
    print(f"wrote {out} and {history_path}")
    return 0


def _parse_subsets(text: str, modalities=NAMES) -> tuple[str, ...]:
    try:
        return parse_subsets(text, modalities)
    except ValueError as exc:
        raise CommandError(f"--subsets: {exc}") from None


def _load_checkpoint(path: Path, device: str, batch_size: int):
    """The checkpoint's TrainResult, its data settings checked (the slice size: range and memory for
    ``batch_size`` samples per forward pass) before any case is read."""
    from hamfast.training import load_checkpoint

    if not path.is_file():
        raise CommandError(f"checkpoint {path}: no such file")
    result = load_checkpoint(path, map_location=device)
    data = result.history.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("reader_settings"), dict) \
            or not isinstance(data.get("test_ids"), list):
        raise CommandError(f"checkpoint {path} carries no data settings (it was not written by `hamfast train`)")
    config = result.config
    check_checkpoint_size(data["reader_settings"].get("size"), config.widths, config.kernel_size, config.method,
                          batch_size, f"checkpoint {path}", device)
    return result


def _cmd_evaluate(args) -> int:
    from hamfast.metrics import classification_metrics
    from hamfast.training import predict_proba

    device = resolve_device(args.device)
    if args.json is not None:
        check_output_file(args.json, "--json")
    result = _load_checkpoint(args.checkpoint, device, batch_size=64)
    modalities = result.config.modalities
    subsets = _parse_subsets(args.subsets, modalities)
    check_data_path(args.data)
    info = result.history["data"]
    cohort = load_cohort(args.data, cache_dir=args.cache, progress=not args.quiet, **info["reader_settings"])
    for what in ("modalities", "classes"):
        if tuple(getattr(cohort, what)) != tuple(getattr(result.config, what)):
            raise CommandError(f"--data {args.data}: {what} {', '.join(getattr(cohort, what))}, but the checkpoint's "
                               f"model was trained on {', '.join(getattr(result.config, what))}")
    if args.cases == "held-out":
        wanted = set(info["test_ids"])
        if not wanted:
            raise CommandError(f"{args.checkpoint} was trained on every case (no held-out set); use --cases all")
        index = np.array([i for i, case in enumerate(cohort.ids) if case in wanted], dtype=np.int64)
        if index.size == 0:
            raise CommandError(f"none of the checkpoint's {len(wanted)} held-out cases is in {args.data}; use --cases all")
    else:
        index = np.arange(len(cohort))
    rows = []
    for subset in subsets:
        mask = subset_mask(subset, modalities)
        cases = index[(cohort.available[index] | ~mask).all(1)]
        if cases.size == 0:
            log.warning("no case has every modality of %s; skipped", subset)
            continue
        probs = predict_proba(result.model, cohort.images[cases], np.repeat(mask[None], cases.size, axis=0), device=device)
        metrics = classification_metrics(cohort.labels[cases], probs.argmax(1).numpy(), result.config.num_classes,
                                         class_names=result.config.classes)
        rows.append({"subset": subset, "cases": int(cases.size),
                     **{k: metrics[k] for k in ("balanced_accuracy", "sensitivity", "specificity", "precision")}})
    rows.sort(key=lambda r: (r["subset"].count("+"), r["subset"]))
    print(f"{result.config.method} on {index.size} {args.cases} case(s) of {args.data}")
    print(f"{'test modalities':<24}{'cases':>6}{'BAcc':>8}{'Sens':>8}{'Spec':>8}{'Prec':>8}")
    for r in rows:
        print(f"{subset_label(r['subset'], modalities):<24}{r['cases']:>6}{r['balanced_accuracy']:>8.3f}{r['sensitivity']:>8.3f}"
              f"{r['specificity']:>8.3f}{r['precision']:>8.3f}")
    if args.json:
        write_json_atomic(args.json, {"checkpoint": str(args.checkpoint), "data": str(args.data), "cases": args.cases, "rows": rows})
        print(f"wrote {args.json}")
    return 0


def _cmd_predict(args) -> int:
    from hamfast.data.sources import load_case_with
    from hamfast.training import predict_proba

    device = resolve_device(args.device)
    result = _load_checkpoint(args.checkpoint, device, batch_size=1)
    modalities, classes = result.config.modalities, result.config.classes
    reader = result.history["data"]["reader_settings"]
    dropped: dict = {}
    image, available, index = load_case_with(args.case_dir, modalities, reader, case=args.case,
                                             slice_index=args.slice_index, dropped=dropped)
    if not available.any():
        raise CommandError(f"{args.case_dir}: no modality file ({', '.join(modalities)}); nothing to predict from")
    present = [m for m, here in zip(modalities, available) if here]
    unused = [m for m in modalities if m in dropped]
    if result.config.method == "standard" and not available.all():
        log.warning("the standard model was trained on complete cases only; the missing modalities are zero-filled")
    probs = predict_proba(result.model, image[None], available[None], device=device)[0].tolist()
    if not np.isfinite(probs).all():  # predict_proba refuses them; never print NaN as a prediction
        raise CommandError(f"{args.case_dir}: the model gives non-finite probabilities {probs}")
    predicted = int(np.argmax(probs))
    if args.json:
        print(json.dumps({"case": args.case or args.case_dir.name, "modalities": present, "no_signal": unused,
                          "no_signal_reasons": dropped, "slice_index": int(index),
                          "probabilities": dict(zip(classes, probs)), "predicted": classes[predicted]},
                         allow_nan=False))
        return 0
    not_used = f" (not used, no signal: {'; '.join(f'{m}: {dropped[m]}' for m in unused)})" if unused else ""
    print(f"case {args.case or args.case_dir.name}: modalities used {', '.join(present)}{not_used}, axial slice {index}, "
          f"model {result.config.method}")
    spans = _class_spans(reader, classes)
    width = 1 + max(len(name) for name in classes)
    for name, p in zip(classes, probs):
        print(f"  {name:<{width}} {p:.3f}" + (f"  ({spans[name]})" if name in spans else ""))
    print(f"predicted: {classes[predicted]}" + (" survival" if spans else ""))
    return 0


def _class_spans(reader: dict, classes) -> dict:
    """BraTS survival's classes as day ranges (from the reader's thresholds); nothing for other data."""
    if tuple(classes) != SURVIVAL_CLASSES or "survival_thresholds" not in reader:
        return {}
    short, long = reader["survival_thresholds"]
    return dict(zip(classes, (f"< {short:g} days", f"{short:g}-{long:g} days", f"> {long:g} days")))


def _parse_stop(values) -> dict:
    """``--stop cv`` -> stop=cv; ``--stop fixed N`` -> stop=fixed, iterations=N."""
    if values is None:
        return {}
    if values == ["cv"]:
        return {"stop": "cv"}
    if len(values) == 2 and values[0] == "fixed" and values[1].isdigit() and int(values[1]) > 0:
        return {"stop": "fixed", "iterations": int(values[1])}
    raise CommandError(f"--stop must be 'cv' or 'fixed N' (N a positive integer), got {' '.join(values)!r}")


def _experiment_settings(args):
    recorded = _recorded_settings(args.record) if args.record is not None else None
    which = args.which or (recorded.experiment if recorded is not None else None)
    overrides = dict(
        runs=args.runs, methods=args.methods, completeness=args.completeness, seed=args.seed, split=args.split,
        test_size=args.test_size, test_data=None if args.test_data is None else str(args.test_data), size=args.size, widths=args.widths, hidden=args.hidden, kernel_size=args.kernel_size,
        batch_size=args.batch_size, lr=args.lr, schedule=args.schedule, augment=args.augment,
        iterations=args.iterations, cv_every=args.cv_every, cv_folds=args.cv_folds, precision=args.precision,
        **_training_switches(args),
    )
    try:
        modalities = dataset_names(args.data)[0]
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if args.subsets is not None:
        if which == "a":
            raise CommandError("--subsets is for experiment b (experiment a tests on the complete set)")
        overrides["subsets"] = _parse_subsets(args.subsets, modalities)
    stop = _parse_stop(args.stop)
    if "iterations" in stop and args.iterations is not None and args.iterations != stop["iterations"]:
        raise CommandError(f"--stop fixed {stop['iterations']} and --iterations {args.iterations} disagree")
    overrides.update(stop)
    if recorded is None:
        if which is None:
            raise CommandError("experiment: say which experiment (a or b), or give --from OUT/experiment.json")
        return make_settings(which, args.preset or "quick", modalities=modalities, **overrides)
    if which != recorded.experiment:
        raise CommandError(f"--from {args.record} records experiment {recorded.experiment}, not {which}")
    if args.preset is not None:
        raise CommandError(f"--preset cannot be combined with --from (the record {args.record} holds every setting)")
    fields = {k: v for k, v in recorded.to_dict().items() if k not in ("experiment", "preset", "modalities")}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return make_settings(recorded.experiment, recorded.preset, modalities=recorded.modalities, **fields)


def _recorded_settings(path: Path):
    """The settings a study recorded in its ``experiment.json`` (written by ``hamfast experiment``)."""
    from hamfast.experiments.config import ExperimentSettings

    try:
        stored = json.loads(path.read_text())["settings"]
        stored = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()}
        return ExperimentSettings.from_dict(stored)
    except OSError as exc:
        raise CommandError(f"--from {path}: cannot read it ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CommandError(f"--from {path}: not a study record (an experiment.json written by hamfast experiment): "
                           f"{exc}") from None


def _cmd_experiment(args) -> int:

    settings = _experiment_settings(args)
    device = resolve_device(args.device)
    check_data_path(args.data)
    check_output_dir(args.out, "--out")
    if is_dataset_root(args.data):
        check_output_dir(args.cache, "--cache")
    warning = few_runs_warning(settings.runs)
    if warning:
        log.warning(warning)
    from hamfast.experiments.tasks import parse_shard

    shard = parse_shard(args.shard) if args.shard is not None else None
    outcome = run_study(settings, args.data, args.out, jobs=args.jobs, device=device, cache_dir=args.cache,
                        progress=not args.quiet, command="hamfast " + shlex.join(args.argv), wait=args.wait,
                        batch_models=args.batch_models, shard=shard, estimate=args.estimate)
    print(outcome["summary"])
    if outcome["files"]:  # --estimate writes nothing
        print("wrote " + ", ".join(str(f) for f in outcome["files"]))
    return 0


def _cmd_demo(args) -> int:
    from hamfast.data import make_synthetic_brats

    start = time.perf_counter()
    device = resolve_device(args.device)
    out = check_output_dir(args.out, "--out")
    settings = make_settings("a", "quick", **dict(DEMO_OVERRIDES, runs=args.runs))
    root = out / "synthetic_brats"
    # The whole folder, so a second demo stops before it writes the cohort too.
    with lock_folder(out, command="hamfast " + shlex.join(args.argv), wait=args.wait,
                     on_wait=lambda holder: log.warning("--out %s is in use by %s; waiting", out, holder)):
        if is_brats_root(root):
            log.info("reusing the synthetic cohort in %s", root)
        else:
            log.info("writing %d synthetic cases to %s", args.cases, root)
        make_synthetic_brats(root, n_cases=args.cases, seed=0)  # returns at once when made before
        outcome = run_study(settings, root, out / "experiment_a", jobs=args.jobs, device=device,
                            cache_dir=out / "cache", progress=not args.quiet, command="hamfast demo")
    summary = outcome["summary"]
    print(summary[: summary.index("### Table 1b")].rstrip() if "### Table 1b" in summary else summary)
    print()
    print("wrote " + ", ".join(str(f) for f in outcome["files"]))
    print(f"demo finished in {(time.perf_counter() - start) / 60:.1f} min; the full settings are in "
          f"{out / 'experiment_a' / 'summary.md'}")
    return 0
