"""Read a results directory: trials, the resolved sweep config and the optional extras.

The layout is the contract the sweep, LLM and diagnostics code write to:

    RESULTS_DIR/trials.csv                    one row per trial (required for the learning curves)
    RESULTS_DIR/sweep.yaml                    the resolved sweep config
    RESULTS_DIR/generation/generated.csv      text, llm_label, teacher_label
    RESULTS_DIR/generation/generation.json    summary (agreement, teacher_val_accuracy, ...)
    RESULTS_DIR/generation/embeddings.npz     arrays `real`, `generated` (sentence vectors)
    RESULTS_DIR/generation/real_labels.csv    column `label`: the real pool's labels
    RESULTS_DIR/annotation/labels.csv         row, text, gold, llm_label: rows the LLM labeled
    RESULTS_DIR/annotation/annotation.json    its accuracy against gold, cost per labeled row, ...
    RESULTS_DIR/diagnostics/*.csv             freeze, seed, entropy, sqbc (one row per pool row);
                                              other CSVs there (correlation.csv) are ignored

Anything missing is `None` here, with the reason in `missing`, so the report can say why a
figure is absent instead of failing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from raysweep.errors import RaysweepError
from raysweep.loader import ConfigError, read_yaml_file

class ResultsError(RaysweepError, ValueError):
    """A results file that exists but cannot be read as the contract says; names the file."""


DIAGNOSTIC_COLUMNS = ("freeze", "seed", "entropy", "sqbc")
TRIAL_COLUMNS = ("cell_id", "pool", "strategy", "fraction", "freeze", "seed", "status")


@dataclass
class Results:
    """Everything read from one results directory."""

    dir: Path
    name: str  # the sweep's name (sweep.yaml `name`, else the directory name)
    config: dict | None = None
    trials: pd.DataFrame | None = None  # all trials, `status` ok or failed
    generated: pd.DataFrame | None = None
    generation: dict | None = None
    embeddings: dict[str, np.ndarray] | None = None
    real_labels: pd.Series | None = None
    diagnostics: pd.DataFrame | None = None
    annotated: pd.DataFrame | None = None  # annotation/labels.csv: row, text, gold, llm_label (llm_annotated)
    annotation: dict | None = None  # annotation/annotation.json: accuracy, cost, ...
    missing: dict[str, str] = field(default_factory=dict)  # input -> why it is absent

    @property
    def ok(self) -> pd.DataFrame:
        """Trials that finished."""
        if self.trials is None:
            return pd.DataFrame(columns=list(TRIAL_COLUMNS))
        return self.trials[self.trials["status"] == "ok"]

    @property
    def class_names(self) -> list[str] | None:
        names = ((self.config or {}).get("data") or {}).get("class_names")
        return [str(n) for n in names] if names else None


def read_trials(path: Path) -> pd.DataFrame:
    """trials.csv with its types fixed: numbers numeric, `status` lower-case, `error` a string."""
    df = pd.read_csv(path)
    absent = [c for c in TRIAL_COLUMNS if c not in df.columns]
    if not any(str(c).startswith("val_") for c in df.columns):  # a metric of some task: accuracy, pearson, ...
        absent.append("val_accuracy")
    if absent:
        raise ResultsError(f"{path}: missing column(s) {', '.join(absent)}")
    df["status"] = df["status"].astype(str).str.strip().str.lower()
    metrics = [c for c in df.columns if str(c).startswith(("val_", "test_", "train_")) and c != "train_s"]
    for col in ("fraction", *metrics, "n_labeled", "n_added", "n_train", "wall_s", "train_s"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    df["seed"] = pd.to_numeric(df["seed"], errors="raise").astype(int)
    if "error" in df.columns:
        df["error"] = df["error"].fillna("").astype(str)
    return df


def metrics_of(trials: pd.DataFrame) -> tuple[str, ...]:
    """The validation metrics of the task whose trials these are (tasks.Task.metrics), headline
    first: what a report compares, plots and ranks by, so no figure needs to know the task. Only
    the higher-is-better ones: a regression's MSE is in the cell table, not in the findings."""
    from raysweep.tasks import Task

    for name in ("pair-regress", "pair-classify", "classify"):  # the most specific metric set first
        metrics = tuple(f"val_{m}" for m in Task(name, 2).metrics if m != "mse")
        if all(m in trials.columns and trials[m].notna().any() for m in metrics):
            return metrics
    return ("val_accuracy", "val_macro_f1")


def load(results_dir: str | Path) -> Results:
    """Read one results directory; a missing optional input is recorded, not raised.

    A file that is there but unreadable (bad CSV, YAML, JSON or npz) is a ResultsError naming it.
    """
    try:
        return _load(Path(results_dir))
    except ResultsError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, yaml.YAMLError, json.JSONDecodeError,
            UnicodeDecodeError, KeyError, ValueError) as exc:
        raise ResultsError(f"{results_dir}: an input file cannot be read ({exc})") from exc


def _load(d: Path) -> Results:
    if not d.is_dir():
        raise ResultsError(f"{d}: not a directory")
    res = Results(dir=d, name=d.name)

    if (d / "sweep.yaml").is_file():
        # The one loader: a results directory is input like any other (it may come from elsewhere),
        # so the same size, binary and alias rules apply as to a sweep file.
        try:
            res.config = read_yaml_file(d / "sweep.yaml") or {}
        except ConfigError as exc:
            raise ResultsError(str(exc)) from None
        if not isinstance(res.config, dict):
            raise ResultsError(f"{d / 'sweep.yaml'}: the top level must be a mapping")
        res.name = str(res.config.get("name") or d.name)
    else:
        res.missing["sweep.yaml"] = f"no sweep.yaml in {d}"

    if (d / "trials.csv").is_file():
        res.trials = read_trials(d / "trials.csv")
        if len(res.trials) == 0:
            res.missing["trials.csv"] = f"{d / 'trials.csv'} has no rows"
    else:
        res.missing["trials.csv"] = f"no trials.csv in {d}"

    gen = d / "generation"
    if (gen / "generated.csv").is_file():
        res.generated = pd.read_csv(gen / "generated.csv")
        absent = [c for c in ("llm_label", "teacher_label") if c not in res.generated.columns]
        if absent:
            raise ResultsError(f"{gen / 'generated.csv'}: missing column(s) {', '.join(absent)}")
    else:
        res.missing["generated.csv"] = "no generation/generated.csv (the sweep has no LLM-generated pool)"
    if (gen / "generation.json").is_file():
        res.generation = json.loads((gen / "generation.json").read_text())
    else:
        res.missing["generation.json"] = "no generation/generation.json"
    if (gen / "embeddings.npz").is_file():
        with np.load(gen / "embeddings.npz") as npz:
            absent = [k for k in ("real", "generated") if k not in npz.files]
            if absent:
                raise ResultsError(f"{gen / 'embeddings.npz'}: missing array(s) {', '.join(absent)}")
            res.embeddings = {"real": npz["real"], "generated": npz["generated"]}
    else:
        res.missing["embeddings.npz"] = "no generation/embeddings.npz (no sentence vectors of real and generated rows)"
    if (gen / "real_labels.csv").is_file():
        res.real_labels = pd.read_csv(gen / "real_labels.csv")["label"]
    else:
        res.missing["real_labels.csv"] = "no generation/real_labels.csv (labels of the real pool)"

    ann = d / "annotation"
    if (ann / "labels.csv").is_file() and (ann / "annotation.json").is_file():
        res.annotated = pd.read_csv(ann / "labels.csv", keep_default_na=False)
        absent = [c for c in ("gold", "llm_label") if c not in res.annotated.columns]
        if absent:
            raise ResultsError(f"{ann / 'labels.csv'}: missing column(s) {', '.join(absent)}")
        res.annotation = json.loads((ann / "annotation.json").read_text())
    else:
        res.missing["annotation"] = "no annotation/labels.csv and annotation.json (the sweep has no llm_annotated pool)"

    # Per-row score files have these columns; others there (the sweep's correlation.csv) are summaries.
    files = sorted((d / "diagnostics").glob("*.csv")) if (d / "diagnostics").is_dir() else []
    parts = [part for part in map(pd.read_csv, files) if set(DIAGNOSTIC_COLUMNS) <= set(part.columns)]
    if parts:
        res.diagnostics = pd.concat(parts, ignore_index=True)
    else:
        res.missing["diagnostics"] = ("no diagnostics/*.csv with columns freeze, seed, entropy, sqbc "
                                      "(entropy and SQBC scores of the pool were not recorded)")
    return res


def load_many(results_dirs: list[str | Path]) -> list[Results]:
    """Read several results directories, giving each a distinct name."""
    results = [load(d) for d in results_dirs]
    names = [r.name for r in results]
    for r in results:
        if names.count(r.name) > 1:
            r.name = f"{r.name} ({r.dir.name})"
    names = [r.name for r in results]
    for i, r in enumerate(results):
        if names.count(r.name) > 1:
            r.name = f"{r.name} #{i + 1}"
    return results


def successful_trials(results_dirs: list[str | Path]) -> pd.DataFrame:
    """The successful trials of several results directories read as one (`combined_trials`);
    a ResultsError when there are none."""
    trials = combined_trials(load_many(results_dirs))
    ok = trials[trials["status"] == "ok"]
    if not len(ok):
        raise ResultsError(f"{', '.join(map(str, results_dirs))}: no successful trials")
    return ok


# Settings of a sweep that say how its cells ran, not what they were: sweeps that differ only in
# these (and in their grids) ran cells of one larger grid.
_NOT_FIXED = ("name", "description", "compare", "replicate", "resources", "cache_dir", "generation_dir", "costs")


def combined_trials(results: list[Results]) -> pd.DataFrame:
    """All trials of all results with a `sweep` column (the sweep's name).

    Sweeps that are parts of one grid (the same fixed settings, no cell in two of them, e.g. the
    added strategies run as a second sweep beside the study's) are one sweep here: `sweep` is the
    same for all, so a strategy of one is compared with `random` of the other. Otherwise `sweep`
    keeps them apart as a parameter of its own.
    """
    parts = [r.trials.assign(sweep=r.name) for r in results if r.trials is not None and len(r.trials)]
    if not parts:
        return pd.DataFrame(columns=["sweep", *TRIAL_COLUMNS])
    trials = pd.concat(parts, ignore_index=True)
    if len(parts) > 1 and _one_grid([r for r in results if r.trials is not None and len(r.trials)], trials):
        trials["sweep"] = " + ".join(r.name for r in results if r.trials is not None and len(r.trials))
    return trials


def _one_grid(results: list[Results], trials: pd.DataFrame) -> bool:
    if any(r.config is None for r in results):
        return False  # without the settings nothing says the trials are comparable
    fixed = [{k: v for k, v in r.config.items() if k not in _NOT_FIXED} for r in results]
    if any(f != fixed[0] for f in fixed[1:]):
        return False
    keys = [c for c in ("pool", "strategy", "fraction", "freeze", "seed", "encoder", "pooling", "rounds")
            if c in trials.columns]
    return not trials.duplicated(subset=keys).any()


def num_classes(results: list[Results]) -> int | None:
    """The classes of the sweeps' task (macro-F1 averages over all of them), when their configs say."""
    found = {((r.config or {}).get("data") or {}).get("num_classes") for r in results} - {None}
    return int(found.pop()) if len(found) == 1 else None


def real_labels(res: Results) -> tuple[pd.Series | None, str]:
    """The real labels for Figure 5 and where they came from (or None and why not).

    generation/real_labels.csv when the generator wrote it, else the train split of the sweep's
    data set (its sweep.yaml `data` section, read with `raysweep.data`).
    """
    if res.real_labels is not None:
        return res.real_labels, "generation/real_labels.csv"
    if res.config is None:
        return None, "no generation/real_labels.csv and no sweep.yaml naming the data set"
    try:
        from raysweep.config import DataConfig, from_dict
        from raysweep.data import load_dataset

        train, _, source = load_dataset(from_dict(DataConfig, res.config.get("data") or {}, "data"))
    except (ImportError, ValueError, OSError) as exc:  # ConfigError and DataError are ValueErrors
        return None, f"no generation/real_labels.csv, and the sweep's data set cannot be read ({exc})"
    return train["label"], f"{source}, train split"
