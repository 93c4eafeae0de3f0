"""One trial: select rows from a pool, train the unfrozen part, evaluate on val (and on test,
when the data has a test split).

A trial is (pool, strategy, fraction, freeze, seed) under a fixed recipe. It needs no Ray:
the sweep calls `run_trial` inside a Tune trainable, and tests call it directly.

Seeds: one seed drives three independent random streams (selection, initialisation + dropout,
batch order), so a trial is reproducible bit for bit on CPU with the same thread count.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from raysweep import scoring, strategies
from raysweep.backbone import Classifier, FullEncoderClassifier, count_trainable
from raysweep.config import LoraSpec, RecipeConfig, SelectionConfig
from raysweep.embed import Activations
from raysweep.tasks import Task, split_texts


@dataclass(frozen=True)
class Cell:
    """One point of the grid: the scientific parameters and the replicate seed."""

    pool: str
    strategy: str
    fraction: float
    freeze: str
    seed: int
    encoder: str = "minilm"  # compared only in sweeps that list several (sweeps/encoders.yaml)
    pooling: str = "pooler"

    @property
    def variant(self) -> str:
        """What the cached activations depend on: encoder, pooling and freeze mode."""
        return f"{self.encoder}|{self.pooling}|{self.freeze}"


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
    # A LoRA freeze mode's adapters: its activations are top-K's (same boundary, same entry), so
    # the activations alone cannot say that the top layers are adapted rather than trained.
    lora: LoraSpec | None = None
    test_labels: np.ndarray | None = None  # the data's held-out test split, when it has one
    test_acts: Activations | None = None
    task: Task | None = None  # what is learnt (tasks.py); None: classification into num_classes

    def __post_init__(self):
        if self.task is None:
            self.task = Task("classify", self.num_classes)


def rows_to_add(fraction: float, n_labeled: int, pool_size: int) -> int:
    """`fraction * |labeled|` rows, capped at the pool.

    With the study's 1 : 4 split, fraction 4 asks for slightly more rows than the pool has
    after rounding (4 x 1,709 = 6,836 > 6,835): it means "the whole pool", so it is capped
    and the trial records how many rows it really added.
    """
    # Capped before rounding: the same numbers, and a fraction of 1e308 (x |labeled| = inf) is the pool.
    return int(round(min(fraction * n_labeled, pool_size)))


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
    acts, labels = inputs.train_acts, inputs.train_labels
    chosen, scored, steps = [], [], []
    remaining = pool
    for i, step in enumerate(len(s) for s in np.array_split(np.arange(n), min(selection.rounds, n))):
        so_far = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
        rows = np.concatenate([inputs.labeled, np.sort(so_far)])  # the rows the trial itself would train on
        model = scoring.trained_model(acts, rows, labels[rows], inputs.num_classes, recipe, cell.seed, inputs.cache_dir,
                                      lora=inputs.lora, task=inputs.task)
        view = scoring.pool_view(strategy.needs, model, acts, remaining, rows, labels[rows], selection, cell.seed,
                                 cache_dir=inputs.cache_dir, log=log)
        picked, scores = strategy.ranked(view, step, rng)
        chosen.append(remaining[picked])
        scored.append(_or_nan(scores, len(picked)))
        steps.append(np.full(len(picked), i, dtype=np.int64))
        remaining = np.delete(remaining, picked)
    return Chosen(np.concatenate(chosen), np.concatenate(scored), np.concatenate(steps))


def _or_nan(scores: np.ndarray | None, n: int) -> np.ndarray:
    return np.full(n, np.nan) if scores is None else np.asarray(scores, dtype=np.float64)


def select_rows(cell: Cell, inputs: TrialInputs, recipe: RecipeConfig | None = None,
                selection: SelectionConfig | None = None, log=None) -> np.ndarray:
    """Positions into train of the rows this trial adds to `labeled`, sorted (see `choose_rows`).

    Sorted because the trained model should depend on which rows were added, not on the order
    a strategy ranked them in: every strategy that adds the whole pool then trains the same model.
    """
    return np.sort(choose_rows(cell, inputs, recipe, selection, log).rows)


def _batches(n: int, batch_size: int, generator: torch.Generator, lengths: np.ndarray | None = None):
    """Shuffled minibatches of positions 0..n-1.

    With `lengths` (token-level training), rows are grouped by length the way Hugging Face's
    `group_by_length` does: shuffle, sort within windows of 50 batches, shuffle the batches.
    Padding then costs little, which halves an epoch of last-attention on SST's short sentences.
    """
    order = torch.randperm(n, generator=generator)
    if lengths is None:
        batches = [order[s: s + batch_size] for s in range(0, n, batch_size)]
        yield from batches
        return
    window = batch_size * 50
    batches = []
    for s in range(0, n, window):
        chunk = order[s: s + window]
        chunk = chunk[np.argsort(-lengths[chunk.numpy()], kind="stable")]
        batches.extend(chunk[b: b + batch_size] for b in range(0, len(chunk), batch_size))
    for i in torch.randperm(len(batches), generator=generator).tolist():
        yield batches[i]


# Names a file every process of a run can append to (on one machine, or a shared filesystem):
# each model actually trained appends one JSON line there. The per-node-disk tests read it to
# prove that nothing is trained twice and to see on which node each model was trained.
TRAINING_LOG_ENV = "RAYSWEEP_TRAINING_LOG"


def log_training(kind: str, key: str) -> None:
    """Append {kind, key, host, pid, node} to $RAYSWEEP_TRAINING_LOG, if it is set."""
    path = os.environ.get(TRAINING_LOG_ENV)
    if not path:
        return
    node = None
    if "ray" in sys.modules:  # never import Ray just for this: trials and tests may run without it
        ray = sys.modules["ray"]
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    line = json.dumps({"kind": kind, "key": key, "host": socket.gethostname(), "pid": os.getpid(), "node": node})
    with open(path, "a", encoding="utf-8") as f:  # one short O_APPEND write: lines of processes do not mix
        f.write(line + "\n")


def fit(model: Classifier, acts: Activations, rows: np.ndarray, labels: np.ndarray, recipe: RecipeConfig,
        seed: int) -> float:
    """Train `model` on `rows` of cached `acts` with the recipe; returns the last epoch's mean loss."""
    if not acts.boundary.ragged:
        # Pooled features fit in memory: index one tensor instead of gathering from the mmap per batch.
        x_all = acts.dense(rows)
        return _optimise(model, lambda idx: model(x_all[idx]), len(rows), labels, recipe, seed)

    def forward(idx):
        x, mask = acts.batch(rows[idx.numpy()])
        return model(x, mask)

    return _optimise(model, forward, len(rows), labels, recipe, seed, lengths=acts.lengths(rows))


def fit_uncached(model: FullEncoderClassifier, texts: list[str], labels: np.ndarray, recipe: RecipeConfig,
                 seed: int) -> float:
    """The same training, running the frozen encoder on every step (no activation cache).

    Token-level modes group batches by token count exactly as the cached path does, so both
    paths see the same batches and reach the same weights.
    """
    lengths = None
    if model.classifier.boundary.ragged:
        enc = model.backbone.tokenizer(*split_texts(list(texts)), truncation=True,
                                       max_length=model.classifier.boundary.max_length)
        lengths = np.array([len(ids) for ids in enc["input_ids"]])
    return _optimise(model.classifier, lambda idx: model([texts[i] for i in idx.tolist()]), len(texts), labels,
                     recipe, seed, lengths=lengths)


def _optimise(model: Classifier, forward, n: int, labels: np.ndarray, recipe: RecipeConfig, seed: int,
              lengths: np.ndarray | None = None) -> float:
    """The study's recipe over `n` rows; `forward(positions)` returns the head's outputs of a batch."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=recipe.lr, betas=tuple(recipe.betas), weight_decay=recipe.weight_decay)
    # StepLR counts epochs: the study halves the learning rate every 20 of its 50 epochs.
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)
    task = getattr(model, "task", None) or Task("classify", model.linear.out_features)  # task: set by build_model
    loss_fn = task.loss()  # task: cross-entropy over classes, or MSE of a score
    y = task.targets(labels)  # task: int64 classes or float32 [N, 1] scores
    task.start(model.linear, labels)  # task: a regression head starts at the mean score
    order_gen = torch.Generator().manual_seed(seed * 1_000_003 + 2)  # the batch-order stream
    model.train()
    last = 0.0
    for _ in range(recipe.epochs):
        total, count = 0.0, 0
        for idx in _batches(n, recipe.batch_size, order_gen, lengths):
            loss = loss_fn(forward(idx), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            count += len(idx)
        scheduler.step()
        last = total / max(count, 1)
    return last


@torch.no_grad()
def predict_proba(model: Classifier, acts: Activations, rows: np.ndarray | None = None,
                  batch_size: int = 256) -> np.ndarray:
    """Class probabilities (softmax of the head) for `rows` of `acts` (all rows by default);
    a regression head's predicted scores [N, 1] (`Task.predict`)."""
    model.eval()
    rows = np.arange(len(acts)) if rows is None else np.asarray(rows)
    task = getattr(model, "task", None) or Task("classify", model.linear.out_features)  # task: set by build_model
    out = []
    for start in range(0, len(rows), batch_size):
        x, mask = acts.batch(rows[start: start + batch_size])
        out.append(task.predict(model(x, mask)))  # task: softmax, or the score as it is
    return torch.cat(out).numpy() if out else np.zeros((0, model.linear.out_features), dtype=np.float32)


def build_model(acts: Activations, num_classes: int, recipe: RecipeConfig, seed: int,
                lora: LoraSpec | None = None, task: Task | None = None) -> Classifier:
    torch.manual_seed(seed)  # the initialisation + dropout stream
    init = acts.init_modules()
    task = task or Task("classify", num_classes)  # task: the head's output size and loss come from it
    model = Classifier(acts.boundary, acts.hidden_size, task.outputs, recipe.dropout,
                       top=init["top"], dense=init["dense"], lora=lora)
    model.task = task  # task: read by _optimise, predict_proba and scoring
    return model


def run_trial(cell: Cell, inputs: TrialInputs, recipe: RecipeConfig, selection: SelectionConfig | None = None) -> dict:
    """Select, train, evaluate. Returns the metrics of one row of trials.csv."""
    return run_trial_rows(cell, inputs, recipe, selection)[0]


def run_trial_rows(cell: Cell, inputs: TrialInputs, recipe: RecipeConfig,
                   selection: SelectionConfig | None = None) -> tuple[dict, Chosen]:
    """`run_trial`, also returning the rows it added in pick order (the sweep records them)."""
    start = time.perf_counter()
    chosen = choose_rows(cell, inputs, recipe, selection)
    added = np.sort(chosen.rows)
    select_s = time.perf_counter() - start
    rows = np.concatenate([inputs.labeled, added])
    labels = inputs.train_labels[rows]
    model = build_model(inputs.train_acts, inputs.num_classes, recipe, cell.seed, lora=inputs.lora, task=inputs.task)
    t0 = time.perf_counter()
    final_loss = fit(model, inputs.train_acts, rows, labels, recipe, cell.seed)
    log_training("trial", json.dumps(asdict(cell), sort_keys=True))
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    task = inputs.task  # task: the metrics, and how the head's outputs become predictions
    val_pred = task.point(predict_proba(model, inputs.val_acts))
    train_pred = task.point(predict_proba(model, inputs.train_acts, rows))
    test = {}
    if inputs.test_acts is not None:  # the same model on held-out rows nobody chose anything on
        test_pred = task.point(predict_proba(model, inputs.test_acts))
        test = {f"test_{k}": v for k, v in task.score(inputs.test_labels, test_pred).items()}
    eval_s = time.perf_counter() - t1
    # A regression has no confusion matrix: its record keeps the key, empty.
    confusion = (None if task.regression else
                 confusion_matrix(inputs.val_labels, val_pred, labels=list(range(inputs.num_classes))).tolist())
    return {
        **{f"val_{k}": v for k, v in task.score(inputs.val_labels, val_pred).items()},
        **test,
        f"train_{task.train_metric}": task.score(labels, train_pred, (task.train_metric,))[task.train_metric],
        "final_loss": float(final_loss),
        "n_labeled": int(len(inputs.labeled)),
        "n_added": int(len(added)),
        "n_train": int(len(rows)),
        "trainable_params": count_trainable(model),
        "confusion": confusion,
        "select_s": round(select_s, 4),
        "train_s": round(train_s, 4),
        "eval_s": round(eval_s, 4),
        "trial_s": round(time.perf_counter() - start, 4),
    }, chosen
