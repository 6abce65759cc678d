"""The BraTS reader on real MRI: the two real cases of ../shared/data/real_mri arranged as a BraTS2019 copy.

The survival rows are MADE UP (no survival data exists for these patients): TCGA-DU-7294 gets
250 days (class 0, short) and BraTS-GLI-00001-000 600 days (class 2, long). The files are symlinked
into a temporary layout, never copied into the repository. Skipped where ../shared is absent.
"""
import csv
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from hamfast.data import CaseError, load_case, prepare_brats  # noqa: E402
from hamfast.data.brats import TRAINING_DIR  # noqa: E402

# ../shared beside the checkout; HAMFAST_REAL_MRI points elsewhere (a git worktree one level deeper)
REAL = Path(os.environ.get("HAMFAST_REAL_MRI") or Path(__file__).resolve().parents[2] / "shared" / "data" / "real_mri")
pytestmark = pytest.mark.skipif(not (REAL / "TCGA-DU-7294").is_dir(), reason=f"real MRI fixtures not found at {REAL}")

TCGA = "BraTS19_TCGA_DU_7294_1"  # renamed the BraTS2019 way, with BraTS2019 file names
GLI = "BraTS-GLI-00001-000"  # kept with its BraTS 2023 file names, no segmentation
TCGA_FILES = {"t1": "t1", "t1ce": "t1c", "t2": "t2", "flair": "flair", "seg": "seg"}  # BraTS2019 role: fixture name


def arrange(root: Path, *, leave_out=()) -> Path:
    data = root / TRAINING_DIR
    tcga = data / "HGG" / TCGA
    tcga.mkdir(parents=True)
    for role, name in TCGA_FILES.items():
        if role not in leave_out:
            (tcga / f"{TCGA}_{role}.nii.gz").symlink_to(REAL / "TCGA-DU-7294" / f"{name}.nii.gz")
    (data / "HGG" / GLI).mkdir()
    for path in sorted((REAL / GLI).iterdir()):
        (data / "HGG" / GLI / path.name).symlink_to(path)
    with open(data / "survival_data.csv", "w", newline="") as handle:
        rows = [["BraTS19ID", "Age", "Survival", "ResectionStatus"], [TCGA, "55", "250", "GTR"], [GLI, "", "600", "NA"]]
        csv.writer(handle).writerows(rows)
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return arrange(tmp_path_factory.mktemp("real_brats"))


@pytest.fixture(scope="module")
def cohort(root):
    return prepare_brats(root, size=128, slice_policy="largest_brain")


def test_case_without_segmentation_is_an_error_naming_it(root):
    with pytest.raises(CaseError, match=GLI) as info:
        prepare_brats(root)
    assert info.value.reason == "no_segmentation" and info.value.case == GLI


def test_whole_reader_on_real_files(cohort):
    assert cohort.ids == [GLI, TCGA]  # sorted by id
    assert cohort.images.shape == (2, 4, 128, 128) and cohort.images.dtype == np.float32
    assert cohort.available.all()
    assert 0 <= cohort.images.min() and cohort.images.max() <= 1
    assert (cohort.images.reshape(2, 4, -1).max(-1) > 0.8).all()  # each modality spans the range
    np.testing.assert_array_equal(cohort.labels, [2, 0])
    assert cohort.slice_index[1] == 113  # TCGA: largest tumour area, from the seg
    assert np.isnan(cohort.age[0]) and cohort.age[1] == 55


def test_largest_brain_policy_on_the_case_without_segmentation(cohort):
    volumes = [np.asanyarray(nib.load(str(path)).dataobj) for path in sorted((REAL / GLI).iterdir())]
    brain_area = np.logical_or.reduce([v != 0 for v in volumes]).sum((0, 1))
    assert cohort.slice_index[0] == int(np.argmax(brain_area))


def test_skip_reports_the_case_without_segmentation(root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cohort = prepare_brats(root, size=96, on_error="skip")
    assert cohort.ids == [TCGA]
    assert [(e["id"], e["reason"]) for e in cohort.report["skipped"]] == [(GLI, "no_segmentation")]
    assert any(GLI in str(w.message) for w in caught)


def test_native_resolution_is_exactly_min_max(root):
    image, available, index = load_case(root / TRAINING_DIR / "HGG" / TCGA)
    assert index == 113 and available.all()
    files = [REAL / "TCGA-DU-7294" / f"{name}.nii.gz" for name in ("t1", "t1c", "t2", "flair")]
    slices = [np.asanyarray(nib.load(str(path)).dataobj)[..., 113] for path in files]
    brain = np.logical_or.reduce([s != 0 for s in slices])
    side = max(np.ptp(np.flatnonzero(brain.any(1))), np.ptp(np.flatnonzero(brain.any(0)))) + 1
    assert image.shape == (4, side, side)  # the brain's bounding box squared, 1 mm pixels
    np.testing.assert_allclose(image.reshape(4, -1).max(1), 1)
    np.testing.assert_allclose(image.reshape(4, -1).min(1), 0)


def test_removed_modality_file_sets_availability_zero(tmp_path, cohort):
    root = arrange(tmp_path, leave_out=("t2",))
    partial = prepare_brats(root, size=128, slice_policy="largest_brain")
    np.testing.assert_array_equal(partial.available[1], [True, True, False, True])
    assert not partial.images[1, 2].any()
    assert partial.slice_index[1] == 113
    np.testing.assert_array_equal(partial.images[1, [0, 1, 3]], cohort.images[1, [0, 1, 3]])


def test_load_case_reads_the_fixture_folder_naming(cohort):
    """The fixture folder's bare names (t1, t1c, t2, flair, seg) are read as they are."""
    image, available, index = load_case(REAL / "TCGA-DU-7294", size=128)
    assert index == 113 and available.all()
    np.testing.assert_array_equal(image, cohort.images[1])
    clipped, _, _ = load_case(REAL / "TCGA-DU-7294", size=128, percentile=99)
    assert clipped.max() <= 1 and np.abs(clipped - image).max() > 0.05


def test_damaged_real_file_is_refused_naming_it(tmp_path):
    """200 bytes flipped in the middle of a real .nii.gz (a copy in tmp_path; the other files are symlinks)."""
    case = tmp_path / "TCGA-DU-7294"
    case.mkdir()
    for path in (REAL / "TCGA-DU-7294").iterdir():
        (case / path.name).symlink_to(path)
    damaged = case / "t2.nii.gz"
    data = bytearray(damaged.read_bytes())
    damaged.unlink()
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(b ^ 0xFF for b in data[middle : middle + 200])
    damaged.write_bytes(bytes(data))
    with pytest.raises(CaseError) as info:
        load_case(case)
    message = str(info.value)
    assert info.value.reason == "unreadable" and info.value.path == damaged and "\n" not in message
    assert message.startswith("case TCGA-DU-7294: damaged gzip data") and message.endswith(f"({damaged})")


def test_background_slice_of_the_real_case_is_refused():
    """`--slice-index -1` on the real case lands in background (the brain spans axial slices 9 to 139)."""
    with pytest.raises(CaseError) as info:
        load_case(REAL / "TCGA-DU-7294", slice_index=-1)
    assert info.value.reason == "no_brain_in_slice"
    assert str(info.value) == ("case TCGA-DU-7294: axial slice 154 holds no brain: every modality is zero there (brain "
                               f"in axial slices 9 to 139); choose another slice ({REAL / 'TCGA-DU-7294'})")
    with pytest.warns(UserWarning, match=r"^case TCGA-DU-7294: axial slice 12 holds little brain \(1423 pixels, 9 %"):
        load_case(REAL / "TCGA-DU-7294", slice_index=12)


@pytest.mark.parametrize("case", ["TCGA-DU-7294", GLI])
def test_real_cases_read_without_any_warning(case):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image, available, _ = load_case(REAL / case, slice_index="largest_brain")
    assert available.all() and image.max() == 1
