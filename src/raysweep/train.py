"""One trial: select rows from a pool, train the unfrozen part, evaluate on val (and on test,
when the data has a test split).

A trial is (pool, strategy, fraction, freeze, seed) under a fixed recipe. It needs no Ray:
a Tune trial runs a pack's trials through `run_trials` (records.py), and tests call it directly.

Seeds: one seed drives three independent random streams (selection, initialisation + dropout,
batch order), so a trial is reproducible bit for bit on CPU with the same thread count.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from raysweep import pools, scoring, strategies
from raysweep.backbone import count_trainable
from raysweep.config import CleaningConfig, RecipeConfig, SelectionConfig
from raysweep.freeze import FreezeMode
from raysweep.embed import Activations
from raysweep.grid import Cell, rows_to_add
from raysweep.metrics import confusion, macro_f1
from raysweep.model import Member, log_training, predict_proba, trained_model, trained_models
from raysweep.predictions import SplitPredictions
from raysweep.tasks import Task


@dataclass
class TrialInputs:
    """Everything a trial reads; shared by the trials of one freeze mode."""

    train_labels: np.ndarray  # labels of all train rows (labeled + unlabeled)
    val_labels: np.ndarray
    labeled: np.ndarray  # positions into train
    pool_rows: np.ndarray  # positions into train that may be added (the cell's `pool` is where they come from)
    train_acts: Activations  # boundary features of all train rows
    val_acts: Activations
    num_classes: int
    cache_dir: str | None = None  # where scoring models and pool scores are cached (see scoring.py); None: nowhere
    # The freeze mode (freeze/): the activations alone cannot say how the top above their boundary
    # trains (a LoRA mode's are top-K's: same boundary, same entry). None: in full.
    freeze: FreezeMode | None = None
    test_labels: np.ndarray | None = None  # the data's held-out test split, when it has one
    test_acts: Activations | None = None
    # The labels selection sees when they are not the ones the trial trains on: the llm_annotated
    # pool chooses with gold labels, as its `real` counterpart does, and trains on the LLM's.
    select_labels: np.ndarray | None = None
    task: Task | None = None  # what is learnt (tasks.py); None: classification into num_classes
    seeds: tuple[int, ...] = ()  # the sweep's seeds: qbc-seeds' committee is the other seeds' scoring models
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)  # llm_cleaned / llm_routed's settings

    def __post_init__(self):
        if self.task is None:
            self.task = Task("classify", self.num_classes)


@dataclass
class Chosen:
    """The rows a trial added, in the order its strategy picked them (what chosen/ records)."""

    rows: np.ndarray  # positions into train, pick order
    scores: np.ndarray  # the strategy's score of each pick when it ranked them; NaN for random / greedy picks
    steps: np.ndarray  # the acquisition step (0 .. rounds-1) each row was picked in

    @classmethod
    def empty(cls) -> Chosen:
        return cls(np.empty(0, dtype=np.int64), np.empty(0), np.empty(0, dtype=np.int64))


def choose_rows(cell: Cell, inputs: TrialInputs, recipe: RecipeConfig | None = None,
                selection: SelectionConfig | None = None, log=None) -> Chosen:
    """The rows this trial adds to `labeled`, in pick order, with their scores and steps.

    A model-based strategy ranks the pool by the model trained on `labeled` with this trial's
    freeze mode, recipe and seed (shared through `inputs.cache_dir` by every fraction and every
    strategy of a (freeze, seed)). With `selection.rounds` R > 1 it acquires in R steps, training
    again on everything acquired so far and re-scoring what is left after each step.
    """
    selection = selection or SelectionConfig()
    strategy = strategies.get(cell.strategy).configure(selection)
    pool = inputs.pool_rows
    n = rows_to_add(cell.fraction, len(inputs.labeled), len(pool))
    if n == len(pool):  # no choice to make: every strategy adds the whole pool, no scoring needed
        return Chosen(np.asarray(pool, dtype=np.int64), np.full(n, np.nan), np.zeros(n, dtype=np.int64))
    rng = np.random.default_rng([cell.seed, 1])  # the selection stream
    if not strategy.needs or n == 0:
        picked, scores = strategy.ranked(strategies.PoolView(size=len(pool)), n, rng)
        return Chosen(pool[picked], _or_nan(scores, len(picked)), np.zeros(len(picked), dtype=np.int64))
    if recipe is None:
        raise ValueError(f"strategy {cell.strategy!r} trains a model to score the pool: select_rows needs the recipe")
    acts = inputs.train_acts
    labels = inputs.train_labels if inputs.select_labels is None else inputs.select_labels
    chosen, scored, steps = [], [], []
    remaining = pool
    for i, step in enumerate(len(s) for s in np.array_split(np.arange(n), min(selection.rounds, n))):
        so_far = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
        rows = np.concatenate([inputs.labeled, np.sort(so_far)])  # the rows the trial itself would train on
        model = trained_model(acts, rows, labels[rows], inputs.num_classes, recipe, cell.seed, inputs.cache_dir,
                                      freeze=inputs.freeze, task=inputs.task)
        view = scoring.pool_view(strategy.needs, model, acts, remaining, rows, labels[rows], selection, cell.seed,
                                 cache_dir=inputs.cache_dir, log=log)
        if "pool_labels" in strategy.needs:  # the sweep-only oracle: hindsight on the pool, never val/test
            view.pool_labels = labels[remaining]
        if "committee_probs" in strategy.needs:
            view.committee_probs = _committee(inputs, rows, labels, remaining, recipe, selection, cell.seed, log)
        picked, scores = strategy.ranked(view, step, rng)
        chosen.append(remaining[picked])
        scored.append(_or_nan(scores, len(picked)))
        steps.append(np.full(len(picked), i, dtype=np.int64))
        remaining = np.delete(remaining, picked)
    return Chosen(np.concatenate(chosen), np.concatenate(scored), np.concatenate(steps))


def _committee(inputs: TrialInputs, rows: np.ndarray, labels: np.ndarray, remaining: np.ndarray,
               recipe: RecipeConfig, selection: SelectionConfig, seed: int, log=None) -> np.ndarray:
    """[M, pool, C]: the pool under the models the other seeds train on the same rows. At the
    first step these are the sweep's own scoring models (cached by the driver's scoring pass)."""
    others = [s for s in inputs.seeds if s != seed]
    if len(others) < 2:
        raise ValueError(f"qbc-seeds: its committee is the other seeds' scoring models, and this sweep has "
                         f"{len(inputs.seeds)} seed(s); it needs 3 or more")
    models = [trained_model(inputs.train_acts, rows, labels[rows], inputs.num_classes, recipe, other,
                            inputs.cache_dir, freeze=inputs.freeze, task=inputs.task) for other in others]
    return scoring.committee_probs(models, others, inputs.train_acts, remaining, rows, labels[rows], selection,
                                   inputs.cache_dir, log)


def _or_nan(scores: np.ndarray | None, n: int) -> np.ndarray:
    return np.full(n, np.nan) if scores is None else np.asarray(scores, dtype=np.float64)


def select_rows(cell: Cell, inputs: TrialInputs, recipe: RecipeConfig | None = None,
                selection: SelectionConfig | None = None, log=None) -> np.ndarray:
    """Positions into train of the rows this trial adds to `labeled`, sorted (see `choose_rows`).

    Sorted because the trained model should depend on which rows were added, not on the order
    a strategy ranked them in: every strategy that adds the whole pool then trains the same model.
    """
    return np.sort(choose_rows(cell, inputs, recipe, selection, log).rows)


def run_trials(cells: list[Cell], inputs: TrialInputs, recipe: RecipeConfig, selection: SelectionConfig | None = None,
               device: str = "cpu", bf16: bool = False) -> list[tuple[dict, Chosen, dict] | Exception]:
    """The trials of one pack, over the same inputs: each selects its rows, all train together
    (`model.trained_models`), each is evaluated. Per cell: (metrics, chosen rows, per-row
    predictions by evaluation split: predictions.SplitPredictions), or the
    exception that failed that cell alone (in its selection, its training, or a divergence).

    A trial on `labeled` alone finds its seed's scoring model in the cache (`inputs.cache_dir`),
    which is the same training, and records `cached_model`.
    """
    out: list = [None] * len(cells)
    picked: list[tuple[int, Chosen, pools.TrainRows, float]] = []  # (index, chosen, what it trains on, select_s)
    for i, cell in enumerate(cells):
        start = time.perf_counter()
        try:
            chosen = choose_rows(cell, inputs, recipe, selection)
            # The pool may change the chosen rows' labels or drop some (llm_cleaned, llm_routed).
            train = pools.get(cell.pool).train_rows(cell, inputs, chosen.rows, recipe)
        except Exception as exc:  # noqa: BLE001 - this cell's failure; the pack goes on
            out[i] = exc
            continue
        picked.append((i, chosen, train, time.perf_counter() - start))
    members = [Member(train.rows, train.labels, cells[i].seed, inputs.freeze, inputs.task)
               for i, _, train, _ in picked]
    trained = trained_models(inputs.train_acts, members, inputs.num_classes, recipe, inputs.cache_dir, device,
                             store=False, bf16=bf16, kind=None)
    for (i, chosen, train, select_s), member, result in zip(picked, members, trained):
        if result.error is not None:
            out[i] = result.failure()
            continue
        if not result.cached:
            log_training("trial", json.dumps(asdict(cells[i]), sort_keys=True))
        start = time.perf_counter()
        try:
            metrics, predicted = evaluate(result.model, inputs, train.rows, member.labels)
        except Exception as exc:  # noqa: BLE001
            out[i] = exc
            continue
        metrics.update(final_loss=float(result.final_loss), n_added=int(len(chosen.rows)),
                       pool_size=int(len(inputs.pool_rows)),  # says which cells share a training (grid)
                       select_s=round(select_s, 4), train_s=round(result.train_s, 4),
                       eval_s=round(time.perf_counter() - start, 4),
                       trial_s=round(select_s + result.train_s + time.perf_counter() - start, 4),
                       **train.fields)
        if result.cached:
            metrics["cached_model"] = True
        out[i] = (metrics, chosen, predicted)
    return out


def evaluate(model, inputs: TrialInputs, rows: np.ndarray, labels: np.ndarray) -> tuple[dict, dict]:
    """A trained model's metrics on val (and test), and on the rows it trained on; and its per-row
    predictions on val (and test), which the analysis resamples (predictions.py)."""
    task = inputs.task  # task: the metrics, and how the head's outputs become predictions
    val_out = predict_proba(model, inputs.val_acts)
    val_pred = task.point(val_out)
    train_pred = task.point(predict_proba(model, inputs.train_acts, rows))
    rows_out = {"val": _split_predictions(task, inputs.val_labels, val_pred, val_out)}
    test = {}
    if inputs.test_acts is not None:  # the same model on held-out rows nobody chose anything on
        test_out = predict_proba(model, inputs.test_acts)
        test_pred = task.point(test_out)
        test = {f"test_{k}": v for k, v in task.score(inputs.test_labels, test_pred).items()}
        rows_out["test"] = _split_predictions(task, inputs.test_labels, test_pred, test_out)
    return {
        **{f"val_{k}": v for k, v in task.score(inputs.val_labels, val_pred).items()},
        **test,
        f"train_{task.train_metric}": task.score(labels, train_pred, (task.train_metric,))[task.train_metric],
        "n_labeled": int(len(inputs.labeled)),
        "n_train": int(len(rows)),
        "trainable_params": count_trainable(model),
        # A regression has no confusion matrix: its record keeps the key, empty.
        "confusion": None if task.regression else confusion(inputs.val_labels, val_pred, inputs.num_classes).tolist(),
    }, rows_out


def _split_predictions(task, labels: np.ndarray, predicted: np.ndarray, outputs: np.ndarray) -> SplitPredictions:
    # Probabilities are cheap for a classifier (float16 on record); a regression's output is its prediction.
    return SplitPredictions(np.asarray(labels), np.asarray(predicted), None if task.regression else outputs)
