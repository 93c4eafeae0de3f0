"""raysweep.metrics gives scikit-learn's numbers, bit for bit, without importing it."""

import ast
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score

from test_import_graph import SRC, module_name

from raysweep.metrics import confusion, macro_f1


@pytest.mark.parametrize("seed", range(30))
def test_macro_f1_and_confusion_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    n = int(rng.integers(1, 40))
    # Skewed draws, so that some classes are never true, never predicted, or neither.
    y_true = rng.choice(k, n, p=rng.dirichlet(np.full(k, 0.3)))
    y_pred = rng.choice(k, n, p=rng.dirichlet(np.full(k, 0.3)))
    classes = list(range(k))
    present = sorted(set(y_true) | set(y_pred))  # sklearn's own default labels
    assert macro_f1(y_true, y_pred, k) == float(f1_score(y_true, y_pred, labels=present, average="macro",
                                                         zero_division=0))
    np.testing.assert_array_equal(confusion(y_true, y_pred, k), confusion_matrix(y_true, y_pred, labels=classes))


def test_by_hand():
    # Class 0: TP 1, FN 1 -> 2/3; class 1: TP 1, FP 1 -> 2/3; class 2 never seen: not averaged.
    assert macro_f1([0, 0, 1], [0, 1, 1], 3) == pytest.approx((2 / 3 + 2 / 3) / 2, abs=0)


def test_labels_with_gaps_score_a_perfect_model_one():
    """Classes {0, 2, 4} of five: the two with no rows do not drag a perfect model to 0.6."""
    truth = [0, 2, 4, 0, 2, 4]
    assert macro_f1(truth, truth, 5) == 1.0
    assert confusion([0, 0, 1], [0, 1, 1], 3).tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]


def top_level_imports(path: Path) -> set[str]:
    """The modules a file imports when it is imported (not inside a function)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_the_trial_path_imports_neither_sklearn_nor_scipy():
    """What a Tune trial actor and every CLI start import (raysweep.sweep, raysweep.cli and all
    they import at module level) stays free of scikit-learn and scipy; a late import inside
    the function that needs it is fine (the analysis, dedup, cross-validation)."""
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    seen, todo = set(), ["raysweep.sweep", "raysweep.cli"]
    heavy = {}
    while todo:
        name = todo.pop()
        if name in seen or name not in files:
            continue
        seen.add(name)
        found = top_level_imports(files[name])
        heavy[name] = sorted(m for m in found if m.split(".")[0] in ("sklearn", "scipy"))
        todo += [m for m in found if m in files] + [m.rsplit(".", 1)[0] for m in found if "." in m]
    assert "raysweep.train" in seen and "raysweep.scoring" in seen  # the walk reaches the trial
    assert {k: v for k, v in heavy.items() if v} == {}
