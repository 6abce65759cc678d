"""The data path through the command line (issue 9, items 1, 5 and 6): `hamfast prepare` on a cohort
without segmentations, a cache read with --on-error skip used by train and evaluate, and `hamfast
predict` on damaged, empty and brainless input. Every case is made up (tiny NIfTI volumes)."""
import json
import shutil

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
pytest.importorskip("torch")

from hamfast import cli  # noqa: E402
from hamfast.data import MODALITIES  # noqa: E402

SHAPE = (20, 24, 10)  # brain in axial slices 1..7


def write_case(folder, seed, override=None):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i, modality in enumerate(MODALITIES):
        volume = np.zeros(SHAPE, dtype=np.int16)
        volume[3:17, 4:20, 1:8] = rng.integers(50, 400, (14, 16, 7)) * (i + 1)
        volume = (override or {}).get(modality, volume)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(folder / f"{folder.name}_{modality}.nii.gz"))
    return folder


def damage(path):
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC-32: the deflate data still decode
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Eight cases without segmentation (the way clinical and BraTS 2023 validation data come), one damaged;
    prepared with --slice-policy and --on-error skip, and a model trained on that cache."""
    base = tmp_path_factory.mktemp("data_cli")
    root = base / "root"
    for i in range(8):
        write_case(root / f"P{i}", seed=i)
    damage(root / "P7" / "P7_t2.nii.gz")
    rows = "\n".join(f"P{i},50,{100 + 100 * i}" for i in range(8))
    (root / "survival_data.csv").write_text(f"BraTS19ID,Age,Survival\n{rows}\n")
    cache = base / "cache"
    assert cli.main(["prepare", str(root), "--cache", str(cache), "--size", "96", "--slice-policy", "largest_brain",
                     "--on-error", "skip", "-q"]) == 0
    checkpoint = base / "ham.pt"
    assert cli.main(["train", "--data", str(cache), "--method", "ham", "--iterations", "2", "--widths", "2", "2", "2", "2",
                     "--test-size", "2", "--out", str(checkpoint), "--device", "cpu", "-q"]) == 0
    return root, cache, checkpoint


def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1]


def test_prepare_without_segmentations_asks_for_the_option_it_has(cohort, tmp_path, capsys):
    root, _, _ = cohort
    assert cli.main(["prepare", str(root), "--cache", str(tmp_path / "c"), "-q"]) == 2
    line = error_line(capsys)
    assert line.startswith("hamfast prepare: error: case P0: no segmentation file")
    assert "give slice_policy (hamfast prepare --slice-policy): an axial index or one of largest_brain" in line
    assert not (tmp_path / "c").exists()


def test_prepare_with_slice_policy_and_skip_reports_the_damaged_case(cohort, tmp_path, capsys):
    root, _, _ = cohort
    assert cli.main(["prepare", str(root), "--cache", str(tmp_path / "c"), "--slice-policy", "4", "--on-error", "skip",
                     "-q"]) == 0
    out = capsys.readouterr().out
    assert "cohort: 7 cases" in out and "skipped 1 case(s): {'unreadable': 1}" in out
    manifest = json.loads(next((tmp_path / "c").glob("*.json")).read_text())
    assert manifest["settings"]["slice_policy"] == 4 and manifest["settings"]["on_error"] == "skip"


def test_prepare_rejects_a_bad_slice_policy(cohort, tmp_path, capsys):
    root, _, _ = cohort
    with pytest.raises(SystemExit):
        cli.main(["prepare", str(root), "--cache", str(tmp_path / "c"), "--slice-policy", "middle"])
    assert "--slice-policy: must be an axial index (an integer) or one of largest_brain, central, got 'middle'" in capsys.readouterr().err


def test_skip_cache_is_accepted_by_evaluate_from_the_cache_and_the_root(cohort, tmp_path, capsys):
    root, cache, checkpoint = cohort
    for data in (["--data", str(cache)], ["--data", str(root), "--cache", str(cache)]):
        out = tmp_path / "metrics.json"
        assert cli.main(["evaluate", str(checkpoint), *data, "--cases", "all", "--subsets", "t1,t1+t2",
                         "--json", str(out), "--device", "cpu", "-q"]) == 0, capsys.readouterr().err
        assert [r["cases"] for r in json.loads(out.read_text())["rows"]] == [7, 7]


def test_prepare_refuses_to_lose_most_of_the_cohort(tmp_path, capsys):
    root = tmp_path / "root"
    for i in range(3):
        write_case(root / f"P{i}", seed=i)
    (root / "survival_data.csv").write_text('BraTS19ID,Age,Survival\n"P0,50,100\nP1,50,200\nP2,50,"3\n')
    assert cli.main(["prepare", str(root), "--cache", str(tmp_path / "c"), "--slice-policy", "4", "-q"]) == 2
    line = error_line(capsys)
    assert line.startswith(f"hamfast prepare: error: 2 of 3 case folders under {root} are lost ({{'unparsable_row': 2}}")
    assert line.endswith("or pass on_error='skip' (hamfast prepare --on-error skip) to go on without them")
    assert cli.main(["prepare", str(root), "--cache", str(tmp_path / "c"), "--slice-policy", "4", "--on-error", "skip",
                     "-q"]) == 0
    assert "cohort: 1 cases" in capsys.readouterr().out


def copy_case(root, name, tmp_path):
    return shutil.copytree(root / name, tmp_path / name)


def test_predict_says_which_modalities_were_used(cohort, tmp_path, capsys):
    """The case has no segmentation: predict takes the checkpoint's slice policy, as prepare did."""
    root, _, checkpoint = cohort
    case = copy_case(root, "P1", tmp_path)
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.int16), np.eye(4)), str(case / "P1_flair.nii.gz"))
    with pytest.warns(UserWarning, match=r"^case P1: modality flair carries no signal \(P1_flair.nii.gz is all zero\); not used$"):
        assert cli.main(["predict", str(checkpoint), str(case), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "case P1: modalities used t1, t1ce, t2 (not used, no signal: flair: all zero), axial slice 1," in out
    assert cli.main(["predict", str(checkpoint), str(case), "--json", "--device", "cpu", "-q"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["modalities"] == ["t1", "t1ce", "t2"] and answer["no_signal"] == ["flair"]
    assert answer["no_signal_reasons"] == {"flair": "all zero"}


def test_predict_says_why_a_nearly_empty_modality_was_dropped(cohort, tmp_path, capsys):
    """A t2 zero but for one voxel used to count as present (issue 18)."""
    root, _, checkpoint = cohort
    case = copy_case(root, "P1", tmp_path)
    spike = np.zeros(SHAPE, np.int16)
    spike[10, 10, 4] = 30000
    nib.save(nib.Nifti1Image(spike, np.eye(4)), str(case / "P1_t2.nii.gz"))
    assert cli.main(["predict", str(checkpoint), str(case), "--device", "cpu", "-q"]) == 0
    out = capsys.readouterr().out
    assert "modalities used t1, t1ce, flair (not used, no signal: t2: non-zero in 1 voxel(s) only, fewer than" in out


def test_prepare_lists_each_dropped_modality_with_its_reason(tmp_path, capsys):
    root = tmp_path / "root"
    for i in range(3):
        write_case(root / f"P{i}", seed=i, override={"t1": np.zeros(SHAPE, np.int16)} if i == 1 else None)
    (root / "survival_data.csv").write_text("BraTS19ID,Age,Survival\nP0,50,100\nP1,50,400\nP2,50,600\n")
    assert cli.main(["prepare", str(root), "--cache", str(tmp_path / "c"), "--slice-policy", "largest_brain", "-q"]) == 0
    out = capsys.readouterr().out
    assert "modality files without signal, not used: {'t1': 1}\n  case P1: t1 all zero\n" in out


def test_prepare_skips_an_rgb_case_with_its_reason(tmp_path, capsys):
    root = tmp_path / "root"
    for i in range(3):
        write_case(root / f"P{i}", seed=i)
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(root / "P1" / "P1_t2.nii.gz"))
    (root / "survival_data.csv").write_text("BraTS19ID,Age,Survival\nP0,50,100\nP1,50,400\nP2,50,600\n")
    assert cli.main(["prepare", str(root), "--cache", str(tmp_path / "c"), "--slice-policy", "largest_brain",
                     "--on-error", "skip", "-q"]) == 0
    out = capsys.readouterr().out
    assert "cohort: 2 cases" in out and "skipped 1 case(s): {'not_intensity': 1}" in out


@pytest.mark.parametrize("problem", ["crc", "background_slice", "all_zero", "huge", "rgb", "nan"])
def test_predict_refuses_bad_input_in_one_line(cohort, tmp_path, capsys, problem):
    root, _, checkpoint = cohort
    case = copy_case(root, "P2", tmp_path)
    extra = []
    if problem == "crc":
        damage(case / "P2_t1ce.nii.gz")
        expected = f"case P2: damaged gzip data (Error -3 while decompressing data: incorrect data check): the file is " \
                   f"corrupt; copy or download it again ({case / 'P2_t1ce.nii.gz'})"
    elif problem == "background_slice":
        extra = ["--slice-index", "-1"]
        expected = f"case P2: axial slice 9 holds no brain: every modality is zero there (brain in axial slices 1 to 7); " \
                   f"choose another slice ({case})"
    elif problem == "all_zero":
        for m in MODALITIES:
            nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.int16), np.eye(4)), str(case / f"P2_{m}.nii.gz"))
        expected = f"case P2: no modality file carries signal (t1, t1ce, t2, flair: t1 all zero; t1ce all zero; t2 all " \
                   f"zero; flair all zero) ({case})"
    elif problem == "rgb":
        nib.save(nib.Nifti1Image(np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]), np.eye(4)),
                 str(case / "P2_t2.nii.gz"))
        expected = f"case P2: voxels are RGB colour, not scalar intensities; convert the file to a grey-scale (integer " \
                   f"or float) NIfTI ({case / 'P2_t2.nii.gz'})"
    elif problem == "nan":
        volume = np.full(SHAPE, np.nan, np.float32)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(case / "P2_t2.nii.gz"))
        expected = f"case P2: t2: {volume.size} NaN or infinite voxels ({case / 'P2_t2.nii.gz'})"
    else:
        volume = np.full(SHAPE, 1e300)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(case / "P2_t2.nii.gz"))
        expected = f"case P2: t2: voxel values up to 1e+300 (beyond +-1e+10): the file is corrupt or wrongly scaled " \
                   f"({case / 'P2_t2.nii.gz'})"
    assert cli.main(["predict", str(checkpoint), str(case), *extra, "--device", "cpu", "-q"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines()[-1] == f"hamfast predict: error: {expected}"
