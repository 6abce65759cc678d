"""The nnU-Net raw layout (issue 19, data side): generated 3-modality/2-class and 2-modality/4-class
datasets read with their names, classes, availability and labels; the cache; every refusal; the
grid options; the slice rule without labels; one case for predict; `hamfast prepare` and `synth`."""
import csv
import json
import shutil

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from hamfast import cli  # noqa: E402
from hamfast.data import CaseError, Cohort, load_nnunet_case, make_synthetic_nnunet, open_cohort, prepare_nnunet  # noqa: E402
from hamfast.data.nnunet import modality_name, read_class_table  # noqa: E402
from hamfast.data.sources import load_case_with, settings_layout  # noqa: E402
from hamfast.data.synthetic_nnunet import class_factors  # noqa: E402

SHAPE = (64, 64, 8)


def one_line(info):
    assert "\n" not in str(info.value), str(info.value)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """8 cases, T2w/ADC/DWI (as written in dataset.json), classes low/high, half the cases incomplete."""
    root = tmp_path_factory.mktemp("nnunet3") / "ds"
    return make_synthetic_nnunet(root, ["T2w", "ADC", "DWI"], ["low", "high"], n_cases=8, shape=SHAPE, seed=3,
                                 missing=0.5)


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    """8 cases, 2 modalities, 4 classes, none incomplete."""
    root = tmp_path_factory.mktemp("nnunet4") / "ds"
    return make_synthetic_nnunet(root, ["t1", "flair"], ["a", "b", "c", "d"], n_cases=8, shape=SHAPE, seed=4, missing=0)


@pytest.fixture
def copy(tmp_path, three):
    """A writable copy of the 3-modality dataset."""
    return shutil.copytree(three, tmp_path / "copy")


def table(root):
    with open(root / "classes.csv", newline="") as handle:
        return {row["case"]: row["label"] for row in csv.DictReader(handle)}


def lps(path):
    """A synthetic file's voxels as the reader orients them (the generator writes LPS already)."""
    image = nib.load(str(path))
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
    return np.asarray(image.dataobj)


def test_three_modalities_two_classes(three):
    cohort = prepare_nnunet(three, size=32)
    rows = table(three)
    assert cohort.modalities == ("t2w", "adc", "dwi") and cohort.classes == ("low", "high")
    assert cohort.images.shape == (8, 3, 32, 32) and cohort.ids == sorted(rows)
    assert [cohort.classes[k] for k in cohort.labels] == [rows[case] for case in cohort.ids]
    on_disk = np.array([[(three / "imagesTr" / f"{case}_{j:04d}.nii.gz").is_file() for j in range(3)]
                        for case in cohort.ids])
    assert not on_disk.all() and on_disk.any(1).all()  # the generator left modalities out
    np.testing.assert_array_equal(cohort.available, on_disk)
    assert not cohort.images[~cohort.available].any() and all(cohort.images[cohort.available].max((1, 2)) > 0.5)
    for case, index in zip(cohort.ids, cohort.slice_index):  # the largest lesion area of the label
        assert index == np.argmax((lps(three / "labelsTr" / f"{case}.nii.gz") > 0).sum((0, 1)))
    assert np.isnan(cohort.survival_days).all() and np.isnan(cohort.age).all()
    assert cohort.report["source"]["layout"] == "nnunet"
    assert cohort.report["counts"]["missing_modality"] == dict(zip(cohort.modalities, (~on_disk).sum(0).tolist()))


def test_two_modalities_four_classes(four):
    cohort = prepare_nnunet(four)  # native size: the slices padded to the largest crop
    assert cohort.modalities == ("t1", "flair") and cohort.classes == ("a", "b", "c", "d")
    assert cohort.images.shape[:2] == (8, 2) and cohort.images.shape[2] == cohort.images.shape[3]
    assert cohort.available.all()
    np.testing.assert_array_equal(cohort.labels, np.arange(8) % 4)  # the generator cycles the classes
    assert np.bincount(cohort.labels).tolist() == [2, 2, 2, 2]


def test_the_class_shows_in_the_lesion_intensity(tmp_path):
    """Learnable: in every modality the lesion/brain intensity ratio orders the classes as the
    generator's factors do, with no overlap between neighbouring classes."""
    root = make_synthetic_nnunet(tmp_path / "ds", ["a", "b"], ["x", "y", "z"], n_cases=9, shape=SHAPE, seed=5,
                                 missing=0)
    factors = class_factors(2, 3)
    assert sorted(factors[:, 0]) == [0.75, 1.0, 1.25] and not np.allclose(factors[:, 0], factors[:, 1])
    labels = {case: ["x", "y", "z"].index(label) for case, label in table(root).items()}
    for j in range(2):
        ratios = {k: [] for k in range(3)}
        for case, k in labels.items():
            image = lps(root / "imagesTr" / f"{case}_{j:04d}.nii.gz").astype(float)
            lesion = lps(root / "labelsTr" / f"{case}.nii.gz") > 0
            ratios[k].append(image[lesion].mean() / image[(image > 0) & ~lesion].mean())
        order = np.argsort(factors[:, j])
        for low, high in zip(order[:-1], order[1:]):
            assert max(ratios[low]) < min(ratios[high]), (j, ratios)


def test_cache_round_trip(tmp_path, three):
    cache = tmp_path / "cache"
    first = prepare_nnunet(three, size=32, cache_dir=cache)
    assert first.report["cache"]["loaded"] is False and len(list(cache.glob("nnunet_*.npz"))) == 1
    again = open_cohort(three, size=32, cache_dir=cache)  # what --data ROOT does
    assert again.report["cache"]["loaded"] is True
    loaded = open_cohort(cache, size=32)  # what --data CACHE does
    for cohort in (again, loaded, Cohort.load(next(cache.glob("*.npz")))):
        np.testing.assert_array_equal(cohort.images, first.images)
        np.testing.assert_array_equal(cohort.available, first.available)
        np.testing.assert_array_equal(cohort.labels, first.labels)
        assert cohort.modalities == first.modalities and cohort.classes == first.classes and cohort.ids == first.ids
    with pytest.raises(ValueError, match="no cache matches"):
        open_cohort(cache, size=32, grid="refuse")
    with pytest.raises(ValueError, match="no such setting"):
        open_cohort(next(cache.glob("*.npz")), survival_thresholds=(300, 450))
    with pytest.raises(ValueError, match="takes no include_censored"):
        open_cohort(three, include_censored=True)
    with pytest.raises(TypeError):
        open_cohort(cache, sizes=32)
    # a changed file changes the key: read again, not served stale
    path = three / "classes.csv"
    text = path.read_text()
    try:
        path.write_text(text + "\n")
        assert prepare_nnunet(three, size=32, cache_dir=cache).report["cache"]["loaded"] is False
    finally:
        path.write_text(text)


def set_json(root, **changes):
    spec = json.loads((root / "dataset.json").read_text())
    spec.update(changes)
    for key, value in list(spec.items()):
        if value is None:
            del spec[key]
    (root / "dataset.json").write_text(json.dumps(spec))


def set_table(root, rows, header=("case", "label")):
    with open(root / "classes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def first_case(root):
    return sorted(table(root))[0]


REFUSALS = {
    "one modality": (lambda r: set_json(r, channel_names={"0": "T2w"}), "1 modalities"),
    "nine modalities": (lambda r: set_json(r, channel_names={str(i): f"m{i}" for i in range(9)}), "9 modalities"),
    "names equal once normalised": (lambda r: set_json(r, channel_names={"0": "T2w", "1": "t2W ", "2": "DWI"}),
                                    "t2w given twice"),
    "a gap in channel_names": (lambda r: set_json(r, channel_names={"0": "T2w", "2": "DWI"}), "keys must be"),
    "dataset.json not JSON": (lambda r: (r / "dataset.json").write_text("{not json"), "is not valid JSON"),
    "no channel_names": (lambda r: set_json(r, channel_names=None), "no \"channel_names\""),
    "classes not a list": (lambda r: set_json(r, classes={"0": "low"}), "must be a list"),
    "one class in dataset.json": (lambda r: set_json(r, classes=["low"]), "1 class"),
    "one class in the table": (lambda r: (set_json(r, classes=None),
                                          set_table(r, [(c, "same") for c in table(r)])), "1 class"),
    "a class without a case": (lambda r: set_json(r, classes=["low", "high", "extra"]), "extra have no case"),
    "a label not among the classes": (lambda r: set_table(r, [(c, "medium") for c in table(r)]),
                                      "'medium' is not one of the classes"),
    "no header": (lambda r: set_table(r, list(table(r).items()), header=None), "header with the columns case and label"),
    "a case twice": (lambda r: set_table(r, [*table(r).items(), (first_case(r), "low")]), "also on line 2"),
    "a blank label": (lambda r: set_table(r, [*table(r).items(), ("extra", "")]), "a blank label"),
    "no classes.csv": (lambda r: (r / "classes.csv").unlink(), "no classes.csv"),
    "a channel index not in channel_names": (
        lambda r: shutil.copy(next((r / "imagesTr").iterdir()), r / "imagesTr" / "syn0000_0005.nii.gz"),
        "channel 0005 is not in channel_names"),
    "a file without a channel index": (lambda r: shutil.copy(next((r / "imagesTr").iterdir()), r / "imagesTr" / "x.nii.gz"),
                                       "not named <case>_<XXXX>"),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_layout_refusals_come_before_any_volume_is_read(copy, monkeypatch, name):
    change, message = REFUSALS[name]
    change(copy)

    def no_reading(*args, **kwargs):
        raise AssertionError("a NIfTI file was read before the refusal")

    monkeypatch.setattr("hamfast.data.case.read_volume", no_reading)
    for on_error in ("raise", "skip"):  # layout errors are never skipped
        with pytest.raises(ValueError, match=message) as info:
            prepare_nnunet(copy, on_error=on_error)
        one_line(info)


def test_a_case_without_a_class_row(copy):
    rows = table(copy)
    dropped = first_case(copy)
    set_table(copy, [(c, label) for c, label in rows.items() if c != dropped])
    with pytest.raises(ValueError, match=f"no row for case {dropped}") as info:
        prepare_nnunet(copy, size=32)
    one_line(info)
    with pytest.warns(UserWarning, match=f"skipping case {dropped}"):
        cohort = prepare_nnunet(copy, size=32, on_error="skip")
    assert dropped not in cohort.ids and len(cohort) == len(rows) - 1
    assert cohort.report["skipped"][0]["id"] == dropped and cohort.report["skipped"][0]["reason"] == "no_class_row"


def test_a_case_without_any_modality_file(copy):
    shutil.copy(copy / "labelsTr" / f"{first_case(copy)}.nii.gz", copy / "labelsTr" / "ghost.nii.gz")
    with pytest.raises(CaseError, match="case ghost: a label file but no channel file") as info:
        prepare_nnunet(copy, size=32)
    assert info.value.reason == "no_modality"
    one_line(info)
    with pytest.warns(UserWarning, match="skipping case ghost"):
        cohort = prepare_nnunet(copy, size=32, on_error="skip")
    assert "ghost" not in cohort.ids and cohort.report["counts"]["skipped_by_reason"] == {"no_modality": 1}


def test_skipping_that_empties_a_class_is_refused(copy):
    rows = table(copy)
    high = [c for c, label in rows.items() if label == "high"]
    set_table(copy, [(c, label) for c, label in rows.items() if c not in high[1:]])  # one "high" case left
    (copy / "imagesTr" / f"{high[0]}_0001.nii.gz").write_bytes(b"not a nifti")
    for j in (0, 2):
        if (copy / "imagesTr" / f"{high[0]}_{j:04d}.nii.gz").is_file():
            (copy / "imagesTr" / f"{high[0]}_{j:04d}.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match="class\\(es\\) high have no case left") as info:
        with pytest.warns(UserWarning):
            prepare_nnunet(copy, size=32, on_error="skip")
    one_line(info)


def regrid(path, factor=2):
    """Rewrite ``path`` on a coarser grid (every ``factor``-th voxel in-plane, voxels ``factor`` times
    wider): the same anatomy on another voxel grid."""
    image = nib.load(str(path))
    affine = image.affine.copy()
    affine[:3, :2] *= factor
    affine[:3, 3] += (factor - 1) / 2 * (image.affine[:3, 0] + image.affine[:3, 1])  # same field of view centre
    volume = np.asarray(image.dataobj).astype(np.float32)
    coarse = volume.reshape(volume.shape[0] // factor, factor, volume.shape[1] // factor, factor, -1).mean((1, 3))
    nib.save(nib.Nifti1Image(coarse.astype(np.int16), affine), str(path))


def test_another_grid_resampled_or_refused(copy):
    before = prepare_nnunet(copy, size=32)
    i = int(np.flatnonzero(before.available[:, 1])[0])  # a case with ADC
    case = before.ids[i]
    path = copy / "imagesTr" / f"{case}_0001.nii.gz"
    regrid(path)
    with pytest.warns(UserWarning, match=f"case {case}: {path.name} resampled onto the voxel grid"):
        after = prepare_nnunet(copy, size=32)  # grid="resample" is the default
    assert after.available[i, 1] and after.slice_index[i] == before.slice_index[i]
    assert np.corrcoef(after.images[i, 1].ravel(), before.images[i, 1].ravel())[0, 1] > 0.9
    np.testing.assert_array_equal(np.delete(after.images, i, 0), np.delete(before.images, i, 0))
    with pytest.raises(CaseError, match=f"grid='resample'.*{path.name}") as info:
        prepare_nnunet(copy, size=32, grid="refuse")
    assert info.value.reason == "shape_mismatch" and info.value.path == path
    one_line(info)
    with pytest.raises(ValueError, match="grid must be one of"):
        prepare_nnunet(copy, grid="sometimes")


def test_a_label_on_another_grid_is_resampled_nearest(copy):
    before = prepare_nnunet(copy, size=32)
    case = before.ids[0]
    path = copy / "labelsTr" / f"{case}.nii.gz"
    image = nib.load(str(path))
    mask = np.asarray(image.dataobj)
    big = np.repeat(mask, 2, axis=2)  # twice as many axial slices, half as thick
    affine = image.affine.copy()
    affine[:3, 2] /= 2
    affine[:3, 3] -= image.affine[:3, 2] / 4
    nib.save(nib.Nifti1Image(big, affine), str(path))
    with pytest.warns(UserWarning, match="resampled"):
        after = prepare_nnunet(copy, size=32)
    assert after.slice_index[0] == before.slice_index[0]


def test_without_labels_the_central_slice_of_the_foreground(copy):
    shutil.rmtree(copy / "labelsTr")
    cohort = prepare_nnunet(copy, size=32)
    for case, index, here in zip(cohort.ids, cohort.slice_index, cohort.available):
        foreground = np.zeros(SHAPE, dtype=bool)
        for j in np.flatnonzero(here):
            foreground |= lps(copy / "imagesTr" / f"{case}_{j:04d}.nii.gz") != 0
        rows = np.flatnonzero(foreground.any((0, 1)))
        assert index == (rows[0] + rows[-1]) // 2
    largest = prepare_nnunet(copy, size=32, slice_policy="largest_brain")
    assert (largest.slice_index != cohort.slice_index).any()  # the two rules differ on this data
    with pytest.raises(CaseError, match="no label file") as info:
        prepare_nnunet(copy, size=32, slice_policy=None)
    assert info.value.reason == "no_segmentation"
    one_line(info)


def test_one_case_for_predict(tmp_path, three):
    cohort = prepare_nnunet(three, size=32)
    i = int(np.flatnonzero(~cohort.available.all(1))[0])  # an incomplete case
    case = cohort.ids[i]
    image, available, index = load_nnunet_case(three, cohort.modalities, case=case, size=32)
    np.testing.assert_array_equal(image, cohort.images[i])
    np.testing.assert_array_equal(available, cohort.available[i])
    assert index == cohort.slice_index[i]
    folder = tmp_path / "patient"  # a folder of its files: <case>_XXXX channels and <case> label
    folder.mkdir()
    for path in (three / "imagesTr").glob(f"{case}_*.nii.gz"):
        shutil.copy(path, folder)
    shutil.copy(three / "labelsTr" / f"{case}.nii.gz", folder)
    image, available, index = load_nnunet_case(folder, cohort.modalities, size=32)
    np.testing.assert_array_equal(image, cohort.images[i])
    assert index == cohort.slice_index[i]
    with pytest.raises(ValueError, match="modalities t2w, adc, dwi, but the model's are t2w, adc"):
        load_nnunet_case(three, ("t2w", "adc"), case=case)
    with_dwi = cohort.ids[int(np.flatnonzero(cohort.available[:, 2])[0])]
    with pytest.raises(ValueError, match=f"{with_dwi}_0002.nii.gz: channel 0002 is not in the model's modalities"):
        load_nnunet_case(three / "imagesTr", ("t2w", "adc"), case=with_dwi)
    with pytest.raises(ValueError, match="name the case"):
        load_nnunet_case(three, cohort.modalities)
    # what predict calls with a checkpoint's modality names and reader settings
    assert settings_layout(cohort.settings) == "nnunet" and settings_layout({"size": 96, "include_censored": False}) == "brats"
    image, _, _ = load_case_with(folder, cohort.modalities, cohort.settings)
    np.testing.assert_array_equal(image, cohort.images[i])
    with pytest.raises(ValueError, match="not BraTS's"):
        load_case_with(folder, cohort.modalities, {"size": 32, "survival_thresholds": [300, 450]})
    shutil.copy(next((three / "imagesTr").glob(f"{cohort.ids[(i + 1) % 8]}_*.nii.gz")), folder)
    with pytest.raises(ValueError, match="2 cases"):
        load_nnunet_case(folder, cohort.modalities)


def test_modality_names_and_class_order(tmp_path):
    assert [modality_name(n) for n in ("T2w", "ADC", "DWI b1000", "T1 (Gd)", " flair ")] == \
        ["t2w", "adc", "dwi_b1000", "t1_gd", "flair"]
    path = tmp_path / "classes.csv"
    path.write_text("case,label\na,10\nb,2\nc,1\n")
    assert read_class_table(path) == ({"a": 2, "b": 1, "c": 0}, ("1", "2", "10"))  # numbers numerically
    path.write_text("id,Label,case\nx,high,a\ny,low,b\n")
    assert read_class_table(path) == ({"a": 0, "b": 1}, ("high", "low"))  # text sorted; columns by name
    assert read_class_table(path, ("low", "high")) == ({"a": 1, "b": 0}, ("low", "high"))  # dataset.json's order
    path.write_text("case,label\na,1\nb,1.0\n")
    with pytest.raises(ValueError, match="one number written two ways"):
        read_class_table(path)


def test_cli_synth_and_prepare(tmp_path, capsys):
    out, cache = tmp_path / "ds", tmp_path / "cache"
    assert cli.main(["synth", str(out), "--layout", "nnunet", "--modalities", "t2w", "adc", "dwi", "--classes", "low",
                     "high", "--cases", "6", "--shape", "64", "64", "8", "--seed", "2", "-q"]) == 0
    assert "modalities t2w, adc, dwi, classes low, high" in capsys.readouterr().out
    assert json.loads((out / "dataset.json").read_text())["channel_names"] == {"0": "t2w", "1": "adc", "2": "dwi"}
    assert cli.main(["prepare", str(out), "--cache", str(cache), "--size", "32", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "6 cases, 32x32 px slices, modalities t2w/adc/dwi, classes low/high [3, 3]" in printed
    cohort = Cohort.load(next(cache.glob("nnunet_*.npz")))
    assert cohort.modalities == ("t2w", "adc", "dwi") and cohort.classes == ("low", "high") and len(cohort) == 6
    assert cli.main(["prepare", str(out), "--cache", str(cache), "--grid", "refuse", "--slice-policy", "central",
                     "-q"]) == 0
    assert cli.main(["prepare", str(out), "--cache", str(cache), "--include-censored", "-q"]) == 2
    assert "--include-censored applies to BraTS survival only" in capsys.readouterr().err
    assert cli.main(["synth", str(tmp_path / "b"), "--modalities", "a", "b", "-q"]) == 2
    assert "--modalities applies to --layout nnunet only" in capsys.readouterr().err
    assert cli.main(["synth", str(tmp_path / "c"), "--layout", "nnunet", "--modalities", "only", "-q"]) == 2
    assert "1 modalities" in capsys.readouterr().err
