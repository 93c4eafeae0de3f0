"""What a sweep learns: one sentence or a sentence pair, a class or a score.

The study's multitask baseline has three heads: sentiment (one sentence, 5 classes), paraphrase
(a question pair, duplicate or not) and similarity (a sentence pair, a score from 0 to 5). Everything
that differs between them lives here, so that training, scoring, strategies and the report ask the
task instead of testing for it: the head's output size, the loss, how outputs become predictions,
the metrics, how a stratified split bins the target, and which strategies apply.

A pair travels through the pipeline as ONE string, its two texts joined by U+001F (the ASCII
"unit separator", made for this): the activation cache and its keys, Ray Data blocks and the
chosen-rows tables carry it unchanged, and only the tokenizer splits it again, to encode the pair
with its own pair handling (`[CLS] a [SEP] b [SEP]`, segment ids where the model has them).
Single sentences never contain the separator (data.py refuses it), so their cache keys are
what they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where a model trains: config validation and the report need none of it
    import torch
    from torch import nn

PAIR_SEP = "\x1f"
TASKS = ("classify", "pair-classify", "regress", "pair-regress")
STRATA_BINS = 5  # a stratified split of a score keeps its quintiles' shares, as it keeps classes'


def join_pair(a: str, b: str) -> str:
    return f"{a}{PAIR_SEP}{b}"


def split_texts(texts: list[str]) -> tuple[list[str], list[str] | None]:
    """(first texts, second texts or None): what the tokenizer is called with.

    All pairs or no pair: a batch that mixes them is a bug upstream, not something to guess at."""
    parts = [t.split(PAIR_SEP, 1) for t in texts]
    pairs = [len(p) == 2 for p in parts]
    if not any(pairs):
        return list(texts), None
    if not all(pairs):
        raise ValueError("a batch mixes sentence pairs and single sentences")
    return [p[0] for p in parts], [p[1] for p in parts]


def shown(text: str) -> str:
    """A pair as a person reads it (tables, the report); a single sentence unchanged."""
    return text.replace(PAIR_SEP, " ||| ")


@dataclass(frozen=True)
class Task:
    """One kind of supervised target over one sentence or a pair."""

    name: str = "classify"
    num_classes: int = 5  # classification only; a regression head has one output

    def __post_init__(self):
        if self.name not in TASKS:
            raise ValueError(f"task {self.name!r} is not one of {', '.join(TASKS)}")

    @property
    def pairs(self) -> bool:
        return self.name.startswith("pair-")

    @property
    def regression(self) -> bool:
        return self.name.endswith("regress")

    @property
    def target(self) -> str:
        """What a strategy must be able to rank by: `class` or `score` (see Strategy.targets)."""
        return "score" if self.regression else "class"

    @property
    def outputs(self) -> int:
        """The head's output size."""
        return 1 if self.regression else self.num_classes

    # ------------------------------------------------------------------ training

    def loss(self) -> nn.Module:
        from torch import nn

        # MSE on the raw score: STS's 0..5 scale is small, and MSE is what the study's head used.
        return nn.MSELoss() if self.regression else nn.CrossEntropyLoss()

    def targets(self, labels: np.ndarray) -> torch.Tensor:
        """The loss's targets for `labels` (a copy: labels may be a read-only view)."""
        import torch

        if self.regression:
            return torch.from_numpy(np.array(labels, dtype=np.float32)).unsqueeze(1)
        return torch.from_numpy(np.array(labels, dtype=np.int64))

    def start(self, head: nn.Linear, labels: np.ndarray) -> None:
        """Set a regression head's bias to the mean score of its training rows before training.

        Adam moves a weight about `lr` per step, so with the study's lr 1e-3 a bias starting near 0
        needs ~2,600 steps just to reach STS's mean score of 2.6, more than a 20-epoch last-linear
        trial on 1,208 pairs takes: measured there, val Pearson -0.02 from a zero-mean start,
        0.27 from the mean (docs/measurements.md). A classifier's head is left as built.
        """
        if self.regression and len(labels):
            import torch

            with torch.no_grad():
                head.bias.fill_(float(np.mean(np.asarray(labels, dtype=np.float64))))

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """The head's outputs as what scoring stores: class probabilities [N, C], or the score [N, 1]."""
        import torch

        return outputs if self.regression else torch.softmax(outputs, dim=-1)

    def point(self, predicted: np.ndarray) -> np.ndarray:
        """`predict`'s output as one prediction per row: the class, or the score."""
        return predicted[:, 0] if self.regression else predicted.argmax(1)

    # ------------------------------------------------------------------ results

    @property
    def metrics(self) -> tuple[str, ...]:
        """The validation metrics of trials.csv (without `val_`); the first is the headline one,
        the one a report plots and ranks by. Every one but `mse` is higher-is-better."""
        if self.regression:
            return ("pearson", "spearman", "mse")
        return ("accuracy", "macro_f1", "positive_f1") if self.pairs else ("accuracy", "macro_f1")

    @property
    def train_metric(self) -> str:
        """What the trial reports on its own training rows (the over-fitting gap)."""
        return "mse" if self.regression else "accuracy"

    def score(self, truth: np.ndarray, pred: np.ndarray, names: tuple[str, ...] | None = None) -> dict[str, float]:
        """{metric: value} of point predictions `pred` against `truth`."""
        from raysweep.metrics import confusion, macro_f1

        out = {}
        for name in names or self.metrics:
            if name == "accuracy":
                out[name] = float((pred == truth).mean())
            elif name == "macro_f1":
                out[name] = macro_f1(truth, pred, self.num_classes)
            elif name == "positive_f1":  # paraphrase detection's F1: of class 1, "duplicate"
                m = confusion(truth, pred, 2)  # F1 = 2 TP / (2 TP + FP + FN), 0 when nothing is positive
                both = m[1, :].sum() + m[:, 1].sum()
                out[name] = float(2 * m[1, 1] / both) if both else 0.0
            elif name == "mse":
                out[name] = float(np.mean((np.asarray(pred, np.float64) - np.asarray(truth, np.float64)) ** 2))
            elif name in ("pearson", "spearman"):
                # A constant prediction (a head that learned nothing) has no correlation: NaN, no warning.
                if np.std(pred) == 0 or np.std(truth) == 0:
                    out[name] = float("nan")
                else:
                    from scipy import stats  # regression only: the classifiers' trials never import it

                    fn = stats.pearsonr if name == "pearson" else stats.spearmanr
                    out[name] = float(fn(pred, truth)[0])
            else:
                raise ValueError(f"{self.name}: no metric {name!r}")
        return out

    def strata(self, labels: np.ndarray) -> np.ndarray:
        """The groups a stratified split keeps in proportion: the classes, or the score's quintiles."""
        labels = np.asarray(labels)
        if not self.regression:
            return labels
        edges = np.quantile(labels.astype(np.float64), np.linspace(0, 1, STRATA_BINS + 1)[1:-1])
        return np.searchsorted(edges, labels, side="right")

    def describe(self) -> str:
        what = "score regression" if self.regression else f"{self.num_classes}-class classification"
        return f"{'sentence-pair' if self.pairs else 'single-sentence'} {what}"


CLASSIFY = Task()  # the study's SST-5 task: what code that is not told a task assumes
