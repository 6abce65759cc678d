"""hamfast.data.naming and hamfast.data.slices: file-name rules and the per-slice image work (no NIfTI)."""
import numpy as np
import pytest

from hamfast.data.naming import MODALITIES, case_files
from hamfast.data.slices import intensity_bounds, largest_area_slice, normalise, pad_to, percentile_bounds, resize, to_square


@pytest.mark.parametrize(
    "names",
    [
        [f"BraTS19_X_1_{role}.nii.gz" for role in ("t1", "t1ce", "t2", "flair", "seg")],
        ["BraTS-GLI-00001-000-t1n.nii.gz", "BraTS-GLI-00001-000-t1c.nii.gz", "BraTS-GLI-00001-000-t2w.nii.gz",
         "BraTS-GLI-00001-000-t2f.nii.gz", "BraTS-GLI-00001-000-seg.nii.gz"],
        ["t1.nii", "t1c.nii", "T2.nii", "FLAIR.nii.gz", "seg.nii.gz"],
    ],
)
def test_case_files_recognises_every_naming(tmp_path, names):
    for name in names + ["notes.txt", "BraTS19_X_1_mask.nii.gz"]:
        (tmp_path / name).write_bytes(b"")
    files = case_files(tmp_path)
    assert [files[role].name for role in MODALITIES + ("seg",)] == names


def test_case_files_rejects_two_files_for_one_modality(tmp_path):
    (tmp_path / "X_t1ce.nii.gz").write_bytes(b"")
    (tmp_path / "X_t1c.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="X_t1c.nii.gz.*X_t1ce.nii.gz|X_t1ce.nii.gz.*X_t1c.nii.gz"):
        case_files(tmp_path)


def test_largest_area_slice_counts_voxels_per_axial_slice():
    mask = np.zeros((5, 6, 7), dtype=bool)
    mask[1:3, 1:3, 2] = True  # 4 voxels
    mask[0:3, 0:3, 5] = True  # 9 voxels
    assert largest_area_slice(mask) == 5


def test_normalise_min_max_over_the_brain_and_zero_background():
    image = np.array([[0, 0, 0], [0, -10, 30], [0, 10, 0]], dtype=np.int16)  # brain: negative values too
    mask = image != 0
    out = normalise(image, mask)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0, 0, 0], [0, 0, 1], [0, 0.5, 0]])


@pytest.mark.parametrize("spike", [10_000, 9e9, -10_000])
def test_one_outlier_cannot_collapse_the_scale(spike):
    """Issue 18: plain min-max squashed the brain to ~0 under one spike voxel; the default is robust."""
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, (32, 32))
    clean = normalise(image, np.ones_like(image, dtype=bool))
    image[0, 0] = spike
    mask = np.ones_like(image, dtype=bool)
    plain, clipped = normalise(image, mask), normalise(image, mask, percentile=99)
    assert plain.min() == 0 and plain.max() == 1 and clipped.min() == 0 and clipped.max() == 1
    assert 0.3 < np.median(plain) < 0.7 and 0.3 < np.median(clipped)
    np.testing.assert_array_equal(plain.ravel()[1:], clean.ravel()[1:])  # the spike is clipped, nothing else moves
    assert normalise(np.full((4, 4), 7.0), np.ones((4, 4), bool)).max() == 0  # constant: zeros


@pytest.mark.parametrize("bad", [50, 101, (90, 10), (0, 101), (5, 5)])
def test_percentile_bounds_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="percentile"):
        percentile_bounds(bad)


def test_robust_bounds_keep_a_bright_connected_tail_and_cut_a_spike_cluster():
    rng = np.random.default_rng(1)
    brain = rng.normal(500, 20, 4000)
    rim = np.linspace(600, 1200, 15)  # a small enhancing structure, bright but reached without a wide gap
    assert intensity_bounds(np.concatenate([brain, rim]))[1] == 1200
    spikes = np.full(3, 30_000.0)  # three identical spikes: no gap between them, a wide one below them
    assert intensity_bounds(np.concatenate([brain, rim, spikes]))[1] == 1200
    assert intensity_bounds(np.array([-10.0, 30, 10])) == (-10, 30)  # a tiny brain: plain min-max


def test_percentile_bounds_forms():
    assert percentile_bounds(None) is None
    assert percentile_bounds(99.5) == (0.5, 99.5)
    assert percentile_bounds((1, 98)) == (1.0, 98.0)


def test_to_square_crops_to_the_brain_and_pads_centred():
    stack = np.zeros((4, 20, 30), dtype=np.float32)
    stack[:, 5:11, 8:12] = 1  # 6 x 4 brain
    mask = stack.any(0)
    out = to_square(stack, mask, crop=True)
    assert out.shape == (4, 6, 6)
    np.testing.assert_array_equal(out[0].sum(0), [0, 6, 6, 6, 6, 0])  # padded 1 column each side
    assert to_square(stack, mask, crop=False).shape == (4, 30, 30)
    with pytest.raises(ValueError, match="cannot pad"):
        pad_to(stack, 25)


def test_resize_shape_range_and_content():
    stack = np.zeros((4, 120, 120), dtype=np.float32)
    stack[:, 30:90, 30:90] = 1
    out = resize(stack, 96)
    assert out.shape == (4, 96, 96) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    assert out[:, 48, 48].min() == pytest.approx(1) and out[:, 2, 2].max() == pytest.approx(0)
    assert abs(out[0].mean() - stack[0].mean()) < 0.01  # the square keeps its share of the image
    np.testing.assert_array_equal(resize(stack, 120), stack)
