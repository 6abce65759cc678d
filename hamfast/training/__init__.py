"""Building blocks of ``hamfast.train``: batch/pattern sampling (:mod:`.sampling`), the loss
(:mod:`.losses`) and HAM's precise per-pattern batch-norm statistics (:mod:`.recalibrate`)."""
