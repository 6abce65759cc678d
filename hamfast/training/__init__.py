"""Training, prediction and checkpoints for HAM and the baselines.

* :mod:`.trainer`: :class:`TrainConfig`, :func:`train` (the training loop), :func:`predict_proba`;
* :mod:`.checkpoints`: :func:`save_checkpoint`, :func:`load_checkpoint`;
* :mod:`.batched`: :func:`~hamfast.training.batched.train_batched`, R models of one method trained as
  one stacked model (the same results as R calls of :func:`train`);
* :mod:`.divergence`: NaN/Inf are errors (data, each step's loss and gradients, weights);
* building blocks: batch/pattern sampling (:mod:`.sampling`), the loss (:mod:`.losses`) and HAM's
  precise per-pattern batch-norm statistics (:mod:`.recalibrate`).
"""
from hamfast.training.trainer import (
    PRECISIONS,
    SCHEDULES,
    TrainConfig,
    TrainResult,
    build_from_config,
    calibration_set,
    initial_model,
    predict_proba,
    train,
)
from hamfast.training.checkpoints import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint

__all__ = [
    "PRECISIONS",
    "SCHEDULES",
    "TrainConfig",
    "TrainResult",
    "train",
    "build_from_config",
    "predict_proba",
    "calibration_set",
    "initial_model",
    "save_checkpoint",
    "load_checkpoint",
    "CHECKPOINT_FORMAT",
]
