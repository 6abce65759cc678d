"""Data for HAM: the BraTS reader, the synthetic BraTS-like cohort, splits, missingness, augmentation.

Channel order everywhere: ``MODALITIES = ("t1", "t1ce", "t2", "flair")``.

* :func:`prepare_brats` / :func:`open_cohort` / :func:`load_case`: read a BraTS-layout copy (or one
  patient folder) into one normalised axial slice per patient (:class:`Cohort`).
* :func:`make_synthetic_brats`: write the synthetic cohort in the same layout.
* :func:`stratified_split`, :func:`drop_one_modality` (Experiment A), :func:`drop_random_modalities`
  (Experiment B).
* :class:`ModalityAugment` (MONAI) and :class:`ModalityDataset` (torch).

nibabel and monai are imported only by the functions that need them, so this package imports
without them.
"""
from hamfast.data.augment import ModalityAugment
from hamfast.data.brats import open_cohort, prepare_brats
from hamfast.data.case import load_case
from hamfast.data.cohort import Cohort
from hamfast.data.dataset import ModalityDataset
from hamfast.data.naming import MODALITIES
from hamfast.data.splits import drop_one_modality, drop_random_modalities, stratified_split
from hamfast.data.survival import survival_class
from hamfast.data.synthetic import make_synthetic_brats
from hamfast.data.volumes import CaseError

__all__ = [
    "MODALITIES",
    "Cohort",
    "CaseError",
    "prepare_brats",
    "open_cohort",
    "load_case",
    "survival_class",
    "make_synthetic_brats",
    "stratified_split",
    "drop_one_modality",
    "drop_random_modalities",
    "ModalityAugment",
    "ModalityDataset",
]
