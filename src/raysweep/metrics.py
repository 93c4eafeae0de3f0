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
    """The unweighted mean over classes 0..num_classes-1 of F1 = 2 TP / (2 TP + FP + FN), a class
    that is neither true nor predicted counting 0: `sklearn.metrics.f1_score(..., labels=classes,
    average="macro", zero_division=0)`, computed the same way (2 TP over true + predicted counts)."""
    matrix = confusion(y_true, y_pred, num_classes)
    tp = np.diag(matrix).astype(np.float64)
    denominator = matrix.sum(axis=0) + matrix.sum(axis=1)  # predicted + true = 2 TP + FP + FN
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return float(np.average(f1))
