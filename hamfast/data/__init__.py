"""Data for HAM: the dataset readers (BraTS, nnU-Net), synthetic datasets, splits, missingness, augmentation.

A cohort's channels follow its ``modalities`` (BraTS: ``MODALITIES = ("t1", "t1ce", "t2", "flair")``)
and its labels its ``classes``.

* :func:`prepare_brats` / :func:`load_case`: read a BraTS-layout copy (or one patient folder) into
  one normalised axial slice per patient (:class:`Cohort`).
* :func:`prepare_nnunet` / :func:`load_nnunet_case`: the same for an nnU-Net raw dataset (any 2 to
  8 modalities, any classes) or one case of it.
* :func:`open_cohort`: a dataset folder of either layout, or a cache (``--data``).
* :func:`make_synthetic_brats`, :func:`make_synthetic_nnunet`: write synthetic datasets in those layouts.
* :func:`stratified_split`, :func:`drop_one_modality` (Experiment A), :func:`drop_random_modalities`
  (Experiment B).
* :class:`ModalityAugment` (MONAI) and :class:`ModalityDataset` (torch).

nibabel and monai are imported only by the functions that need them, so this package imports
without them.
"""
from hamfast.data.augment import ModalityAugment
from hamfast.data.brats import prepare_brats
from hamfast.data.case import load_case
from hamfast.data.cohort import Cohort
from hamfast.data.dataset import ModalityDataset
from hamfast.data.naming import MODALITIES
from hamfast.data.nnunet import load_nnunet_case, prepare_nnunet
from hamfast.data.sources import dataset_layout, open_cohort
from hamfast.data.splits import drop_one_modality, drop_random_modalities, stratified_split
from hamfast.data.survival import survival_class
from hamfast.data.synthetic import make_synthetic_brats
from hamfast.data.synthetic_nnunet import make_synthetic_nnunet
from hamfast.data.volumes import CaseError

__all__ = [
    "MODALITIES",
    "Cohort",
    "CaseError",
    "prepare_brats",
    "prepare_nnunet",
    "open_cohort",
    "dataset_layout",
    "load_case",
    "load_nnunet_case",
    "survival_class",
    "make_synthetic_brats",
    "make_synthetic_nnunet",
    "stratified_split",
    "drop_one_modality",
    "drop_random_modalities",
    "ModalityAugment",
    "ModalityDataset",
]
