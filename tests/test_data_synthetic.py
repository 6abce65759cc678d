"""The synthetic BraTS-like cohort: layout, determinism, what it encodes, and reading it back."""
import csv
import re
import warnings

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from hamfast.data import MODALITIES, make_synthetic_brats, prepare_brats, survival_class  # noqa: E402
from hamfast.data.brats import TRAINING_DIR  # noqa: E402
from hamfast.data.phantom import CONTRAST, PRIVATE_CONTRASTS  # noqa: E402
from hamfast.data.synthetic import SIZE_WEIGHTS, case_traits, risk_weights, trait_sizes  # noqa: E402

SHAPE = (64, 64, 16)
N = 12


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_brats(tmp_path_factory.mktemp("synthetic"), n_cases=N, shape=SHAPE, seed=3)


def table(root):
    with open(root / TRAINING_DIR / "survival_data.csv", newline="") as handle:
        return list(csv.reader(handle))


def case_arrays(root, case):
    folder = next((root / TRAINING_DIR).glob(f"*/{case}"))
    return {role: np.asanyarray(nib.load(str(folder / f"{case}_{role}.nii.gz")).dataobj) for role in MODALITIES + ("seg",)}


def test_layout_files_and_table(root):
    data = root / TRAINING_DIR
    hgg, lgg = sorted(p.name for p in (data / "HGG").iterdir()), sorted(p.name for p in (data / "LGG").iterdir())
    assert len(hgg) == N + 2 and len(lgg) == 1  # + one censored, one unparsable; one LGG case without a row
    for case in hgg[:2] + lgg:
        names = sorted(p.name for p in (data / ("LGG" if case in lgg else "HGG") / case).iterdir())
        assert names == sorted(f"{case}_{role}.nii.gz" for role in MODALITIES + ("seg",))
    arrays = case_arrays(root, hgg[0])
    image = nib.load(str(data / "HGG" / hgg[0] / f"{hgg[0]}_t1.nii.gz"))
    assert image.get_data_dtype() == np.int16 and image.shape == SHAPE and nib.aff2axcodes(image.affine) == ("L", "P", "S")
    assert arrays["seg"].dtype == np.uint8 and set(np.unique(arrays["seg"])) <= {0, 1, 2, 4}
    assert all(arrays[m].min() == 0 and arrays[m].max() > 0 for m in MODALITIES)
    brain = arrays["t1"] != 0  # skull-stripped: the same brain in every modality, zero outside
    assert all(np.array_equal(arrays[m] != 0, brain) for m in MODALITIES) and not (arrays["seg"][~brain]).any()
    rows = table(root)
    assert rows[0] == ["BraTS19ID", "Age", "Survival", "ResectionStatus"] and len(rows) == 1 + N + 2
    cells = [row[2] for row in rows[1:]]
    assert sum(bool(re.fullmatch(r"ALIVE \(\d+ days later\)", c)) for c in cells) == 1
    assert sum(c.isdigit() for c in cells) == N


def test_same_seed_same_cohort_other_seed_differs(root, tmp_path, capsys):
    again = make_synthetic_brats(tmp_path / "again", n_cases=N, shape=SHAPE, seed=3)
    other = make_synthetic_brats(tmp_path / "other", n_cases=N, shape=SHAPE, seed=4)
    prefix = make_synthetic_brats(tmp_path / "prefix", n_cases=3, shape=SHAPE, seed=3, progress=True)
    assert "writing synthetic BraTS" in capsys.readouterr().err
    assert table(again) == table(root) and table(other) != table(root)
    for case in ("BraTS19_SYN_0000_1", f"BraTS19_SYN_{N + 2:04d}_1"):
        first, second = case_arrays(root, case), case_arrays(again, case)
        assert all(np.array_equal(first[r], second[r]) for r in first)
    case = "BraTS19_SYN_0002_1"
    assert not np.array_equal(case_arrays(other, case)["flair"], case_arrays(root, case)["flair"])
    assert np.array_equal(case_arrays(prefix, case)["t1ce"], case_arrays(root, case)["t1ce"])  # case i: (seed, i) only


def test_existing_cohort_is_reused_or_refused(root):
    marker = root / TRAINING_DIR / "hamfast_synthetic.json"
    before = marker.stat().st_mtime_ns
    assert make_synthetic_brats(root, n_cases=N, shape=SHAPE, seed=3) == root
    assert marker.stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="not empty"):
        make_synthetic_brats(root, n_cases=N, shape=SHAPE, seed=4)
    with pytest.raises(ValueError, match="shape"):
        make_synthetic_brats(root / "x", shape=(32, 64, 16))


def test_the_reader_reads_it(root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cohort = prepare_brats(root, size=96)
    assert len(cohort) == N and cohort.images.shape == (N, 4, 96, 96) and cohort.available.all()
    assert cohort.report["counts"]["skipped_by_reason"] == {"censored": 1, "no_survival_row": 1, "unparsable_survival": 1}
    assert len([w for w in caught if "survival" in str(w.message)]) == 1
    for i, case in enumerate(cohort.ids[:3]):
        seg = case_arrays(root, case)["seg"]
        assert cohort.slice_index[i] == np.argmax((seg > 0).sum((0, 1)))


def test_class_shares_follow_the_paper():
    """36/25/39 % short/mid/long, for any cohort size (from the survival model alone, no images)."""
    for n, seed in ((213, 0), (120, 5)):
        days = [case_traits(seed, i, np.random.default_rng([seed, i]))[1] for i in range(n)]
        shares = np.bincount(survival_class(days), minlength=3) / n
        assert np.abs(shares - [0.36, 0.25, 0.39]).max() < 0.02


def test_traits_drive_survival_and_show_in_the_slice(tmp_path):
    """Each size trait moves survival the way its weight's sign says (positive: shorter); the oedema
    trait sets the lesion area of the reader's slice
    and the rim trait the enhancing area (an image-driven cohort: signal 0.95, no private traits)."""
    n, seed = 40, 1
    root = make_synthetic_brats(tmp_path, n_cases=n, shape=SHAPE, seed=seed, signal=0.95, private=0.0)
    # The traits of many more cases than are imaged, for the trait-survival correlations; the first n are the images'.
    many = [case_traits(seed, i, np.random.default_rng([seed, i]), 0.95, 0.0) for i in range(1000)]
    many_traits, many_days = np.array([z for z, _ in many]), np.log([d for _, d in many])
    traits, lesion, enhancing = many_traits[:n], [], []
    for i in range(n):
        seg = case_arrays(root, f"BraTS19_SYN_{i:04d}_1")["seg"]
        axial = seg[..., np.argmax((seg > 0).sum((0, 1)))]
        lesion.append((axial > 0).sum()), enhancing.append((axial == 4).sum())

    def rank_corr(a, b):
        return np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1]

    assert all(np.sign(SIZE_WEIGHTS[k]) * rank_corr(many_traits[:, k], many_days) < -0.2 for k in range(3))
    assert rank_corr(traits[:, 2], lesion) > 0.8
    assert rank_corr(traits[:, 1], enhancing) > 0.6
    assert abs(rank_corr(traits[:, 0], lesion)) < 0.4  # necrosis does not set the lesion size


def test_signal_and_private_shares_set_the_risk_model():
    """``signal`` is the share of the risk variance the traits explain, ``private`` the share of that in
    the one-modality traits; the empirical correlations follow."""
    w = risk_weights(0.6, 0.5)
    assert w.shape == (8,) and np.isclose((w**2).sum(), 1)
    assert np.isclose((w[:7] ** 2).sum(), 0.6) and np.isclose((w[3:7] ** 2).sum(), 0.3)
    assert np.isclose(w[7] ** 2, 0.4)
    assert np.allclose(risk_weights(0.95, 0.0)[3:7], 0)
    for signal, private in ((0.6, 0.5), (0.3, 1.0), (0.9, 0.0)):
        z, days = zip(*(case_traits(2, i, np.random.default_rng([2, i]), signal, private) for i in range(3000)))
        z, risk = np.array(z), -np.log(days)
        explained = np.corrcoef(np.c_[z, risk].T)[-1, :-1] ** 2  # each trait's share of the risk variance
        assert abs(explained.sum() - signal) < 0.05
        assert abs(explained[3:].sum() - signal * private) < 0.05
    for bad in (dict(signal=1.2), dict(private=-0.1)):
        with pytest.raises(ValueError, match="must lie in"):
            case_traits(0, 0, np.random.default_rng(0), **{"signal": 0.5, "private": 0.5, **bad})


def test_private_traits_change_one_modality_each():
    """Each private trait sets one contrast of one modality's column, nothing else."""
    low, high = trait_sizes(np.r_[0, 0, 0, -3, -3, -3, -3]), trait_sizes(np.r_[0, 0, 0, 3, 3, 3, 3])
    assert trait_sizes(np.zeros(3)).contrasts is None and np.array_equal(trait_sizes(np.zeros(3)).contrast_table(), CONTRAST)
    diff = high.contrast_table() != low.contrast_table()
    assert diff.sum() == 4 and (diff.sum(0) == 1).all()  # one changed entry per modality
    for (row, column, (lo, hi)), a, b in zip(PRIVATE_CONTRASTS.values(), low.contrasts, high.contrasts):
        assert diff[row, column] and lo <= a < b <= hi


def test_signal_zero_unlinks_survival_from_the_images():
    z, days = zip(*(case_traits(4, i, np.random.default_rng([4, i]), 0.0, 0.5) for i in range(2000)))
    corr = np.corrcoef(np.c_[np.array(z), np.log(days)].T)[-1, :-1]
    assert np.abs(corr).max() < 0.08


def test_an_interrupted_write_resumes_to_the_same_cohort(tmp_path, monkeypatch):
    """Issue 18: a rerun after Ctrl-C was refused (the folder was not empty)."""
    import hamfast.data.synthetic as synthetic

    whole = make_synthetic_brats(tmp_path / "whole", n_cases=6, shape=SHAPE, seed=3)
    render, calls = synthetic.render_case, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return render(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_case", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_brats(tmp_path / "cut", n_cases=6, shape=SHAPE, seed=3)
    monkeypatch.undo()
    data = tmp_path / "cut" / TRAINING_DIR
    assert not (data / "survival_data.csv").exists() and not (data / "hamfast_synthetic.json").exists()
    resumed = make_synthetic_brats(tmp_path / "cut", n_cases=6, shape=SHAPE, seed=3)
    assert not (data / synthetic.PARTIAL).exists()
    for name in ("survival_data.csv",):
        assert (resumed / TRAINING_DIR / name).read_text() == (whole / TRAINING_DIR / name).read_text()
    cases = sorted(p.relative_to(whole) for p in whole.rglob("*.nii.gz"))
    assert cases == sorted(p.relative_to(resumed) for p in resumed.rglob("*.nii.gz")) and len(cases) == 5 * 9
    for path in cases:
        np.testing.assert_array_equal(np.asarray(nib.load(resumed / path).dataobj), np.asarray(nib.load(whole / path).dataobj))
    with pytest.raises(FileExistsError):  # other arguments over an unfinished write: still refused
        (data / synthetic.PARTIAL).mkdir()
        (data / synthetic.PARTIAL / "arguments.json").write_text("{}")
        (data / "hamfast_synthetic.json").unlink()
        make_synthetic_brats(tmp_path / "cut", n_cases=7, shape=SHAPE, seed=3)


def test_too_many_cases_or_too_little_disk_is_refused_before_writing(tmp_path, monkeypatch):
    import hamfast.data.synthetic as synthetic

    with pytest.raises(ValueError, match="n_cases 100000000 is beyond the limit of 100000 synthetic cases"):
        make_synthetic_brats(tmp_path / "many", n_cases=10**8)
    monkeypatch.setattr(synthetic, "_free_bytes", lambda folder: 10**6)
    with pytest.raises(ValueError, match="40 synthetic cases need up to .* GB; .* has 0.001 GB free"):
        make_synthetic_brats(tmp_path / "full", n_cases=40, shape=SHAPE)
    assert not (tmp_path / "many").exists() and not (tmp_path / "full" / TRAINING_DIR / synthetic.PARTIAL).exists()


def test_synth_command_says_how_many_folders_and_why(tmp_path, capsys):
    from hamfast import cli

    assert cli.main(["synth", str(tmp_path / "s"), "--cases", "40", "--shape", "64", "64", "8", "-q"]) == 0
    out = capsys.readouterr().out
    assert "wrote 40 synthetic cases with a survival label in" in out and "43 case folders in all (+3 that" in out
    folders = [p for p in (tmp_path / "s" / TRAINING_DIR).glob("*/*") if p.is_dir()]
    assert len(folders) == 43
    assert cli.main(["synth", str(tmp_path / "t"), "--cases", "100000000", "-q"]) == 2
    assert "beyond the limit of 100000" in capsys.readouterr().err and not (tmp_path / "t").exists()
