"""Cleaner LLM labels for the rows an annotated cell adds (pools `llm_cleaned` and `llm_routed`).

    outside_probs(cell, inputs, rows, recipe)     class probabilities of `rows`, out of sample
    flag_issues(labels, probs)                    confident learning's label issues (cleanlab)
    route(labels, probs, percent)                 the `percent` least-trustworthy labels
    cleaned(...) / routed(...)                    the rows and labels a cell trains on, and its record fields

Both pools add exactly the rows `llm_annotated` adds (its `real` counterpart's choice) and start
from the same LLM labels (the annotation step's: never paid twice). They differ in what they do
with the labels a model disagrees with:

- `llm_cleaned` asks confident learning (Northcutt et al. 2021; `cleanlab.filter.find_label_issues`)
  which LLM labels are likely wrong, and drops those rows (`cleaning.flagged: drop`) or gives them
  the model's label instead (`replace`).
- `llm_routed` sends the `cleaning.route_percent` % of LLM labels with the lowest label quality
  (cleanlab's `self_confidence`: the model's probability of the LLM's label) to a person: in the
  sweep that is the row's gold label, charged at the human price (Wang et al. 2021's mixed budget).

The model is the one a strategy ranks the pool with: trained on `labeled` (gold labels) with the
cell's freeze mode, recipe and seed, cached and shared by every cell of that (freeze, seed). It has
never seen a pool row, so its probabilities of the added rows are out of sample, as confident
learning requires, without cross-fitting. It is also the replacement label's source: the
`llm_teacher` pool's teacher trains on *every* real train row with its gold label, pool rows
included, so its "label" of a pool row would leak the gold label into a pool that claims not to
pay for one.
"""

from __future__ import annotations

import warnings
import numpy as np

from raysweep.pools import TrainRows


def outside_probs(cell, inputs, rows: np.ndarray, recipe) -> np.ndarray:
    """[len(rows), C]: the `labeled`-set model's class probabilities of pool rows `rows`."""
    from raysweep.model import predict_proba, trained_model  # torch: only when a cell trains

    gold = gold_of(inputs)
    model = trained_model(inputs.train_acts, inputs.labeled, gold[inputs.labeled], inputs.num_classes, recipe,
                          cell.seed, inputs.cache_dir, freeze=inputs.freeze, task=inputs.task)
    return np.asarray(predict_proba(model, inputs.train_acts, rows), dtype=np.float64)


def gold_of(inputs) -> np.ndarray:
    """The gold labels of train: what the annotated pools choose with (TrialInputs.select_labels)."""
    return inputs.train_labels if inputs.select_labels is None else inputs.select_labels


def flag_issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """A mask of the labels confident learning flags as issues. Fewer than two distinct labels
    leave nothing to estimate a noise matrix from (cleanlab refuses them): nothing is flagged."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(np.unique(labels)) < 2:
        return np.zeros(len(labels), dtype=bool)
    with warnings.catch_warnings():  # "too few examples in class k": expected for a small cell, said per trial
        warnings.simplefilter("ignore", UserWarning)
        from cleanlab.filter import find_label_issues

        # n_jobs=1: by default cleanlab forks a multiprocessing.Pool of one process per core. A
        # trial runs in a Ray worker with threads of its own (Tune's runner, Ray's), and a fork
        # there can copy a lock some thread holds: the child waits on it forever and the trial
        # hangs (seen in the suite). A cell's few hundred rows need no parallelism.
        return np.asarray(find_label_issues(labels, _full_width(probs), n_jobs=1), dtype=bool)


def label_quality(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """cleanlab's `self_confidence` label quality: the model's probability of each given label."""
    from cleanlab.rank import get_label_quality_scores

    return get_label_quality_scores(np.asarray(labels, dtype=np.int64), _full_width(probs), method="self_confidence")


def route(labels: np.ndarray, probs: np.ndarray, percent: float) -> np.ndarray:
    """A mask of exactly round(percent% of the rows) labels with the lowest label quality (ties:
    the earlier row first, so a cell routes the same rows every time)."""
    n = int(round(len(labels) * percent / 100.0))
    mask = np.zeros(len(labels), dtype=bool)
    if n:
        mask[np.argsort(label_quality(labels, probs), kind="stable")[:n]] = True
    return mask


def _full_width(probs: np.ndarray) -> np.ndarray:
    # cleanlab reads the class count off the probabilities and wants each row to sum to 1 exactly
    # enough; the head's softmax in float32 can be off by 1e-7.
    probs = np.clip(np.asarray(probs, dtype=np.float64), 0.0, None)
    return probs / probs.sum(axis=1, keepdims=True)


def cleaned(cell, inputs, added: np.ndarray, recipe, mode: str) -> TrainRows:
    """`llm_cleaned`: the LLM labels of `added`, the flagged ones dropped or replaced by the model's."""
    added = np.sort(np.asarray(added, dtype=np.int64))
    llm = inputs.train_labels[added]
    probs = outside_probs(cell, inputs, added, recipe) if len(added) else np.empty((0, inputs.num_classes))
    flagged = flag_issues(llm, probs) if len(added) else np.zeros(0, dtype=bool)
    new = llm.copy()
    if mode == "replace":
        new[flagged] = probs[flagged].argmax(axis=1)
        keep = np.ones(len(added), dtype=bool)
    else:
        keep = ~flagged
    fields = summary(gold_of(inputs)[added], llm, new, flagged, keep)
    fields.update(llm_labels=int(len(added)), human_labels=0)  # every added row's LLM label was paid for
    return _relabeled(inputs, added[keep], new[keep], fields)


def routed(cell, inputs, added: np.ndarray, recipe, percent: float) -> TrainRows:
    """`llm_routed`: the LLM labels of `added`, the `percent` % least-trustworthy replaced by gold."""
    added = np.sort(np.asarray(added, dtype=np.int64))
    llm, gold = inputs.train_labels[added], gold_of(inputs)[added]
    probs = outside_probs(cell, inputs, added, recipe) if len(added) else np.empty((0, inputs.num_classes))
    sent = route(llm, probs, percent) if len(added) else np.zeros(0, dtype=bool)
    new = np.where(sent, gold, llm)
    fields = summary(gold, llm, new, sent, np.ones(len(added), dtype=bool))
    # The LLM labeled every added row (its confidence is what chose the ones a person relabels);
    # a person was paid for the routed ones on top.
    fields.update(llm_labels=int(len(added)), human_labels=int(sent.sum()))
    return _relabeled(inputs, added, new, fields)


def _relabeled(inputs, added: np.ndarray, labels: np.ndarray, fields: dict) -> TrainRows:
    rows = np.concatenate([inputs.labeled, added])
    return TrainRows(rows, np.concatenate([gold_of(inputs)[inputs.labeled], labels]).astype(np.int64), fields)


def summary(gold: np.ndarray, llm: np.ndarray, new: np.ndarray, changed: np.ndarray, keep: np.ndarray) -> dict:
    """A cell's record fields: how many LLM labels it acted on (flagged / routed), how many rows it
    removed or relabeled, and each group's accuracy against gold (None for an empty group)."""
    relabeled = changed & keep
    return {
        "labels_flagged": int(changed.sum()),  # the LLM labels the pool acted on
        "labels_removed": int((changed & ~keep).sum()),
        "labels_replaced": int(relabeled.sum()),
        "llm_label_accuracy": _accuracy(llm, gold),  # every added row's LLM label (llm_annotated's)
        "flagged_llm_accuracy": _accuracy(llm[changed], gold[changed]),  # were the flagged ones wrong?
        "replacement_accuracy": _accuracy(new[relabeled], gold[relabeled]),
        "trained_label_accuracy": _accuracy(new[keep], gold[keep]),  # the added labels the cell trains on
    }


def _accuracy(labels: np.ndarray, gold: np.ndarray) -> float | None:
    return float(np.mean(labels == gold)) if len(labels) else None
