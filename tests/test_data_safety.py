"""Hostile inputs to the data path (issue 9, items 1 and 5): each is refused with a one-line error naming
the file, case or slice, or read with a warning that says what was left out; never silently wrong.

Every case is made up: 20 x 24 x 10 int16 volumes with a noisy box-shaped brain in axial slices 1..7
(slices 0, 8 and 9 are background) and a seg whose largest tumour slice is 5.
"""
import csv
import json
import os
import warnings

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from hamfast.data import CaseError, MODALITIES, load_case, open_cohort, prepare_brats  # noqa: E402
from hamfast.data.naming import case_files, file_role, scan_case_folder  # noqa: E402
from hamfast.data.survival import read_survival_table  # noqa: E402
from hamfast.data.volumes import read_volume  # noqa: E402

SHAPE = (20, 24, 10)
BRAIN = (slice(3, 17), slice(4, 20), slice(1, 8))
TUMOUR_SLICE = 5


def volumes(seed=0):
    rng = np.random.default_rng(seed)
    images = {}
    for i, modality in enumerate(MODALITIES):
        volume = np.zeros(SHAPE, dtype=np.int16)
        volume[BRAIN] = rng.integers(50, 400, (14, 16, 7)) * (i + 1)
        images[modality] = volume
    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg[8:12, 8:11, TUMOUR_SLICE] = 1
    return images, seg


def save(array, path):
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def write_case(folder, case=None, *, skip=(), override=None, seed=0, names=None):
    """One case folder with BraTS2019 names (``names`` maps roles to other file names)."""
    case = case or folder.name
    folder.mkdir(parents=True)
    images, seg = volumes(seed)
    for role, array in {**images, "seg": seg, **(override or {})}.items():
        if role not in skip:
            save(array, folder / (names or {}).get(role, f"{case}_{role}.nii.gz"))
    return folder


def write_table(path, rows, header=("BraTS19ID", "Age", "Survival", "ResectionStatus"), encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def flip_middle(path, count=200):
    """Invert ``count`` bytes in the middle of a file (what a bad copy or disk does)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def caught(call):
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in records]


def one_line(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# --- item 1: damaged, empty, constant, non-finite, absurd files and brainless slices -------------------


def test_gzip_with_a_wrong_crc_is_refused_naming_the_file(tmp_path):
    """Only the CRC-32 trailer is wrong: the deflate data decode fine, so only a checksum test can tell."""
    folder = write_case(tmp_path / "P")
    path = folder / "P_t2.nii.gz"
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # first byte of the CRC-32
    path.write_bytes(bytes(data))
    assert np.asanyarray(nib.load(str(path)).dataobj).shape == SHAPE  # nibabel alone reads it without complaint
    with pytest.raises(CaseError) as info:
        load_case(folder)
    assert info.value.reason == "unreadable" and info.value.path == path
    assert "damaged gzip data" in one_line(info) and str(path) in one_line(info) and "case P" in one_line(info)


def test_gzip_with_flipped_bytes_or_truncated_is_refused(tmp_path):
    folder = write_case(tmp_path / "P", override={"t1": np.random.default_rng(1).integers(0, 30000, SHAPE, np.int16)})
    flip_middle(folder / "P_t1.nii.gz")
    with pytest.raises(CaseError, match="damaged gzip data.*P_t1.nii.gz") as info:
        load_case(folder)
    one_line(info)
    path = folder / "P_t2.nii.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(CaseError, match="damaged gzip data|truncated"):
        read_volume(path, "P")


def test_uncompressed_nifti_named_gz_truncated_and_garbage_nii(tmp_path):
    path = save(np.ones(SHAPE, np.int16), tmp_path / "a.nii")
    data = path.read_bytes()
    renamed = path.rename(tmp_path / "a.nii.gz")
    with pytest.raises(CaseError, match="not gzip data.*uncompressed NIfTI is named .nii"):
        read_volume(renamed, "X")
    (tmp_path / "short.nii").write_bytes(data[:-100])
    with pytest.raises(CaseError, match="cannot read NIfTI file: OSError: Expected 9600 bytes, got 9500") as info:
        read_volume(tmp_path / "short.nii", "X")  # nibabel's message spans two lines
    one_line(info)
    (tmp_path / "b.nii").write_bytes(b"\x00" * 400)
    with pytest.raises(CaseError, match="cannot read NIfTI file") as info:
        read_volume(tmp_path / "b.nii", "X")
    assert info.value.reason == "unreadable"


@pytest.mark.parametrize("value, reason", [(np.inf, "non_finite"), (-np.inf, "non_finite"), (np.nan, "non_finite"),
                                           (1e300, "absurd_values"), (-1e12, "absurd_values")])
def test_non_finite_and_absurd_voxels_are_refused(tmp_path, value, reason):
    flair = volumes()[0]["flair"].astype(np.float64)
    flair[5, 5, 5] = value
    folder = write_case(tmp_path / "P", override={"flair": flair})
    with pytest.raises(CaseError) as info:
        load_case(folder)
    assert info.value.reason == reason and info.value.path == folder / "P_flair.nii.gz"
    assert str(folder / "P_flair.nii.gz") in one_line(info)


def test_all_zero_image_is_refused(tmp_path):
    zero = np.zeros(SHAPE, np.int16)
    folder = write_case(tmp_path / "P", override={m: zero for m in MODALITIES})
    with pytest.raises(CaseError, match="no modality file carries signal.*t1 all zero; t1ce all zero") as info:
        load_case(folder)
    assert info.value.reason == "no_signal" and "case P" in one_line(info)


@pytest.mark.parametrize("fill, what", [(0, "all zero"), (120, "constant \\(120\\)")])
def test_modality_without_signal_is_not_listed_as_available(tmp_path, fill, what):
    folder = write_case(tmp_path / "P", override={"t2": np.full(SHAPE, fill, np.int16)})
    (image, available, index), messages = caught(lambda: load_case(folder))
    np.testing.assert_array_equal(available, [True, True, False, True])
    assert not image[2].any() and index == TUMOUR_SLICE
    assert any(m.startswith("case P: modality t2 carries no signal") for m in messages), messages
    assert any(__import__("re").search(f"P_t2.nii.gz is {what}", m) for m in messages), messages


def test_modality_constant_in_the_chosen_slice_is_not_available(tmp_path):
    t1ce = volumes()[0]["t1ce"]
    t1ce[..., TUMOUR_SLICE] = 0  # signal elsewhere in the volume, none in the slice
    folder = write_case(tmp_path / "P", override={"t1ce": t1ce})
    (image, available, _), messages = caught(lambda: load_case(folder))
    np.testing.assert_array_equal(available, [True, False, True, True])
    assert not image[1].any()
    assert any(f"case P: modality t1ce carries no signal in axial slice {TUMOUR_SLICE}" in m for m in messages), messages


def test_slice_without_brain_is_refused_naming_slice_and_case(tmp_path):
    folder = write_case(tmp_path / "P")
    with pytest.raises(CaseError) as info:
        load_case(folder, slice_index=-1)
    assert info.value.reason == "no_brain_in_slice"
    message = one_line(info)
    assert "case P: axial slice 9 holds no brain" in message and "brain in axial slices 1 to 7" in message


def test_slice_with_little_brain_warns(tmp_path):
    images, seg = volumes()
    for volume in images.values():
        volume[:, :, 1][4:, :] = 0  # slice 1 keeps 1 row of its 14: 7 % of the others' area
    folder = write_case(tmp_path / "P", override=images)
    (_, available, index), messages = caught(lambda: load_case(folder, slice_index=1))
    assert index == 1 and available.all()
    assert any(m.startswith("case P: axial slice 1 holds little brain (16 pixels, 7 %") for m in messages), messages
    _, messages = caught(lambda: load_case(folder))
    assert not any("little brain" in m for m in messages)


def test_cohort_marks_no_signal_modalities_and_reports_them(tmp_path):
    for i, case in enumerate("ABC"):
        override = {"flair": np.zeros(SHAPE, np.int16)} if case == "B" else None
        write_case(tmp_path / case, seed=i, override=override)
    write_table(tmp_path / "survival_data.csv", [["A", "50", "100", ""], ["B", "50", "400", ""], ["C", "50", "600", ""]])
    cohort, messages = caught(lambda: prepare_brats(tmp_path))
    np.testing.assert_array_equal(cohort.available[:, 3], [True, False, True])
    assert not cohort.images[1, 3].any()
    counts = cohort.report["counts"]
    assert counts["no_signal"] == {"t1": 0, "t1ce": 0, "t2": 0, "flair": 1}
    assert counts["missing_modality"]["flair"] == 1 and counts["notes"] == 1
    assert cohort.report["notes"][0]["id"] == "B" and "modality flair carries no signal" in cohort.report["notes"][0]["message"]
    assert any("case B: modality flair carries no signal" in m for m in messages)


def test_cohort_refuses_a_damaged_file_or_skips_it(tmp_path):
    for i, case in enumerate("ABC"):
        write_case(tmp_path / case, seed=i)
    flip_middle(tmp_path / "B" / "B_t1ce.nii.gz", count=40)
    write_table(tmp_path / "survival_data.csv", [["A", "50", "100", ""], ["B", "50", "400", ""], ["C", "50", "600", ""]])
    with pytest.raises(CaseError, match="damaged gzip data") as info:
        prepare_brats(tmp_path)
    assert info.value.path == tmp_path / "B" / "B_t1ce.nii.gz"
    cohort, messages = caught(lambda: prepare_brats(tmp_path, on_error="skip"))
    assert cohort.ids == ["A", "C"] and cohort.report["skipped"][0]["reason"] == "unreadable"


# --- item 5: the survival table ----------------------------------------------------------------------------


def cohort_root(tmp_path, n, rows=None):
    """``n`` small cases P00.. directly under the root, survival rows for all (or ``rows``)."""
    for i in range(n):
        write_case(tmp_path / f"P{i:02d}", seed=i)
    write_table(tmp_path / "survival_data.csv", rows or [[f"P{i:02d}", "50", str(100 + 20 * i), "GTR"] for i in range(n)])
    return tmp_path


def test_unterminated_quote_costs_one_row_and_is_reported(tmp_path):
    root = cohort_root(tmp_path, 12)
    table = root / "survival_data.csv"
    lines = table.read_text().splitlines()
    lines[4] = '"' + lines[4]  # line 5, case P03: the quote never closes
    table.write_text("\n".join(lines) + "\n")
    cohort, messages = caught(lambda: prepare_brats(root))
    assert len(cohort) == 11 and "P03" not in cohort.ids
    bad = [m for m in messages if "could not be parsed" in m]
    assert bad == [f"survival table {table}: 1 line(s) could not be parsed and give no row "
                   f"(line 5: unterminated quote: '\"P03,50,160,GTR')"]
    assert {"id": "P03", "reason": "unparsable_row", "detail": "its line 5 in survival_data.csv could not be parsed"} \
        in cohort.report["skipped"]
    assert cohort.report["unparsable_table_lines"] == [{"line": 5, "reason": "unterminated quote", "text": '"P03,50,160,GTR'}]
    assert {"id": "P10", "reason": "no_survival_row", "detail": "no row in survival_data.csv"} not in cohort.report["skipped"]


def test_a_bad_line_is_attributed_to_its_case_only(tmp_path):
    root = cohort_root(tmp_path, 12, rows=[[f"P{i:02d}", "50", "300", ""] for i in range(12) if i != 1])
    table = root / "survival_data.csv"
    table.write_text(table.read_text() + '"P011,50,300\n')  # a bad line holding "P01" inside "P011"
    cohort, _ = caught(lambda: prepare_brats(root))
    assert cohort.report["counts"]["unparsable_table_lines"] == 1
    assert {"id": "P01", "reason": "no_survival_row", "detail": "no row in survival_data.csv"} in cohort.report["skipped"]


def test_bad_line_summary_lists_the_first_three_and_counts(tmp_path):
    path = tmp_path / "survival_data.csv"
    path.write_text('BraTS19ID,Age,Survival\n"A,1,2\nB,3,4\n,5,6\n"C,1,2\n"D,1,2\n')
    table = read_survival_table(path)
    assert list(table.rows) == ["B"] and [line for line, _, _ in table.bad_lines] == [2, 4, 5, 6]
    summary = table.bad_line_summary()
    assert summary.startswith(f"survival table {path}: 4 line(s) could not be parsed")
    assert "line 4: blank case id" in summary and "; and 1 more)" in summary and "line 6" not in summary


def test_losing_most_of_the_cohort_is_an_error_unless_skip(tmp_path, monkeypatch):
    root = cohort_root(tmp_path, 10, rows=[[f"P{i:02d}", "50", "300", ""] for i in range(4)] + [["Q1", "1", "2", ""]])

    def no_reading(*args, **kwargs):
        raise AssertionError("NIfTI read before the table was checked")

    monkeypatch.setattr("hamfast.data.case.read_volume", no_reading)
    with pytest.raises(ValueError) as info:
        prepare_brats(root)
    message = one_line(info)
    assert message.startswith(f"6 of 10 case folders under {root} are lost ({{'no_survival_row': 6}}; e.g. P04, P05, P06)")
    assert "check survival_data.csv" in message and "on_error='skip' (hamfast prepare --on-error skip)" in message
    monkeypatch.undo()
    cohort, messages = caught(lambda: prepare_brats(root, on_error="skip"))
    assert cohort.ids == ["P00", "P01", "P02", "P03"]
    assert any(m.startswith("6 of 10 case folders") and "going on with the 4 kept" in m for m in messages)


def test_non_utf8_table_is_read_as_latin1_with_a_warning(tmp_path):
    root = cohort_root(tmp_path, 3, rows=[["P00", "50", "100", "résection"], ["P01", "51", "400", "GTR"],
                                          ["P02", "52", "600", "GTR"]])
    table = root / "survival_data.csv"
    table.write_bytes(table.read_text(encoding="utf-8").encode("latin-1"))
    cohort, messages = caught(lambda: prepare_brats(root))
    assert cohort.ids == ["P00", "P01", "P02"] and cohort.report["table_encoding"] == "latin-1"
    assert f"survival table {table} is not UTF-8 (byte 0xe9 on line 2); read as Latin-1" in " ".join(messages)


def test_utf16_and_binary_tables(tmp_path):
    path = tmp_path / "survival_data.csv"
    path.write_text("BraTS19ID,Age,Survival\nA,50,100\n", encoding="utf-16")
    assert read_survival_table(path).rows["A"].days == 100
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)))
    with pytest.raises(ValueError, match=f"survival table {path} is not a text CSV file") as info:
        read_survival_table(path)
    one_line(info)


# --- item 5: file names, aliases, symlinks and folders named like NIfTI ------------------------------------


@pytest.mark.parametrize("stem, role", [
    ("P_t1gd", "t1ce"), ("P_T1-Gd", "t1ce"), ("P_t1_post", "t1ce"), ("P-t1c", "t1ce"), ("t1ce_brain", "t1ce"),
    ("P_t2_brain", "t2"), ("P_T2W", "t2"), ("P_FLAIR_brain", "flair"), ("P_t2-flair", "flair"), ("P_fl", "flair"),
    ("P_t1n", "t1"), ("P_t1w_bet", "t1"), ("P_segmentation", "seg"), ("BraTS19_2013_10_1_t1", "t1"),
    ("P_t1_mask", None), ("P_dwi", None), ("P_brain", None), ("P_t1_2mm", None),
])
def test_file_role_aliases(stem, role):
    assert file_role(stem) == role


def test_unused_and_odd_files_are_noted_not_ignored(tmp_path):
    folder = write_case(tmp_path / "P", names={"t1ce": "P_t1gd.nii.gz", "t2": "P_t2_brain.nii.gz"})
    save(np.ones(SHAPE, np.int16), folder / "P_dwi.nii.gz")
    (folder / "P_T1.nrrd").write_bytes(b"x")  # not NIfTI, but named like a modality
    (folder / "P_adc.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    (folder / "notes.txt").write_text("hello")
    (_, available, _), messages = caught(lambda: load_case(folder))
    assert available.all()  # t1gd and t2_brain are read as t1ce and t2
    assert messages == [
        "case P: P_T1.nrrd looks like the t1 file but is not NIfTI (.nii or .nii.gz); ignored (convert it to NIfTI)",
        "case P: P_adc.nii.gz: dangling symlink to " + str(tmp_path / "nowhere.nii.gz") + "; no modality name "
        "(t1, t1ce, t2, flair, seg or an alias); ignored",
        "case P: P_dwi.nii.gz: no modality name (t1, t1ce, t2, flair, seg or an alias); ignored",
    ]


@pytest.mark.parametrize("kind", ["dangling", "folder"])
def test_modality_entry_that_is_not_a_file_is_refused(tmp_path, kind):
    folder = write_case(tmp_path / "P", skip=("t2",))
    entry = folder / "P_t2.nii.gz"
    if kind == "dangling":
        entry.symlink_to(tmp_path / "gone" / "P_t2.nii.gz")
        expected = "P_t2.nii.gz should be the t2 file but is dangling symlink to"
    else:
        entry.mkdir()
        expected = "P_t2.nii.gz should be the t2 file but is a folder, not a NIfTI file"
    with pytest.raises(CaseError) as info:
        load_case(folder)
    assert info.value.reason == "unreadable" and info.value.path == entry
    assert expected in one_line(info) and "case P" in one_line(info)
    with pytest.raises(ValueError, match=expected):
        case_files(folder)


def test_two_files_for_one_modality_is_a_case_error_that_skip_skips(tmp_path):
    root = cohort_root(tmp_path, 3)
    save(volumes()[0]["t1ce"], root / "P01" / "P01_t1gd.nii.gz")
    with pytest.raises(CaseError, match="two files for 't1ce': P01_t1ce.nii.gz and P01_t1gd.nii.gz") as info:
        prepare_brats(root)
    assert info.value.reason == "ambiguous_files"
    cohort, _ = caught(lambda: prepare_brats(root, on_error="skip"))
    assert cohort.ids == ["P00", "P02"]


def test_folders_without_nifti_dangling_case_links_and_loose_files_are_warned_about(tmp_path):
    root = cohort_root(tmp_path, 2)
    (root / "P09").mkdir()
    (root / "P09" / "P09_t1.dcm").write_bytes(b"x")
    (root / "P10").symlink_to(tmp_path / "elsewhere")
    save(np.ones(SHAPE, np.int16), root / "P11_t1.nii.gz")
    cohort, messages = caught(lambda: prepare_brats(root))
    assert cohort.ids == ["P00", "P01"]
    assert f"BraTS root {root}: 3 entries beside the case folders ignored: P09 (no .nii/.nii.gz file), " \
           "P10 (dangling symlink), P11_t1.nii.gz (a NIfTI file outside a case folder)" in messages


def test_cohort_notes_are_summarised_when_many(tmp_path):
    root = cohort_root(tmp_path, 12)
    for i in range(12):
        save(np.ones(SHAPE, np.int16), root / f"P{i:02d}" / f"P{i:02d}_dwi.nii.gz")
    cohort, messages = caught(lambda: prepare_brats(root))
    noted = [m for m in messages if "_dwi.nii.gz" in m]
    assert len(noted) == 5 and "... and 7 more notes like these (all in cohort.report['notes'])" in messages
    assert len(cohort.report["notes"]) == 12 and cohort.report["counts"]["notes"] == 12


# --- item 6: a cache read with on_error="skip" serves any on_error ---------------------------------------


def test_cache_made_with_skip_is_accepted_for_raise(tmp_path):
    root = cohort_root(tmp_path / "root", 4)
    flip_middle(root / "P02" / "P02_t2.nii.gz", count=40)
    cache = tmp_path / "cache"
    made, _ = caught(lambda: prepare_brats(root, cache_dir=cache, on_error="skip", size=32))
    assert made.ids == ["P00", "P01", "P03"]
    settings = {**made.settings, "on_error": "raise"}  # e.g. a checkpoint trained on another copy
    for path in (cache, next(cache.glob("*.npz"))):
        cohort, messages = caught(lambda: open_cohort(path, **settings))
        assert cohort.ids == made.ids
        assert any("was read with on_error='skip': 1 unreadable case(s) left out (P02" in m for m in messages), messages
        for quiet in (made.settings, {"size": 32}):  # asked skip, or nothing (train, experiment): no warning
            _, messages = caught(lambda: open_cohort(path, **quiet))
            assert not messages
    with pytest.raises(ValueError, match="size=48"):  # the other settings still decide
        open_cohort(next(cache.glob("*.npz")), **{**settings, "size": 48})


def test_one_cache_per_cohort_whatever_on_error(tmp_path, monkeypatch):
    root = cohort_root(tmp_path / "root", 3)
    cache = tmp_path / "cache"
    made = prepare_brats(root, cache_dir=cache, size=32)  # on_error="raise"
    monkeypatch.setattr("hamfast.data.case.read_volume", lambda *a, **k: pytest.fail("NIfTI read again"))
    again = prepare_brats(root, cache_dir=cache, size=32, on_error="skip")  # the same cohort: loaded
    assert again.report["cache"]["loaded"] and again.ids == made.ids and len(list(cache.glob("*.npz"))) == 1
    monkeypatch.undo()

    flip_middle(root / "P01" / "P01_flair.nii.gz", count=40)
    skipped, _ = caught(lambda: prepare_brats(root, cache_dir=cache, size=32, on_error="skip"))
    assert skipped.ids == ["P00", "P02"] and not skipped.report["cache"]["loaded"]
    assert caught(lambda: prepare_brats(root, cache_dir=cache, size=32, on_error="skip"))[0].report["cache"]["loaded"]
    with pytest.raises(CaseError, match="damaged gzip data") as info:  # raise asked: the cache does not hide the file
        prepare_brats(root, cache_dir=cache, size=32)
    assert info.value.path == root / "P01" / "P01_flair.nii.gz"


# --- issue 18: untrustworthy voxels, geometry, caches --------------------------------------------


def test_nan_voxels_are_refused_naming_case_and_modality(tmp_path):
    flair = volumes()[0]["flair"].astype(np.float32)
    flair[5, 5, 5] = np.nan
    folder = write_case(tmp_path / "P", override={"flair": flair})
    with pytest.raises(CaseError, match=r"case P: flair: 1 NaN or infinite voxels") as info:
        load_case(folder)
    assert info.value.reason == "non_finite"


def test_a_spike_voxel_does_not_change_the_slice(tmp_path):
    """A 30000 spike in an int16 brain of 50..400 used to squash the modality to ~0 (min-max)."""
    images, _ = volumes()
    clean, _, _ = load_case(write_case(tmp_path / "A"))
    spiked = images["t2"].copy()
    spiked[10, 10, TUMOUR_SLICE] = 30000
    image, available, _ = load_case(write_case(tmp_path / "B", override={"t2": spiked}))
    assert available.all()
    changed = image != clean
    assert changed.sum() == 1 and image[changed][0] == 1.0  # only the spike pixel, clipped to 1


def test_a_volume_zero_but_for_a_few_voxels_is_absent_and_reported(tmp_path):
    nearly_empty = np.zeros(SHAPE, np.int16)
    nearly_empty[10, 10, TUMOUR_SLICE] = 500
    for i, case in enumerate("ABC"):
        write_case(tmp_path / case, seed=i, override={"t1ce": nearly_empty} if case == "B" else None)
    write_table(tmp_path / "survival_data.csv", [["A", "50", "100", ""], ["B", "50", "400", ""], ["C", "50", "600", ""]])
    with pytest.warns(UserWarning, match="case B: modality t1ce carries no signal .*non-zero in 1 voxel"):
        image, available, _ = load_case(tmp_path / "B")
    assert not available[1] and not image[1].any()
    cohort, _ = caught(lambda: prepare_brats(tmp_path))
    assert cohort.available[:, 1].tolist() == [True, False, True]
    assert cohort.report["counts"]["no_signal"]["t1ce"] == 1
    (entry,) = cohort.report["no_signal"]
    assert entry["id"] == "B" and entry["modality"] == "t1ce" and "non-zero in 1 voxel" in entry["reason"]


def test_a_modality_with_little_signal_in_the_slice_is_absent(tmp_path):
    images, _ = volumes()
    sparse = images["t2"].copy()
    sparse[..., TUMOUR_SLICE] = 0
    sparse[10, 10, TUMOUR_SLICE] = 300  # one bright pixel in the chosen slice: no modality there
    with pytest.warns(UserWarning, match="modality t2 carries no signal in axial slice 5 .non-zero in 1 of"):
        image, available, _ = load_case(write_case(tmp_path / "P", override={"t2": sparse}))
    assert available.tolist() == [True, True, False, True] and not image[2].any()


def test_a_modality_stored_flipped_with_its_affine_is_aligned(tmp_path):
    images, seg = volumes()
    images["t1"][5:9, 6:9, :] += 2000  # an asymmetric landmark, so a mirrored t1 would differ
    reference = tmp_path / "A"
    reference.mkdir()
    for role, array in {**images, "seg": seg}.items():
        save(array, reference / f"A_{role}.nii.gz")
    expected, _, index = load_case(reference)
    flipped = tmp_path / "B"
    flipped.mkdir()
    for role, array in {**images, "seg": seg}.items():
        affine = np.eye(4)
        if role in ("t1", "seg"):  # stored with the first two axes reversed, the affine saying so
            array = array[::-1, ::-1]
            affine = np.diag([-1.0, -1.0, 1.0, 1.0])
            affine[:2, 3] = [SHAPE[0] - 1, SHAPE[1] - 1]
        nib.save(nib.Nifti1Image(np.ascontiguousarray(array), affine), str(flipped / f"B_{role}.nii.gz"))
    image, _, flipped_index = load_case(flipped)
    assert flipped_index == index
    np.testing.assert_array_equal(image, expected)


def test_another_grid_is_refused_naming_the_file(tmp_path):
    folder = write_case(tmp_path / "P")
    images, _ = volumes()
    nib.save(nib.Nifti1Image(images["t2"], np.diag([2.0, 2.0, 2.0, 1.0])), str(folder / "P_t2.nii.gz"))
    with pytest.raises(CaseError, match="lies on another voxel grid than P_t1.nii.gz") as info:
        load_case(folder)
    assert info.value.reason == "grid_mismatch" and info.value.path == folder / "P_t2.nii.gz"
    one_line(info)


def test_a_tumour_outside_the_brain_is_refused(tmp_path):
    seg = np.zeros(SHAPE, np.uint8)
    seg[0:3, 0:3, 8] = 1  # background corner: no modality is non-zero there
    folder = write_case(tmp_path / "P", override={"seg": seg})
    with pytest.raises(CaseError, match="9 of its 9 tumour voxels lie outside the brain") as info:
        load_case(folder)
    assert info.value.reason == "tumour_outside_brain" and info.value.path == folder / "P_seg.nii.gz"


def test_rgb_nifti_is_refused_in_one_line_and_skipped_by_prepare(tmp_path):
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    for i, case in enumerate("ABC"):
        write_case(tmp_path / case, seed=i, override={"t2": rgb} if case == "B" else None)
    write_table(tmp_path / "survival_data.csv", [["A", "50", "100", ""], ["B", "50", "400", ""], ["C", "50", "600", ""]])
    with pytest.raises(CaseError, match="voxels are RGB colour, not scalar intensities") as info:
        load_case(tmp_path / "B")
    assert info.value.reason == "not_intensity"
    one_line(info)
    cohort, _ = caught(lambda: prepare_brats(tmp_path, on_error="skip"))
    assert cohort.ids == ["A", "C"] and cohort.report["skipped"][0]["reason"] == "not_intensity"


def test_gzip_bomb_is_refused_with_bounded_memory(tmp_path):
    import gzip
    import tracemalloc
    import zlib

    header = nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4)).to_bytes()  # announces 1 KiB of voxels
    path = tmp_path / "P" / "P_t1.nii.gz"
    path.parent.mkdir()
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(2**20)
    with open(path, "wb") as handle:  # ~1 MB of gzip inflating to 1 GiB
        handle.write(compressor.compress(header))
        for _ in range(1024):
            handle.write(compressor.compress(block))
        handle.write(compressor.flush())
    assert path.stat().st_size < 2 * 2**20 and gzip.GzipFile  # the bomb is small on disk
    tracemalloc.start()
    try:
        with pytest.raises(CaseError, match="decompresses to more than the .* bytes its header announces") as info:
            read_volume(path, "P")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.reason == "too_large" and peak < 100 * 2**20, peak


def test_a_header_announcing_a_huge_volume_is_refused_before_reading(tmp_path):
    image = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    image.header.set_data_shape((2048, 2048, 2048))
    path = tmp_path / "huge.nii"
    path.write_bytes(image.header.binaryblock + b"\0" * 4)
    with pytest.raises(CaseError, match="header announces 32768 MiB of voxels") as info:
        read_volume(path, "X")
    assert info.value.reason == "too_large"


def test_cohort_with_nan_pixels_is_refused_at_load_naming_case_and_modality(tmp_path):
    root = cohort_root(tmp_path / "root", 3)
    cohort = prepare_brats(root, size=32)
    cohort.images[1, 2, 5, 5] = np.nan
    cohort.save(tmp_path / "c")
    with pytest.raises(ValueError, match="case P01, modality t2 has NaN or infinite pixels"):
        open_cohort(tmp_path / "c.npz")


def test_hand_edited_manifest_is_refused(tmp_path):
    root = cohort_root(tmp_path / "root", 3)
    cache = tmp_path / "cache"
    prepare_brats(root, cache_dir=cache, size=32)
    manifest_path = next(cache.glob("*.json"))
    manifest = json.loads(manifest_path.read_text())
    manifest["settings"]["size"] = 96
    manifest["image_shape"] = [4, 96, 96]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="disagrees with .*npz on image_shape, settings") as info:
        open_cohort(cache)
    one_line(info)


def test_truncated_cohort_file_is_refused_in_one_line(tmp_path):
    root = cohort_root(tmp_path / "root", 3)
    npz = prepare_brats(root, size=32).save(tmp_path / "c")
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(ValueError, match="is damaged or truncated") as info:
        open_cohort(npz)
    one_line(info)
