"""Stratified split and the simulated missingness of Experiments A and B."""
import numpy as np
import pytest

from hamfast.data import drop_one_modality, drop_random_modalities, stratified_split


def paper_labels():
    """213 labels in roughly the paper's class shares, shuffled."""
    labels = np.repeat([0, 1, 2], [77, 53, 83])
    return np.random.default_rng(0).permutation(labels)


def test_stratified_split_sizes_classes_and_determinism():
    labels = paper_labels()
    train, test = stratified_split(labels, test_size=36, seed=1)
    assert train.dtype == np.int64 and test.dtype == np.int64
    assert len(train) == 177 and len(test) == 36
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(213))
    expected = np.bincount(labels) * 36 / 213
    assert (np.abs(np.bincount(labels[test]) - expected) < 1).all()
    again, other = stratified_split(labels, test_size=36, seed=1), stratified_split(labels, test_size=36, seed=2)
    np.testing.assert_array_equal(again[1], test)
    assert not np.array_equal(other[1], test)
    assert len(stratified_split(labels, test_size=0.2, seed=0)[1]) == round(0.2 * 213)


@pytest.mark.parametrize("bad", [0, 213, 1.0, 0.0, -3, True, "36"])
def test_stratified_split_rejects_bad_test_size(bad):
    with pytest.raises(ValueError, match="test_size"):
        stratified_split(paper_labels(), test_size=bad)


def real_mask(n=200, seed=0):
    """A really incomplete training mask: every fifth sample lacks t2, every seventh has only flair."""
    mask = np.ones((n, 4), dtype=bool)
    mask[::5, 2] = False
    mask[::7] = [False, False, False, True]
    return mask


@pytest.mark.parametrize("drop", [drop_one_modality, drop_random_modalities])
def test_masks_are_subsets_never_empty_deterministic(drop):
    available = real_mask()
    before = available.copy()
    out = drop(available, 0.3, seed=4)
    np.testing.assert_array_equal(available, before)  # the input is not modified
    assert out.dtype == bool and out.shape == available.shape
    assert not (out & ~available).any()  # a really missing modality stays missing
    assert out.any(1).all()  # never zero modalities
    np.testing.assert_array_equal(out[::7], available[::7])  # single-modality samples keep it
    np.testing.assert_array_equal(drop(available, 0.3, seed=4), out)
    assert not np.array_equal(drop(available, 0.3, seed=5), out)
    untouched = (available.sum(1) == out.sum(1)).sum()
    assert 60 <= untouched <= 60 + (available.sum(1) == 1).sum()  # 60 drawn, plus single-modality samples


def test_drop_one_modality_experiment_a():
    available = np.ones((100, 4), dtype=bool)
    out = drop_one_modality(available, 0.3, seed=0)
    assert (out.sum(1) == 4).sum() == 30 and (out.sum(1) == 3).sum() == 70
    assert (~out).sum(0).min() > 5  # the dropped modality is random: each one is dropped sometimes
    assert drop_one_modality(available, 1.0, seed=0).all() and (drop_one_modality(available, 0.0, seed=0).sum(1) == 3).all()


def test_drop_one_modality_counts_incomplete_samples_like_any_other():
    available = real_mask()
    out = drop_one_modality(available, 0.3, seed=2)
    lost = available.sum(1) - out.sum(1)
    assert set(np.unique(lost)) == {0, 1}  # already incomplete samples lose one more, like the others
    assert (lost[available.sum(1) == 3] == 1).any() and (lost[available.sum(1) == 3] == 0).any()


def test_drop_random_modalities_experiment_b():
    available = np.ones((400, 4), dtype=bool)
    out = drop_random_modalities(available, 0.25, seed=0)
    kept = out.sum(1)
    assert (kept == 4).sum() == 100
    assert set(np.unique(kept[kept < 4])) == {1, 2, 3}  # each incomplete sample loses 1 to 3 of 4
    assert drop_random_modalities(available, seed=0).sum(1).tolist().count(4) == 100  # default 25 %


@pytest.mark.parametrize("drop", [drop_one_modality, drop_random_modalities])
def test_masks_reject_bad_input(drop):
    with pytest.raises(ValueError, match="completeness"):
        drop(np.ones((4, 4), bool), 1.5, seed=0)
    with pytest.raises(ValueError, match="no modality"):
        drop(np.array([[True, False], [False, False]]), 0.5, seed=0)
    with pytest.raises(ValueError, match="bool"):
        drop(np.ones((4, 4)), 0.5, seed=0)
