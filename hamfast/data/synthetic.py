"""A BraTS-like synthetic cohort in the exact BraTS2019 on-disk layout (the embedded default data).

Each case has seven independent latent traits, standard normal ``z``: three tumour sizes seen in
more than one modality or in t1ce only (necrosis size: t1, t1ce; enhancing-rim thickness: t1ce;
oedema extent: t2, flair, faint in t1 and t1ce), and four *private* contrasts, each seen in one
modality only (oedema hypointensity in t1, rim enhancement in t1ce, oedema brightness in t2 and
in flair); see ``hamfast.data.phantom``. Most traits shorten survival; three lengthen it (a
thicker enhancing rim, a stronger rim enhancement and a brighter oedema in FLAIR):

    risk = sqrt(signal) * (sqrt(1 - private) * g . z_sizes + sqrt(private) * p . z_private)
           + sqrt(1 - signal) * eps,    eps ~ N(0, 1)
    survival_days = exp(LOG_DAYS_MEAN - LOG_DAYS_SD * risk)

with unit vectors ``g`` proportional to ``SIZE_WEIGHTS`` (1 : -0.5 : 1) and ``p`` to
``PRIVATE_WEIGHTS`` (1 : -1 : 1 : -1). The mixed signs make the cohort need many cases: with
every weight positive, one "how much lesion" feature predicts almost as well as the true mix,
and 44 complete cases teach a CNN nearly as much as 177 (docs/data.md has the measurement).
``signal`` is the share of the risk's variance that the
images explain at all (the rest is noise no model can learn) and ``private`` the share of that
explained part carried by the private traits, which a model loses with their modality.

``risk`` is standard normal, so the day thresholds 300 and 450 split the cohort 36/25/39 %
(short/mid/long), as in the paper's BraTS2019 cohort (the risks are spread evenly, see
:func:`case_traits`). No single modality shows all the traits.

The defaults (``DEFAULT_SIGNAL``, ``DEFAULT_PRIVATE``) are calibrated so that, as on BraTS
survival, a Standard CBRTiny (the quick preset's widths) trained on every complete training case
reaches roughly 0.5-0.6 balanced accuracy and loses clearly when only a quarter of the cases is
complete (docs/data.md has the measurement: 0.58 -> 0.46 over 10 runs). ``signal=0.95,
private=0`` shows every trait in at least two modalities but the rim.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from statistics import NormalDist

import numpy as np

from hamfast.data.brats import TRAINING_DIR
from hamfast.data.naming import MODALITIES, SEGMENTATION
from hamfast.data.phantom import PRIVATE_CONTRASTS, TumourTraits, render_case

__all__ = [
    "DEFAULT_SHAPE",
    "DEFAULT_SIGNAL",
    "DEFAULT_PRIVATE",
    "TRAIT_NAMES",
    "TRAIT_RANGES_MM",
    "SIZE_WEIGHTS",
    "PRIVATE_WEIGHTS",
    "risk_weights",
    "case_traits",
    "trait_sizes",
    "MAX_CASES",
    "case_counts",
    "estimate_bytes",
    "make_synthetic_brats",
    "write_nifti",
]

DEFAULT_SHAPE = (96, 96, 16)  # voxels: 2.5 mm in-plane, ~10 mm slices; every documented result uses it
# Each trait's z maps through the normal CDF onto this range (uniform sizes, varying a lot).
TRAIT_RANGES_MM = {"necrosis_mm": (3.0, 14.0), "rim_mm": (2.0, 10.0), "oedema_mm": (26.0, 60.0)}
DEFAULT_SIGNAL = 0.95  # share of the risk variance the images explain (calibrated: docs/data.md)
DEFAULT_PRIVATE = 0.5  # share of that explained variance carried by the private (one-modality) traits
SIZE_WEIGHTS = (1.0, -0.5, 1.0)  # relative weights of necrosis, rim, oedema in the risk (negative: protective)
PRIVATE_WEIGHTS = (1.0, -1.0, 1.0, -1.0)  # relative weights of the t1, t1ce, t2, flair private contrasts
TRAIT_NAMES = ("necrosis", "rim", "oedema", "t1_private", "t1ce_private", "t2_private", "flair_private")
# log-normal survival: P(days < 300) = 0.36 and P(days <= 450) = 0.61 for a standard normal risk
_NORMAL = NormalDist()
LOG_DAYS_SD = math.log(450 / 300) / (_NORMAL.inv_cdf(0.61) - _NORMAL.inv_cdf(0.36))
LOG_DAYS_MEAN = math.log(300) - LOG_DAYS_SD * _NORMAL.inv_cdf(0.36)
EXTRA_SHARE = 0.015  # share (of n_cases) of extra cases of each kind: censored, unparsable, no survival row
MARKER = "hamfast_synthetic.json"
PARTIAL = ".hamfast_synthetic.partial"  # staging folder of an unfinished write: its arguments and rows so far
MAX_CASES = 100_000  # ~470 BraTS2019 cohorts; beyond it a typo (1e8) is far likelier than a need
_VERSION = 3


def risk_weights(signal: float = DEFAULT_SIGNAL, private: float = DEFAULT_PRIVATE) -> np.ndarray:
    """float64 [8]: the weights of the seven traits (order ``TRAIT_NAMES``) and of the noise in the
    risk; their squares sum to 1, so the risk of standard normal traits is standard normal."""
    _check_shares(signal, private)
    sizes = np.array(SIZE_WEIGHTS) / np.linalg.norm(SIZE_WEIGHTS)
    private_w = np.array(PRIVATE_WEIGHTS) / np.linalg.norm(PRIVATE_WEIGHTS)
    traits = np.concatenate([math.sqrt(1 - private) * sizes, math.sqrt(private) * private_w]) * math.sqrt(signal)
    return np.append(traits, math.sqrt(1 - signal))


def _check_shares(signal: float, private: float) -> None:
    if not 0 <= signal <= 1:
        raise ValueError(f"signal (share of the survival risk the images explain) must lie in [0, 1], got {signal}")
    if not 0 <= private <= 1:
        raise ValueError(f"private (share of the explained risk seen in one modality only) must lie in [0, 1], got {private}")


def case_traits(
    seed: int, index: int, rng: np.random.Generator, signal: float = DEFAULT_SIGNAL, private: float = DEFAULT_PRIVATE
) -> tuple[np.ndarray, float]:
    """Case ``index``'s latent traits ``z`` float [7] (order ``TRAIT_NAMES``) and its survival in days.

    The risk's quantile is ``frac(u0 + index * (golden ratio - 1))`` with ``u0`` drawn from ``seed``:
    a low-discrepancy sequence, so any number of cases covers the risk distribution evenly and the
    class shares stay within about one case of 36/25/39 %. The traits and the noise are then drawn
    from their normal distribution given that risk (weights: :func:`risk_weights`).
    """
    quantile = (np.random.default_rng([seed]).random() + index * (math.sqrt(5) - 1) / 2) % 1.0
    risk = _NORMAL.inv_cdf(min(max(quantile, 1e-6), 1 - 1e-6))
    weights = risk_weights(signal, private)
    g = rng.standard_normal(weights.size)
    v = risk * weights + g - weights * (weights @ g)  # (z, eps) ~ N(0, I) given weights @ (z, eps) = risk
    return v[:-1], float(math.exp(LOG_DAYS_MEAN - LOG_DAYS_SD * risk))


def trait_sizes(z: np.ndarray) -> TumourTraits:
    """The tumour of latent traits ``z`` [7] (or [3]: sizes only, fixed contrasts): each trait through
    the normal CDF onto its range, ``TRAIT_RANGES_MM`` for the sizes (mm) and
    ``hamfast.data.phantom.PRIVATE_CONTRASTS`` for the private contrasts."""
    quantiles = [_NORMAL.cdf(float(v)) for v in z]
    sizes = {name: lo + (hi - lo) * q for (name, (lo, hi)), q in zip(TRAIT_RANGES_MM.items(), quantiles[:3])}
    contrasts = None
    if len(quantiles) > 3:
        contrasts = tuple(lo + (hi - lo) * q for (_, _, (lo, hi)), q in zip(PRIVATE_CONTRASTS.values(), quantiles[3:]))
    return TumourTraits(**sizes, contrasts=contrasts)


def write_nifti(path: Path, volume: np.ndarray, spacing) -> None:
    """``volume`` [X, Y, Z] as a NIfTI file with LPS voxel axes (as BraTS) and ``spacing`` mm voxels."""
    import nibabel as nib

    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS voxel axes, like BraTS
    image = nib.Nifti1Image(volume, affine)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))


def _survival_cell(kind: str, days: float, rng: np.random.Generator) -> str:
    if kind == "censored":
        return f"ALIVE ({int(days * rng.uniform(0.3, 0.9))} days later)"
    if kind == "unparsable":
        return rng.choice(["", "NA", "unknown"])
    return f"{int(round(days))}"


def case_counts(n_cases: int) -> dict:
    """The case folders written for ``n_cases``: ``{"ok", "censored", "unparsable", "no_row"}`` counts."""
    n_extra = max(1, round(EXTRA_SHARE * n_cases))
    return {"ok": n_cases, "censored": n_extra, "unparsable": n_extra, "no_row": n_extra}


def estimate_bytes(n_cases: int, shape=DEFAULT_SHAPE) -> int:
    """An upper bound of the disk space of the cohort: every folder's five volumes uncompressed
    (int16 images, uint8 seg) plus headers; gzip makes the files several times smaller."""
    voxels = int(np.prod(shape))
    return sum(case_counts(n_cases).values()) * (len(MODALITIES) * (2 * voxels + 352) + voxels + 352)


def _free_bytes(folder: Path) -> int:
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _recorded_rows(path: Path) -> dict:
    """``case -> row`` (None for a case without a survival row) of the cases an interrupted write finished."""
    rows = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                rows[entry["case"]] = entry["row"]
            except (ValueError, KeyError, TypeError):  # the last line of a write cut short
                continue
    return rows


def make_synthetic_brats(
    root,
    n_cases: int = 213,
    shape=DEFAULT_SHAPE,
    seed: int = 0,
    *,
    signal: float = DEFAULT_SIGNAL,
    private: float = DEFAULT_PRIVATE,
    progress: bool = False,
) -> Path:
    """Write a synthetic BraTS2019-layout cohort under ``root`` and return ``root``.

    Writes ``root/MICCAI_BraTS_2019_Data_Training/{HGG,LGG}/<ID>/<ID>_{t1,t1ce,t2,flair,seg}.nii.gz``
    (int16 images, uint8 BraTS labels, LPS axes, voxel size from a 240 x 240 x 155 mm field of view)
    and ``survival_data.csv`` (``BraTS19ID, Age, Survival, ResectionStatus``).

    ``n_cases`` HGG cases get a usable survival in days. On top, ``max(1, round(0.015 n_cases))`` cases
    of each kind exercise the reader's report: censored (``ALIVE (N days later)``), unparsable
    survival (blank, ``NA``, ``unknown``), and LGG cases without a survival row (as in BraTS2019).
    Case ``i`` depends only on ``(seed, i)``, so a larger ``n_cases`` adds cases without changing the
    others. A marker file records the arguments: calling again with the same ones returns at once.
    Each case folder is written in a staging folder (``PARTIAL``) and renamed into place, and its
    survival row recorded there: an interrupted write (Ctrl-C) resumes where it stopped when called
    again with the same arguments. More than ``MAX_CASES`` cases, or an ``estimate_bytes`` beyond
    the free disk space, is refused before anything is written.

    Args:
        root: output folder (created).
        n_cases: cases with a usable survival label.
        shape: volume shape (X, Y, Z) in voxels, axial slices along Z; X, Y >= 64.
        seed: random seed.
        signal: share of the survival risk's variance that the images explain, in [0, 1].
        private: share of that explained variance carried by the traits each seen in one modality
            only, in [0, 1].
        progress: show a tqdm progress bar.

    Raises:
        FileExistsError: ``root`` already holds a cohort made with other arguments, or other files.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape[:2]) < 64 or shape[2] < 8:
        raise ValueError(f"shape must be (X, Y, Z) with X, Y >= 64 and Z >= 8, got {shape}")
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    if n_cases > MAX_CASES:
        raise ValueError(f"n_cases {n_cases} is beyond the limit of {MAX_CASES} synthetic cases (about "
                         f"{estimate_bytes(n_cases, shape) / 1e9:.3g} GB uncompressed); ask for fewer")
    _check_shares(signal, private)
    root = Path(root).expanduser()
    data_root = root / TRAINING_DIR
    arguments = {"version": _VERSION, "n_cases": int(n_cases), "shape": list(shape), "seed": int(seed),
                 "signal": float(signal), "private": float(private)}
    marker = data_root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == arguments:
        return root
    staging = data_root / PARTIAL
    resuming = (staging / "arguments.json").is_file() and json.loads((staging / "arguments.json").read_text()) == arguments
    if not resuming and data_root.exists() and any(data_root.iterdir()):
        raise FileExistsError(f"{data_root} is not empty (a cohort made with other arguments, or other files); "
                              "choose an empty folder")
    needed = estimate_bytes(n_cases, shape)
    if needed > _free_bytes(data_root):
        raise ValueError(f"{n_cases} synthetic cases need up to {needed / 1e9:.3g} GB; {data_root} has "
                         f"{_free_bytes(data_root) / 1e9:.3g} GB free")
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "arguments.json").write_text(json.dumps(arguments))
    rows_path = staging / "rows.jsonl"
    done = _recorded_rows(rows_path)

    kinds = [kind for kind, count in case_counts(n_cases).items() for _ in range(count)]
    iterator = enumerate(kinds)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(kinds), desc="writing synthetic BraTS", unit="case")
    with open(rows_path, "a") as record:
        for i, kind in iterator:
            case = f"BraTS19_SYN_{i:04d}_1"
            folder = data_root / ("LGG" if kind == "no_row" else "HGG") / case
            if case in done and folder.is_dir():
                continue
            if folder.exists():  # renamed into place, but its row not recorded: write it again
                shutil.rmtree(folder)
            rng = np.random.default_rng([seed, i])
            z, days = case_traits(seed, i, rng, signal, private)
            draft = staging / case
            if draft.exists():
                shutil.rmtree(draft)
            draft.mkdir()
            images, seg, spacing = render_case(shape, trait_sizes(z), rng)
            for modality, volume in zip(MODALITIES, images):
                write_nifti(draft / f"{case}_{modality}.nii.gz", volume, spacing)
            write_nifti(draft / f"{case}_{SEGMENTATION}.nii.gz", seg, spacing)
            row = None
            if kind != "no_row":
                age = float(np.clip(rng.normal(61, 12), 19, 86))
                resection = str(rng.choice(["GTR", "GTR", "STR", "NA"]))
                row = [case, f"{age:.3f}", str(_survival_cell(kind, days, rng)), resection]
            folder.parent.mkdir(parents=True, exist_ok=True)
            draft.rename(folder)
            record.write(json.dumps({"case": case, "row": row}) + "\n")
            record.flush()
            done[case] = row

    rows = [done[f"BraTS19_SYN_{i:04d}_1"] for i, kind in enumerate(kinds) if kind != "no_row"]
    with open(data_root / "survival_data.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["BraTS19ID", "Age", "Survival", "ResectionStatus"])
        writer.writerows(rows)
    marker.write_text(json.dumps(arguments))
    shutil.rmtree(staging)
    return root
