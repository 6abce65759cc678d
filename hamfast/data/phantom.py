"""One synthetic BraTS-like case: a smooth brain phantom with a glioma, imaged in four modalities.

Geometry is in millimetres on a BraTS-like field of view (240 x 240 x 155 mm, axes L-R, P-A, I-S),
so any volume shape gives the same anatomy. The tumour is nested: necrotic core (radius
``necrosis_mm``), enhancing rim (``rim_mm`` thick), a non-enhancing solid shell (nuisance), and
oedema out to ``oedema_mm`` from the centre. Each modality has its own tissue contrasts, chosen so
that each tumour trait is visible in some modalities only:

=========  ==========================  ======================  =====================
modality   necrosis (trait N)          enhancing rim (R)       oedema extent (O)
=========  ==========================  ======================  =====================
t1         dark core                   invisible               faint
t1ce       dark core inside the rim    bright rim              faint
t2         invisible (lesion uniform)  invisible               bright lesion
flair      invisible (lesion uniform)  invisible               brightest lesion
=========  ==========================  ======================  =====================

On top, each modality has one *private* contrast trait that only it shows (the tissue contrasts
of the table's lesion rows are scaled by it): the T1 hypointensity of the oedema (t1), the
strength of the rim's enhancement (t1ce), the T2 brightness of the oedema (t2) and its FLAIR
brightness (flair); see :data:`PRIVATE_CONTRASTS`.

Every scan gets Gaussian noise, a smooth multiplicative bias field and its own intensity scale,
and is stored as int16 with an exactly zero background (skull-stripped, like BraTS).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from hamfast.data.naming import MODALITIES

__all__ = ["FIELD_OF_VIEW_MM", "PRIVATE_CONTRASTS", "TumourTraits", "render_case"]

FIELD_OF_VIEW_MM = (240.0, 240.0, 155.0)

# Relative intensity of each tissue class (rows) per modality (columns, in the order of MODALITIES).
CONTRAST = np.array(
    [  # t1    t1ce   t2     flair
        [1.00, 1.00, 0.42, 0.48],  # white matter
        [0.72, 0.74, 0.62, 0.62],  # grey matter
        [0.28, 0.28, 1.00, 0.12],  # CSF
        [0.90, 0.90, 0.84, 1.00],  # oedema
        [0.90, 0.90, 0.84, 1.00],  # non-enhancing solid tumour
        [0.90, 1.90, 0.84, 1.00],  # enhancing rim
        [0.12, 0.12, 0.84, 1.00],  # necrosis
    ],
    dtype=np.float32,
)
# The private contrast traits: (tissue row, modality column) of CONTRAST and the range of values the
# trait's quantile maps onto (the table's value is the middle of the range).
PRIVATE_CONTRASTS = {
    "t1": (3, 0, (0.62, 0.98)),  # oedema in t1: from nearly white matter to clearly dark
    "t1ce": (5, 1, (1.3, 2.5)),  # enhancing rim in t1ce
    "t2": (3, 2, (0.58, 1.1)),  # oedema in t2
    "flair": (3, 3, (0.7, 1.3)),  # oedema in flair
}
BASE_SCALE = (550.0, 700.0, 900.0, 450.0)  # typical raw BraTS magnitudes per modality
NOISE = 0.035  # noise sd relative to white matter in T1
SEG_LABELS = {"necrosis": 1, "solid": 1, "rim": 4, "oedema": 2}  # BraTS: 1 NCR/NET, 2 ED, 4 ET


@dataclass(frozen=True)
class TumourTraits:
    """Sizes in mm that drive survival in the synthetic cohort.

    Attributes:
        necrosis_mm: radius of the necrotic core.
        rim_mm: thickness of the enhancing rim around it.
        oedema_mm: outer radius of the oedema (the whole lesion), measured from the tumour centre.
        contrasts: the private contrast of each modality (see :data:`PRIVATE_CONTRASTS`), or None
            for the fixed contrasts of ``CONTRAST``.
    """

    necrosis_mm: float
    rim_mm: float
    oedema_mm: float
    contrasts: Optional[tuple] = None

    def contrast_table(self) -> np.ndarray:
        """float32 [7, 4]: ``CONTRAST`` with the private contrasts (one per modality, in the order of
        ``MODALITIES``) written in; ``contrasts=None`` keeps the table's values."""
        table = CONTRAST.copy()
        if self.contrasts is not None:
            if len(self.contrasts) != len(MODALITIES):
                raise ValueError(f"contrasts must hold {len(MODALITIES)} values, got {self.contrasts}")
            for (row, column, _), value in zip(PRIVATE_CONTRASTS.values(), self.contrasts):
                table[row, column] = value
        return table


def _smooth_field(rng, coords, wavelength_mm: float, terms: int = 3) -> np.ndarray:
    """A smooth random field in about [-1, 1] at the points ``coords`` (two or three float32 [P] arrays,
    mm): a sum of products of cosines with about ``wavelength_mm`` period, along randomly rotated axes."""
    rotation, _ = np.linalg.qr(rng.standard_normal((len(coords), len(coords))))
    rotated = [sum(float(r) * c for r, c in zip(row, coords)) for row in rotation]
    field = np.zeros_like(coords[0])
    for _ in range(terms):
        term = np.ones_like(coords[0])
        for axis in rotated:
            omega = 2 * np.pi / (wavelength_mm * rng.uniform(0.7, 1.4))
            term *= np.cos(omega * axis + rng.uniform(0, 2 * np.pi))
        field += term
    return field / math.sqrt(terms / 2)


def _ramp(distance, width: float = 1.0):
    """Soft inside-ness from a signed distance in mm (negative inside): 1 inside, 0 outside, linear over ``width``."""
    return np.clip(0.5 - distance / width, 0.0, 1.0)


def render_case(shape: tuple[int, int, int], traits: TumourTraits, rng: np.random.Generator, *,
                contrast: Optional[np.ndarray] = None, scales: Optional[Sequence[float]] = None):
    """The modalities (the four of ``MODALITIES`` unless ``contrast`` says otherwise) and the
    segmentation of one case.

    Args:
        shape: volume shape (X, Y, Z) in voxels; axial slices along Z.
        traits: the tumour sizes (and the private contrasts, used when ``contrast`` is None).
        rng: the case's random generator (anatomy, position, nuisance sizes, noise, bias, scale).
        contrast: float [7, M], the relative intensity of each tissue class (rows as ``CONTRAST``)
            in each of M modalities; None: ``traits.contrast_table()`` (M = 4).
        scales: M typical raw magnitudes; None: ``BASE_SCALE``.

    Returns:
        ``(images, seg, spacing)``: M int16 [X, Y, Z] volumes (order of the columns), uint8
        [X, Y, Z] with BraTS labels (0, 1, 2, 4), and the voxel size in mm (3 floats); arrays in
        Fortran order.
    """
    # Python floats and float32 arrays throughout: a numpy float64 scalar would promote to float64.
    spacing = [fov / n for fov, n in zip(FIELD_OF_VIEW_MM, shape)]
    axes = [((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(shape, spacing)]

    # Brain: an ellipsoid with a gently wavy surface (radius within +-7 %). Work on the voxels near it.
    semi = [base * f for base, f in zip((66.0, 82.0, 58.0), rng.uniform(0.92, 1.05, 3).tolist())]
    centre_z = rng.uniform(-6, 6)
    box = [np.flatnonzero(np.abs(a - c) <= 1.12 * r) for a, c, r in zip(axes, (0, 0, centre_z), semi)]
    index = [g.ravel() for g in np.meshgrid(*box, indexing="ij")]
    x, y, z = (axes[i][index[i]] for i in range(3))
    rho = np.sqrt((x / semi[0]) ** 2 + (y / semi[1]) ** 2 + ((z - centre_z) / semi[2]) ** 2)
    near = rho < 1.1
    index, x, y, z, rho = [i[near] for i in index], x[near], y[near], z[near], rho[near]
    rho *= 1 + 0.03 * _smooth_field(rng, (x, y, z), 70.0)
    depth = (1 - rho) * (sum(semi) / 3)  # approx. distance below the brain surface, mm
    inside = depth > -1.0
    index = [i[inside] for i in index]
    x, y, z, depth = x[inside], y[inside], z[inside], depth[inside]
    coords = (x, y, z)

    # Healthy tissue: sulcal CSF at the surface and in the interhemispheric fissure, a cortex with a
    # folded inner boundary, deep grey nuclei, white matter, and two lateral ventricles.
    csf = np.maximum(_ramp(depth - rng.uniform(1.5, 3.0)), _ramp(np.abs(x) - 1.2) * _ramp(depth - 30.0, 4.0))
    cortex = rng.uniform(5.0, 8.0) + 3.5 * _smooth_field(rng, coords, 14.0, terms=4)
    gm = (1 - csf) * _ramp(depth - cortex, 2.0)
    for side in (-1, 1):
        nucleus = np.sqrt(((x - side * 19) / 9.0) ** 2 + (y / 15.0) ** 2 + ((z - centre_z + 2) / 10.0) ** 2)
        gm = np.maximum(gm, _ramp((nucleus - 1) * 9.0, 3.0))
    vent_semi = [base * f for base, f in zip((5.0, 22.0, 11.0), rng.uniform(0.7, 1.4, 3).tolist())]
    for side in (-1, 1):
        vx = x - side * rng.uniform(7, 10)
        vy, vz = y - 4, z - centre_z - 8
        v_rho = np.sqrt((vx / vent_semi[0]) ** 2 + (vy / vent_semi[1]) ** 2 + (vz / vent_semi[2]) ** 2)
        vent = _ramp((v_rho - 1) * vent_semi[0])
        csf = np.maximum(csf, vent)
        gm *= 1 - vent
    wm = 1 - csf - gm

    # Tumour: nested shells around a centre in one hemisphere, with irregular margins.
    side = 1 if rng.random() < 0.5 else -1
    centre = (side * rng.uniform(24, 32), rng.uniform(-25, 25), centre_z + rng.uniform(-4, 4))
    stretch = rng.uniform(0.85, 1.15, 3).tolist()
    offsets = [(c - c0) / s for c, c0, s in zip(coords, centre, stretch)]
    # Margins vary in-plane only and the oedema is flatter in z, so a lesion's cross-section is
    # largest through its centre and the reader's largest-tumour slice shows the core.
    core_dist = np.sqrt(sum(o**2 for o in offsets)) * (1 + 0.08 * _smooth_field(rng, (x, y), 30.0))
    oedema_dist = np.sqrt(offsets[0] ** 2 + offsets[1] ** 2 + (offsets[2] / 0.7) ** 2)
    oedema_dist *= 1 + 0.12 * _smooth_field(rng, (x, y), 25.0)
    necrosis_r = traits.necrosis_mm
    rim_r = necrosis_r + traits.rim_mm
    core_r = rim_r + rng.uniform(0.0, 2.0)
    oedema_r = max(traits.oedema_mm, core_r + 3.0)
    in_brain = _ramp(-depth, 2.0)  # the tumour does not leave the brain
    necrosis = _ramp(core_dist - necrosis_r) * in_brain
    rim = _ramp(core_dist - rim_r) * in_brain  # necrosis + rim
    core = _ramp(core_dist - core_r) * in_brain  # necrosis + rim + solid
    lesion = np.maximum(_ramp(oedema_dist - oedema_r, 2.0) * in_brain * (1 - 0.8 * csf), core)
    healthy = 1 - lesion
    tissue = (wm * healthy, gm * healthy, csf * healthy, lesion - core, core - rim, rim - necrosis, necrosis)

    seg_values = np.zeros(x.shape, dtype=np.uint8)
    for fraction, label in ((lesion, "oedema"), (core, "solid"), (rim, "rim"), (necrosis, "necrosis")):
        seg_values[fraction >= 0.5] = SEG_LABELS[label]

    # Volumes in Fortran order, the order NIfTI stores, so that writing them needs no transposed copy.
    # Weighted sums are written out, not matrix products: BLAS threads crawl on a busy machine.
    flat = np.ravel_multi_index(index, shape, order="F")
    rel = (x / 120.0, y / 120.0, (z - centre_z) / 80.0)
    terms = rel + tuple(r * r for r in rel)  # a quadratic bias field
    images = []
    contrast = traits.contrast_table() if contrast is None else np.asarray(contrast, dtype=np.float32)
    scales = BASE_SCALE if scales is None else tuple(scales)
    if contrast.shape != (len(CONTRAST), len(scales)):
        raise ValueError(f"contrast must be [{len(CONTRAST)}, M] with M = {len(scales)} scales, got {contrast.shape}")
    for m in range(contrast.shape[1]):
        clean = sum(float(c) * t for c, t in zip(contrast[:, m], tissue))
        coefficients = np.concatenate([rng.normal(0, 0.12, 3), rng.normal(0, 0.08, 3)]).tolist()
        bias = np.exp(sum(c * t for c, t in zip(coefficients, terms)))
        noisy = clean * bias + NOISE * rng.standard_normal(clean.shape, dtype=np.float32)
        scale = scales[m] * rng.uniform(0.6, 1.6)
        volume = np.zeros(shape, dtype=np.int16, order="F")
        volume.reshape(-1, order="F")[flat] = np.clip(np.rint(noisy * scale), 1, np.iinfo(np.int16).max)
        images.append(volume)
    seg = np.zeros(shape, dtype=np.uint8, order="F")
    seg.reshape(-1, order="F")[flat] = seg_values
    return images, seg, spacing
