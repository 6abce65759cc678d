"""Macro-averaged metrics checked against confusion matrices worked out by hand."""
import numpy as np
import pytest
import torch

from hamfast.metrics import classification_metrics, confusion_matrix


def test_three_class_example_by_hand():
    y_true = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    y_pred = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]
    # rows = true, columns = predicted:
    #         p0 p1 p2
    # t0  [   2, 1, 1 ]
    # t1  [   1, 2, 0 ]
    # t2  [   0, 1, 2 ]
    # class 0: TP 2, FN 2, FP 1, TN 5 -> sens 2/4, spec 5/6, prec 2/3
    # class 1: TP 2, FN 1, FP 2, TN 5 -> sens 2/3, spec 5/7, prec 2/4
    # class 2: TP 2, FN 1, FP 1, TN 6 -> sens 2/3, spec 6/7, prec 2/3
    m = classification_metrics(np.array(y_true), torch.tensor(y_pred), num_classes=3)
    assert m["confusion_matrix"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)  # 11/18
    assert m["sensitivity"] == pytest.approx(11 / 18)
    assert m["specificity"] == pytest.approx((5 / 6 + 5 / 7 + 6 / 7) / 3)  # 101/126
    assert m["precision"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)  # 11/18
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["per_class"]["specificity"] == pytest.approx([5 / 6, 5 / 7, 6 / 7])


def test_class_never_predicted_has_precision_zero():
    # cm = [[1, 0, 0], [1, 0, 0], [0, 0, 2]]
    # class 0: TP 1, FN 0, FP 1, TN 2 -> sens 1, spec 2/3, prec 1/2
    # class 1: TP 0, FN 1, FP 0, TN 3 -> sens 0, spec 1,   prec 0/0 := 0
    # class 2: TP 2, FN 0, FP 0, TN 2 -> sens 1, spec 1,   prec 1
    m = classification_metrics([0, 1, 2, 2], [0, 0, 2, 2], 3)
    assert m["per_class"]["precision"] == [0.5, 0.0, 1.0]
    assert m["precision"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    # not MONAI's one-vs-rest balanced accuracy mean((sens_c + spec_c) / 2) = 7/9
    assert m["balanced_accuracy"] != pytest.approx(7 / 9)


def test_perfect_and_chance_level():
    assert classification_metrics([0, 1, 2], [0, 1, 2], 3)["balanced_accuracy"] == 1.0
    assert classification_metrics([0, 1, 2, 0, 1, 2], [0, 0, 0, 0, 0, 0], 3)["balanced_accuracy"] == pytest.approx(1 / 3)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError, match=r"y_pred must lie in \[0, 3\)"):
        confusion_matrix([0, 1], [0, 3], 3)
    with pytest.raises(ValueError, match="integer class indices"):
        confusion_matrix([0.0, 1.0], [0, 1], 3)
