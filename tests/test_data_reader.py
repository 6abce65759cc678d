"""The BraTS reader on small hand-made NIfTI layouts: labels, report, real missingness, errors, cache, cohort files.

Every case here is made up: 20 x 24 x 10 int16 volumes with a box-shaped brain and a seg whose
largest tumour slice is known.
"""
import csv
import json
import warnings

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from hamfast.data import CaseError, Cohort, MODALITIES, load_case, open_cohort, prepare_brats  # noqa: E402
from hamfast.data.brats import TRAINING_DIR  # noqa: E402

SHAPE = (20, 24, 10)
TUMOUR_SLICE = 6
NAMINGS = {
    "2019": ("_", {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "seg": "seg"}),
    "2023": ("-", {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"}),
}


def volumes(seed=0):
    """Four int16 modalities (a noisy box-shaped brain, background 0) and a uint8 seg."""
    rng = np.random.default_rng(seed)
    images = {}
    for i, modality in enumerate(MODALITIES):
        volume = np.zeros(SHAPE, dtype=np.int16)
        volume[3:17, 4:20, :] = rng.integers(50, 400, (14, 16, SHAPE[2])) * (i + 1)
        images[modality] = volume
    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg[8:12, 8:11, TUMOUR_SLICE] = 1  # 12 voxels
    seg[8:10, 8:10, 2] = 2  # 4 voxels
    return images, seg


def write_case(folder, case, *, naming="2019", suffix=".nii.gz", skip=(), seed=0, override=None):
    """Write one case folder; ``skip`` leaves roles out, ``override`` replaces arrays by role."""
    sep, names = NAMINGS[naming]
    folder.mkdir(parents=True)
    images, seg = volumes(seed)
    arrays = {**images, "seg": seg, **(override or {})}
    for role, array in arrays.items():
        if role not in skip:
            nib.save(nib.Nifti1Image(array, np.eye(4)), str(folder / f"{case}{sep}{names[role]}{suffix}"))
    return folder


def write_table(path, rows, header=("BraTS19ID", "Age", "Survival", "ResectionStatus")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def root(tmp_path):
    """Seven HGG cases with survival rows of every kind, one LGG case without a row, and a row without images."""
    data = tmp_path / "brats" / TRAINING_DIR
    survival = {
        "A": "200", "B": "300", "C": "450", "D": "451.5", "E": "ALIVE (500 days later)", "F": "", "G": "about a year",
    }
    for i, case in enumerate(survival):
        write_case(data / "HGG" / case, case, seed=i)
    write_case(data / "LGG" / "H", "H")
    rows = [[case, "" if case == "B" else "50.5", days, "GTR"] for case, days in survival.items()]
    write_table(data / "survival_data.csv", rows + [["Z", "60", "100", "NA"]])
    return tmp_path / "brats"


def read(root, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cohort = prepare_brats(root, **kwargs)
    return cohort, [str(w.message) for w in caught]


def test_labels_values_and_report(root):
    cohort, messages = read(root)
    assert cohort.ids == ["A", "B", "C", "D"]
    np.testing.assert_array_equal(cohort.labels, [0, 1, 1, 2])  # < 300 short, 300..450 mid, > 450 long
    np.testing.assert_array_equal(cohort.survival_days, [200, 300, 450, 451.5])
    assert np.isnan(cohort.age[1]) and cohort.age[0] == 50.5
    np.testing.assert_array_equal(cohort.slice_index, [TUMOUR_SLICE] * 4)
    assert cohort.images.dtype == np.float32 and cohort.images.shape == (4, 4, 16, 16)  # brain box 14 x 16, squared
    assert cohort.available.all()
    flat = cohort.images.reshape(4, 4, -1)
    np.testing.assert_allclose(flat.max(-1), 1)
    np.testing.assert_allclose(flat.min(-1), 0)
    counts = cohort.report["counts"]
    assert counts["case_folders"] == 8 and counts["kept"] == 4 and counts["skipped"] == 4
    assert counts["skipped_by_reason"] == {"censored": 1, "no_survival_row": 1, "unparsable_survival": 2}
    assert cohort.report["survival_rows_without_images"] == ["Z"]
    skipped = {entry["id"]: entry["reason"] for entry in cohort.report["skipped"]}
    assert skipped == {"E": "censored", "F": "unparsable_survival", "G": "unparsable_survival", "H": "no_survival_row"}
    assert any("case F" in m for m in messages) and any("case G" in m and "about a year" in m for m in messages)


def test_include_censored_and_thresholds(root):
    cohort, _ = read(root, include_censored=True, survival_thresholds=(250, 460))
    assert cohort.ids == ["A", "B", "C", "D", "E"]
    np.testing.assert_array_equal(cohort.labels, [0, 1, 1, 1, 2])
    assert cohort.survival_days[-1] == 500 and cohort.report["censored_kept"] == ["E"]
    with pytest.raises(ValueError, match="survival_thresholds"):
        prepare_brats(root, survival_thresholds=(450, 300))


def test_missing_modality_sets_availability_and_zero_channel(root):
    data = root / TRAINING_DIR / "HGG"
    (data / "B" / "B_t2.nii.gz").unlink()
    (data / "C" / "C_t1.nii.gz").unlink()
    (data / "C" / "C_flair.nii.gz").unlink()
    full, _ = read(root, size=32)
    np.testing.assert_array_equal(full.available, [[1, 1, 1, 1], [1, 1, 0, 1], [0, 1, 1, 0], [1, 1, 1, 1]])
    assert not full.images[1, 2].any() and not full.images[2, [0, 3]].any()
    assert full.images[1, [0, 1, 3]].max() > 0.9 and full.images.shape == (4, 4, 32, 32)
    assert full.report["counts"]["missing_modality"] == {"t1": 1, "t1ce": 0, "t2": 1, "flair": 1}


def test_later_namings_nii_and_flat_layout(tmp_path):
    """BraTS 2023 names, .nii files, case folders directly under the root, a BraTS 2020 table."""
    write_case(tmp_path / "BraTS-GLI-00001-000", "BraTS-GLI-00001-000", naming="2023")
    write_case(tmp_path / "P2", "P2", naming="2019", suffix=".nii", skip=("t1ce",))
    write_table(tmp_path / "survival_info.csv", [["BraTS-GLI-00001-000", "40", "700"], ["P2", "41", "100"]],
                header=("Brats20ID", "Age", "Survival_days"))
    cohort, _ = read(tmp_path)
    assert cohort.ids == ["BraTS-GLI-00001-000", "P2"]
    np.testing.assert_array_equal(cohort.labels, [2, 0])
    np.testing.assert_array_equal(cohort.available, [[1, 1, 1, 1], [1, 0, 1, 1]])


def bad_case(root, kind):
    """Replace case B by a broken one; returns the file that should be named."""
    folder = root / TRAINING_DIR / "HGG" / "B"
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    images, seg = volumes()
    if kind == "shape_mismatch":
        write_case(folder, "B", override={"t2": np.ones((20, 24, 9), np.int16)})
        return folder / "B_t2.nii.gz"
    if kind == "non_finite":
        flair = images["flair"].astype(np.float32)
        flair[5, 5, 5] = np.nan
        write_case(folder, "B", override={"flair": flair})
        return folder / "B_flair.nii.gz"
    if kind == "unreadable":
        write_case(folder, "B", skip=("t1",))
        (folder / "B_t1.nii.gz").write_bytes(b"not a nifti file")
        return folder / "B_t1.nii.gz"
    if kind == "no_modality":
        write_case(folder, "B", skip=MODALITIES)
        return folder
    if kind == "no_segmentation":
        write_case(folder, "B", skip=("seg",))
        return folder
    if kind == "empty_segmentation":
        write_case(folder, "B", override={"seg": np.zeros(SHAPE, np.uint8)})
        return folder / "B_seg.nii.gz"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["shape_mismatch", "non_finite", "unreadable", "no_modality", "no_segmentation", "empty_segmentation"]
)
def test_bad_case_raises_naming_the_file_or_is_skipped_and_reported(root, kind):
    path = bad_case(root, kind)
    with pytest.raises(CaseError) as info:
        prepare_brats(root)
    assert info.value.case == "B" and info.value.reason == kind and info.value.path == path
    assert str(path) in str(info.value) and "case B" in str(info.value)
    cohort, messages = read(root, on_error="skip")
    assert cohort.ids == ["A", "C", "D"]
    assert {"id": "B", "reason": kind, "detail": str(info.value)} in cohort.report["skipped"]
    assert cohort.report["counts"]["skipped_by_reason"][kind] == 1
    assert any("skipping case B" in m for m in messages)


def test_slice_policy_for_cases_without_segmentation(root):
    bad_case(root, "no_segmentation")
    fixed, _ = read(root, slice_policy=3)
    np.testing.assert_array_equal(fixed.slice_index, [TUMOUR_SLICE, 3, TUMOUR_SLICE, TUMOUR_SLICE])  # seg first
    brain, _ = read(root, slice_policy="largest_brain")
    assert brain.slice_index[1] == 0  # every slice has the same brain area: the first
    with pytest.raises(CaseError, match="out of range") as info:
        prepare_brats(root, slice_policy=10)
    assert info.value.reason == "bad_slice_index"
    with pytest.raises(ValueError, match="slice_policy"):
        prepare_brats(root, slice_policy="middle")


def test_load_case_matches_the_reader(root):
    cohort, _ = read(root, size=40, percentile=99)
    image, available, index = load_case(root / TRAINING_DIR / "HGG" / "C", size=40, percentile=99)
    np.testing.assert_array_equal(image, cohort.images[cohort.ids.index("C")])
    assert available.dtype == bool and available.all() and index == TUMOUR_SLICE
    image, _, index = load_case(root / TRAINING_DIR / "HGG" / "C", slice_index=-1)
    assert index == SHAPE[2] - 1 and image.shape == (4, 16, 16)
    with pytest.raises(ValueError, match="size"):
        load_case(root / TRAINING_DIR / "HGG" / "C", size=0)


def test_load_case_without_any_modality_names_the_folder(tmp_path):
    folder = write_case(tmp_path / "P", "P", skip=MODALITIES)
    with pytest.raises(CaseError, match="no modality file") as info:
        load_case(folder)
    assert info.value.path == folder and str(folder) in str(info.value)


def test_cache_is_loaded_without_reading_nifti(root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first, _ = read(root, cache_dir=cache, size=32)
    assert first.report["cache"]["loaded"] is False and len(list(cache.glob("*.npz"))) == 1

    def no_reading(*args, **kwargs):
        raise AssertionError("NIfTI read although the cache should be used")

    monkeypatch.setattr("hamfast.data.case.read_volume", no_reading)
    second, _ = read(root, cache_dir=cache, size=32)
    assert second.report["cache"]["loaded"] is True
    for name in ("images", "available", "labels", "survival_days", "slice_index"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))
    np.testing.assert_array_equal(second.age, first.age)
    assert second.ids == first.ids and second.settings == first.settings
    with pytest.raises(AssertionError, match="NIfTI read"):  # other settings: read again
        prepare_brats(root, cache_dir=cache, size=48)
    monkeypatch.undo()
    next(cache.glob("*.npz")).write_bytes(b"truncated")  # a broken cache is read again, with a warning
    third, messages = read(root, cache_dir=cache, size=32)
    assert third.report["cache"]["loaded"] is False and any("unreadable" in m for m in messages)
    np.testing.assert_array_equal(third.images, first.images)
    monkeypatch.setattr("hamfast.data.case.read_volume", no_reading)
    (root / TRAINING_DIR / "HGG" / "A" / "A_t1.nii.gz").unlink()  # changed files: read again
    with pytest.raises(AssertionError, match="NIfTI read"):
        prepare_brats(root, cache_dir=cache, size=32)


def test_cohort_save_load_subset_and_manifest(root, tmp_path):
    cohort, _ = read(root, size=32)
    path = cohort.save(tmp_path / "out" / "cohort")
    assert path == tmp_path / "out" / "cohort.npz"
    manifest = json.loads((tmp_path / "out" / "cohort.json").read_text())
    assert manifest["n"] == 4 and manifest["settings"]["size"] == 32 and manifest["class_counts"] == [1, 2, 1]
    assert manifest["counts"]["kept"] == 4 and manifest["source"]["root"] == str(root.resolve())
    loaded = Cohort.load(tmp_path / "out" / "cohort.npz")
    np.testing.assert_array_equal(loaded.images, cohort.images)
    assert loaded.ids == cohort.ids and loaded.report == json.loads(json.dumps(cohort.report))
    part = loaded.subset([2, 0])
    assert len(part) == 2 and part.ids == ["C", "A"]
    np.testing.assert_array_equal(part.labels, cohort.labels[[2, 0]])
    assert len(loaded.subset(loaded.labels == 1)) == 2 and len(loaded.subset([])) == 0
    with pytest.raises(ValueError, match="images must be"):
        Cohort(cohort.images[:, :3], cohort.available, cohort.labels, cohort.survival_days, cohort.age, cohort.ids,
               cohort.slice_index)


def test_open_cohort_accepts_root_cache_folder_and_file(root, tmp_path):
    cache = tmp_path / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = open_cohort(root, size=32, cache_dir=cache)
    read(root, size=48, cache_dir=cache)
    from_folder = open_cohort(cache, size=32)
    np.testing.assert_array_equal(from_folder.images, direct.images)
    with pytest.raises(ValueError, match="2 caches match"):
        open_cohort(cache)
    with pytest.raises(ValueError, match="no cache matches"):
        open_cohort(cache, size=64)
    file = next(p for p in cache.glob("*.npz") if open_cohort(p).settings["size"] == 48)
    assert open_cohort(file.with_suffix(""), size=48).images.shape[-1] == 48
    with pytest.raises(ValueError, match="other settings"):
        open_cohort(file, size=32)
    with pytest.raises(TypeError):
        open_cohort(file, sizes=32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a BraTS root"):
        open_cohort(tmp_path / "empty")
    with pytest.raises(ValueError, match="no such"):
        open_cohort(tmp_path / "missing.npz")


def test_user_paths_are_expanded(root, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cohort, _ = read(root, cache_dir="~/cohorts", size=32)
    assert cohort.report["cache"]["path"].startswith(str(tmp_path / "cohorts"))
    assert len(open_cohort("~/cohorts")) == 4


def test_progress_bar(root, capsys):
    read(root, progress=True)
    assert "reading BraTS cases" in capsys.readouterr().err
