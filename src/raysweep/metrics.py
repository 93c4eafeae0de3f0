"""Macro-F1 and the confusion matrix in numpy: what every trial reports on its predictions.

scikit-learn gives the same numbers (tests/test_metrics.py checks them bit for bit), but
`import sklearn.metrics` pulls in scipy.stats: 6 of the 22 s that `import raysweep.sweep` took
at load ~35 here, paid by every CLI start, every Tune trial actor and every Ray Data worker
that evaluates a model. These two functions need none of it.
"""

from __future__ import annotations

import numpy as np


def confusion(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts of (true, predicted) over classes 0..num_classes-1, true classes down the rows, as
    `sklearn.metrics.confusion_matrix(y_true, y_pred, labels=range(num_classes))`. A label
    outside the classes is not counted."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    keep = (y_true >= 0) & (y_true < num_classes) & (y_pred >= 0) & (y_pred < num_classes)
    flat = y_true[keep].astype(np.int64) * num_classes + y_pred[keep].astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def macro_f1(y_true, y_pred, num_classes: int) -> float:
    """The unweighted mean of F1 = 2 TP / (2 TP + FP + FN) over the classes that are true or
    predicted at least once: `sklearn.metrics.f1_score(..., average="macro", zero_division=0)`,
    computed the same way (2 TP over true + predicted counts).

    Not over all of 0..num_classes-1: a class with no rows anywhere (labels with gaps, {0, 2, 4}
    of five) would count 0 and hold a perfect model at 0.6. Where every class has a val row (SST-5
    dev) the value is the same either way; it differs only for such data (docs/measurements.md)."""
    matrix = confusion(y_true, y_pred, num_classes)
    tp = np.diag(matrix).astype(np.float64)
    denominator = matrix.sum(axis=0) + matrix.sum(axis=1)  # predicted + true = 2 TP + FP + FN
    present = denominator > 0
    if not present.any():
        return 0.0
    return float(np.average(2 * tp[present] / denominator[present]))
