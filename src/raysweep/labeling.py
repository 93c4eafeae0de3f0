"""`raysweep select`: the next batch to label, on a user's own data, round after round.

A sweep shows which strategy works; this applies it. A project directory holds the user's
rows and every round of the loop:

    project.yaml          optional: classes, file names, encoder, freeze, strategy, batch (ProjectConfig)
    labeled.csv           rows labeled so far outside raysweep: id (optional), text, label (a class name);
                          optional: without it the first round starts cold
    unlabeled.csv         the pool: id (optional), text; any other column is ignored
    rounds/round-001/     one directory per round, never rewritten once its labels are back:
        to_label.csv      the batch: id, text, rank, score, predicted, p_<class> per class
        to_label.jsonl    the same rows as JSON lines (probabilities as a mapping)
        labelstudio/tasks.json   Label Studio import: the model's label as a pre-annotation
        labelstudio/config.xml   the labeling config those pre-annotations attach to
        round.json        what the round did: rows labeled, strategy, cross-validated accuracy, timings
        head.pt           the trained head (state, classes, encoder, freeze)
        labels.csv        the labels that came back for this batch (id, label), once they have
        skipped.csv       ids returned without a label (skipped in Label Studio): never offered again
    cache/                the encoder's activations of every row (one encoder pass, reused each round)
    logs/                 each round's full output (the CLI's console session)

Any format `data.read_table` reads (.csv, .tsv, .parquet, .jsonl) works for both files. Rows
without an id column get the id `<file stem>-<row number>`. The labeled rows are the labeled file
plus every round's labels.csv; a row exported in a batch and not yet returned is not offered again.
`--undo` takes the last round's labels back (or drops a batch that has none yet), keeping the files.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from raysweep import labelstudio, poolscan, scoring, stopping, strategies
from raysweep import model as modeling
from raysweep.backbone import boundary_for, load_backbone
from raysweep.config import (ConfigError, EncoderConfig, RecipeConfig, SelectionConfig, apply_overrides, from_dict,
                             load_config, parse_freeze, to_dict)
from raysweep.data import DataError, read_table
from raysweep.embed import RAY_MIN_ENCODE_ROWS, activation_key, ensure_activation_sets, load_activations
from raysweep.runtime import ray_running
from raysweep.strategies.clusters import typiclust_picks
from raysweep.strategies.diversity import k_center_greedy

PROJECT_FILE = "project.yaml"
FROM_REPORT = "from-report"  # `strategy:` value: take it from a report (analysis/advice.py)
ROUNDS = "rounds"
COLD_STARTS = ("kcenter", "typiclust", "random")
COMMITTEE = 4  # qbc-seeds in select: models of seeds seed+1..seed+4 (4 more trainings; as in a sweep the
# round's own model is no member)
COLD_START_WORDS = {"kcenter": "k-center on the encoder vectors", "typiclust": "TypiClust on the encoder vectors",
                    "random": "random sampling"}


@dataclass
class LabelStudioConfig:
    """`label_studio:` in project.yaml: the live project `select` imports into and pulls from (studio.py)."""

    url: str = ""  # e.g. http://localhost:8080; `--label-studio URL` overrides; empty: files only
    title: str = ""  # the Label Studio project's title; empty: "raysweep <project directory name>"
    token_env: str = "LABEL_STUDIO_API_KEY"  # the variable holding the token (never the token itself)


@dataclass
class ProjectConfig:
    """`project.yaml` (every key optional; `--set key=value` overrides any)."""

    # Label names, in the order the labeler sees them (an ordinal scale keeps its order); empty:
    # the labeled file's labels in order of first appearance, never the alphabet's.
    classes: list[str] = field(default_factory=list)
    labeled: str = "labeled.csv"  # relative to the project directory; absent: start cold
    unlabeled: str = "unlabeled.csv"
    id_column: str = "id"  # kept when the file has it, else made from the row number
    text_column: str = "text"
    label_column: str = "label"
    # `raysweep strategies` lists them; `from-report`: the best that survives in `report` (else random)
    strategy: str = "random"
    report: str | None = None  # with strategy: from-report, a `raysweep analyze` output (relative to the project)
    batch: int = 50  # rows to label per round
    freeze: str = "pooler"  # pooled modes (last-linear, pooler): 100,000+ rows in bounded memory (poolscan.py)
    diverse: bool = False  # no near-duplicates among the batch (see `similarity`)
    similarity: float = 0.95  # with `diverse`: a row this cosine-similar to a row already in the batch is passed over
    # no labeled rows yet: kcenter (cover the encoder's vector space), typiclust (its typical rows) or random
    cold_start: str = "kcenter"
    cv_folds: int = 5  # folds of the accuracy estimate on the labeled rows (fewer when a class has fewer rows)
    budget: int = 0  # total rows you mean to label (labeled file included); 0: no budget. None left: "stop"
    seed: int = 0
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    label_studio: LabelStudioConfig = field(default_factory=LabelStudioConfig)

    def validate(self) -> None:
        problems = [(self.batch < 1, "batch: must be at least 1"),
                    (not 0 < self.similarity <= 1, "similarity: must be in (0, 1]"),
                    (self.cold_start not in COLD_STARTS,
                     f"cold_start: {self.cold_start!r} is not one of {', '.join(COLD_STARTS)}"),
                    (self.cv_folds < 2, "cv_folds: must be at least 2"),
                    (self.budget < 0, "budget: must be 0 (none) or a number of rows"),
                    (len(set(self.classes)) != len(self.classes), "classes: has a repeated name")]
        for bad, message in problems:
            if bad:
                raise ConfigError(message)
        try:
            parse_freeze(self.freeze)
        except ConfigError as exc:
            raise ConfigError(f"freeze: {exc}") from None
        if self.strategy == FROM_REPORT and not self.report:
            raise ConfigError(f"strategy: {FROM_REPORT} needs `report:` (a `raysweep analyze` output directory)")
        if self.strategy not in strategies.REGISTRY and self.strategy != FROM_REPORT:
            raise ConfigError(f"strategy: unknown strategy {self.strategy!r} "
                              f"(known: {', '.join(sorted(strategies.REGISTRY))}, or {FROM_REPORT})")
        if self.strategy != FROM_REPORT and strategies.get(self.strategy).sweep_only:
            raise ConfigError(f"strategy: {self.strategy!r} reads the pool's gold labels, which select never has: "
                              "a sweep's hindsight reference only")


def load_project_config(project_dir: Path, overrides: list[str] | tuple[str, ...] = (),
                        sweep_file: str | None = None) -> ProjectConfig:
    """project.yaml (if any), then the encoder / recipe / selection / freeze / strategy of a sweep
    file (if named; it must compare one strategy and one freeze mode, or the project names them),
    then `--set` overrides."""
    path = project_dir / PROJECT_FILE
    cfg = load_config(ProjectConfig, path) if path.exists() else ProjectConfig()
    data = to_dict(cfg)
    if sweep_file:
        from raysweep.config import load_sweep

        sweep = load_sweep(sweep_file)
        data.update(encoder=to_dict(sweep.encoder), recipe=to_dict(sweep.recipe), selection=to_dict(sweep.selection))
        for key in ("strategy", "freeze"):
            values = getattr(sweep.compare, key)
            if len(values) == 1:
                data[key] = values[0]
    data = apply_overrides(data, list(overrides))
    try:
        return from_dict(ProjectConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{path if path.exists() else 'project'}: {exc}") from None


def strategy_from_results(results_dir: str | Path, freeze: str) -> tuple[str, str]:
    """(strategy, caveat) from a finished sweep's trials.csv: the strategy with the highest mean
    validation accuracy over its cells that added rows (fraction > 0, the project's freeze mode
    when the sweep has it). The caveat says what the choice rests on, to be printed with it."""
    from raysweep.analysis.results import read_trials

    path = Path(results_dir) / "trials.csv"
    if not path.exists():
        raise DataError(f"{path}: no such file (name a finished sweep's results directory)")
    ok = read_trials(path)
    ok = ok[(ok["status"] == "ok") & (ok["fraction"] > 0) & (ok["pool"] == "real")]
    # a hindsight reference (the oracle) reads gold labels of the pool: never a strategy to apply
    ok = ok[~ok["strategy"].map(lambda s: s in strategies.REGISTRY and strategies.get(s).sweep_only)]
    if freeze in set(ok["freeze"]):
        ok = ok[ok["freeze"] == freeze]
    if ok["strategy"].nunique() < 2:
        raise DataError(f"{path}: compares fewer than 2 strategies on the real pool; nothing to choose from")
    means = ok.groupby("strategy")["val_accuracy"].mean().sort_values(ascending=False)
    best = str(means.index[0])
    seeds = ok.loc[ok["strategy"] == best, "seed"].nunique()
    versus = (f"{100 * (means[best] - means['random']):+.1f} points over random"
              if "random" in means.index and best != "random" else f"runner-up {means.index[1]} at "
              f"{100 * means.iloc[1]:.1f}%")
    caveat = (f"strategy {best} from {path}: mean validation accuracy {100 * means[best]:.1f}% ({versus}) over "
              f"{seeds} seed(s) and freeze mode(s) {', '.join(sorted(set(ok['freeze'])))}, on that sweep's data. "
              "A mean difference is not a significant one (see its report's paired intervals), and a strategy "
              "that wins on one data set need not win on yours.")
    return best, caveat


# --------------------------------------------------------------------------- the project's rows


@dataclass
class Project:
    """Every row of the project, labeled file first, and what the rounds so far did with them."""

    dir: Path
    cfg: ProjectConfig
    classes: list[str]
    ids: np.ndarray  # str, unique across both files
    texts: list[str]
    labels: np.ndarray  # class index per row; -1: not labeled
    offered: np.ndarray  # bool: in some round's batch (labeled, skipped or still out)
    rounds: list[Path]  # rounds/round-NNN, in order

    @property
    def open_round(self) -> Path | None:
        """The last round if its labels have not come back yet."""
        if self.rounds and not (self.rounds[-1] / "labels.csv").exists():
            return self.rounds[-1]
        return None


def _rows(path: Path, cfg: ProjectConfig, need_label: bool) -> pd.DataFrame:
    """A user file as columns id, text (and label), with one-line errors naming file and row."""
    df = read_table(path)
    offset = 1 if path.suffix.lower() in (".jsonl", ".ndjson") else 2
    if cfg.text_column not in df.columns:
        raise DataError(f"{path}: missing column {cfg.text_column!r} (columns: {', '.join(map(str, df.columns))})")
    if need_label and cfg.label_column not in df.columns:
        raise DataError(f"{path}: missing column {cfg.label_column!r} (columns: {', '.join(map(str, df.columns))})")
    if cfg.id_column in df.columns:
        ids = df[cfg.id_column].astype(str).str.strip()
    else:  # made from the row number the user sees, and the file, so two files never collide
        ids = pd.Series([f"{path.stem}-{i + offset}" for i in range(len(df))])
    out = pd.DataFrame({"id": ids.to_numpy(), "text": df[cfg.text_column].to_numpy()})
    for i, (row_id, text) in enumerate(zip(out["id"], out["text"])):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}: row {i + offset}: empty text in column {cfg.text_column!r}")
        if not row_id or row_id == "nan":
            raise DataError(f"{path}: row {i + offset}: empty id in column {cfg.id_column!r}")
    dup = out["id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{path}: row {i + offset}: id {out['id'].iloc[i]!r} appears twice")
    out["text"] = out["text"].str.strip()
    if need_label:
        out["label"] = df[cfg.label_column].astype(str).str.strip().to_numpy()
    out["line"] = np.arange(len(out)) + offset
    return out


def load_project(project_dir: str | Path, cfg: ProjectConfig) -> Project:
    """Read the project's files and rounds, checking them before any work."""
    project_dir = Path(project_dir)
    unlabeled_path = project_dir / cfg.unlabeled
    if not unlabeled_path.exists():
        raise DataError(f"{unlabeled_path}: no such file (the unlabeled rows, `unlabeled:` in {PROJECT_FILE})")
    pool = _rows(unlabeled_path, cfg, need_label=False)
    labeled_path = project_dir / cfg.labeled
    seed = _rows(labeled_path, cfg, need_label=True) if labeled_path.exists() else pd.DataFrame(
        columns=["id", "text", "label", "line"])
    classes = list(cfg.classes) or list(dict.fromkeys(seed["label"]))
    if not classes:
        raise ConfigError(f"{project_dir}: nothing is labeled yet, so `classes:` must name the labels "
                          f"(in {PROJECT_FILE} or --set 'classes=[a, b]')")
    if len(classes) < 2:
        raise ConfigError(f"classes: needs at least 2 (got {classes})")
    index = {c: i for i, c in enumerate(classes)}
    for row in seed.itertuples():
        if row.label not in index:
            raise DataError(f"{labeled_path}: row {row.line}: label {row.label!r} is not one of the classes "
                            f"({', '.join(classes)})")
    both = set(seed["id"]) & set(pool["id"])
    if both:
        first = sorted(both)[0]
        raise DataError(f"{unlabeled_path}: id {first!r} is also in {labeled_path.name} ({len(both)} such ids)")
    ids = np.concatenate([seed["id"].to_numpy(dtype=str), pool["id"].to_numpy(dtype=str)])
    labels = np.concatenate([np.array([index[x] for x in seed["label"]], dtype=np.int64),
                             np.full(len(pool), -1, dtype=np.int64)])
    rounds = sorted(p for p in (project_dir / ROUNDS).glob("round-*") if p.is_dir())
    project = Project(project_dir, cfg, classes, ids, list(seed["text"]) + list(pool["text"]), labels,
                      np.zeros(len(ids), dtype=bool), rounds)
    position = {row_id: i for i, row_id in enumerate(ids)}
    for r in rounds:  # what earlier rounds exported, and the labels that came back
        batch = pd.read_csv(r / "to_label.csv", dtype=str, keep_default_na=False)
        project.offered[[position[i] for i in batch["id"] if i in position]] = True
        if (r / "labels.csv").exists():
            back = pd.read_csv(r / "labels.csv", dtype=str, keep_default_na=False)
            for row_id, label in zip(back["id"], back["label"]):
                if row_id not in position or label not in index:
                    raise DataError(f"{r / 'labels.csv'}: id {row_id!r} / label {label!r} no longer match the "
                                    f"project's files and classes")
                project.labels[position[row_id]] = index[label]
    return project


# --------------------------------------------------------------------------- labels coming back


def read_returned(path: str | Path, project: Project) -> tuple[pd.DataFrame, list[str]]:
    """The labels of the open round's batch from `path`, checked: (id, label) rows and skipped ids.

    `path` is a CSV / JSONL / Parquet with id and label columns (an empty label: skipped), or a
    Label Studio JSON / JSON-MIN export. Each problem is one line naming the row: an id the
    project does not have, an id not in this batch, a label outside the classes, a row labeled twice.
    """
    path = Path(path)
    batch_dir = project.open_round
    if batch_dir is None:
        raise DataError(f"{path}: no batch is waiting for labels in {project.dir / ROUNDS} "
                        "(run `raysweep select --project DIR` first, or --undo the last round's labels)")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if labelstudio.is_export(path):
        labeled, skipped = labelstudio.read_export(path)
        where = "task"
    else:
        df = read_table(path)
        offset = 1 if path.suffix.lower() in (".jsonl", ".ndjson") else 2
        for col in ("id", project.cfg.label_column):
            if col not in df.columns:
                raise DataError(f"{path}: missing column {col!r} (columns: {', '.join(map(str, df.columns))})")
        labeled, skipped = [], []
        for i, (row_id, label) in enumerate(zip(df["id"], df[project.cfg.label_column])):
            text = "" if label is None or (isinstance(label, float) and np.isnan(label)) else str(label).strip()
            (labeled.append((i + offset, str(row_id).strip(), text)) if text else skipped.append(str(row_id).strip()))
        where = "row"
    batch = set(pd.read_csv(batch_dir / "to_label.csv", dtype=str, keep_default_na=False)["id"])
    known = set(project.ids.tolist())
    seen: dict[str, int] = {}
    for n, row_id, label in labeled:
        if row_id not in known:
            raise DataError(f"{path}: {where} {n}: unknown id {row_id!r} (not in the project's files)")
        if row_id not in batch:
            raise DataError(f"{path}: {where} {n}: id {row_id!r} was not in {batch_dir.name}'s batch")
        if label not in project.classes:
            raise DataError(f"{path}: {where} {n}: label {label!r} is not one of the classes "
                            f"({', '.join(project.classes)})")
        if row_id in seen:
            raise DataError(f"{path}: {where} {n}: id {row_id!r} is labeled twice ({where} {seen[row_id]} too)")
        seen[row_id] = n
    for row_id in skipped:
        if row_id not in batch:
            raise DataError(f"{path}: skipped id {row_id!r} was not in {batch_dir.name}'s batch")
    skipped = [i for i in dict.fromkeys(skipped) if i not in seen]
    return pd.DataFrame([(i, lab) for _, i, lab in labeled], columns=["id", "label"]), skipped


def merge_labels(path: str | Path, project: Project, log=print) -> Path:
    """Write the checked labels as the open round's labels.csv (and skipped.csv); the round closes."""
    back, skipped = read_returned(path, project)
    return close_round(project, back, skipped, log)


def close_round(project: Project, back: pd.DataFrame, skipped: list[str], log=print) -> Path:
    """Write checked (id, label) rows and skipped ids as the open round's labels.csv / skipped.csv."""
    batch_dir = project.open_round
    back.to_csv(batch_dir / "labels.csv.tmp", index=False)
    pd.DataFrame({"id": skipped}).to_csv(batch_dir / "skipped.csv", index=False)
    (batch_dir / "labels.csv.tmp").rename(batch_dir / "labels.csv")  # last: the round counts as closed once it is there
    batch = set(pd.read_csv(batch_dir / "to_label.csv", dtype=str, keep_default_na=False)["id"])
    mine = int(back["id"].isin(batch).sum())
    late = f"; {len(back) - mine} rows of earlier batches labeled since" if len(back) > mine else ""
    log(f"{batch_dir.name}: {mine} of {len(batch)} rows labeled, {len(skipped)} skipped, "
        f"{len(batch) - mine - len(skipped)} not returned (none of them is offered again){late}")
    return batch_dir / "labels.csv"


def undo(project_dir: str | Path, log=print) -> str:
    """Take the last round back: its labels if they came back, else its whole batch. Nothing is
    deleted: the files move to rounds/undone/, so an undo can itself be undone by moving them back."""
    rounds = sorted(p for p in (Path(project_dir) / ROUNDS).glob("round-*") if p.is_dir())
    if not rounds:
        raise DataError(f"{Path(project_dir) / ROUNDS}: no round to undo")
    last, stamp = rounds[-1], time.strftime("%Y%m%d-%H%M%S")
    undone = Path(project_dir) / ROUNDS / "undone"
    undone.mkdir(parents=True, exist_ok=True)
    if (last / "labels.csv").exists():
        for name in ("labels.csv", "skipped.csv"):
            if (last / name).exists():
                shutil.move(last / name, undone / f"{last.name}-{stamp}-{name}")
        message = f"{last.name}: its labels are taken back (moved to {undone}); the batch waits for labels again"
    else:
        shutil.move(last, undone / f"{last.name}-{stamp}")
        message = f"{last.name}: its batch is dropped (moved to {undone}); its rows can be offered again"
    log(message)
    return message


# --------------------------------------------------------------------------- one round


def cross_validated_accuracy(acts, rows: np.ndarray, labels: np.ndarray, num_classes: int, cfg: ProjectConfig
                             ) -> tuple[float | None, float | None, int, str]:
    """(mean accuracy, std, folds, note) of the project's recipe on the labeled rows, by stratified
    k-fold; None when a class has fewer than 2 labeled rows (no fold could hold it out)."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels, minlength=num_classes)
    present = counts[counts > 0]
    folds = int(min(cfg.cv_folds, present.min())) if len(present) else 0
    if folds < 2 or len(present) < 2:
        return None, None, 0, "needs at least 2 labeled rows of each labeled class and 2 classes"
    accs = []
    for k, (fit_at, test_at) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=cfg.seed).split(rows, labels)):
        model = modeling.build_model(acts, num_classes, cfg.recipe, cfg.seed + k)
        modeling.fit(model, acts, rows[fit_at], labels[fit_at], cfg.recipe, cfg.seed + k)
        pred = modeling.predict_proba(model, acts, rows[test_at]).argmax(1)
        accs.append(float((pred == labels[test_at]).mean()))
    note = "" if (counts > 0).all() else f"{int((counts == 0).sum())} class(es) have no labeled row yet"
    return float(np.mean(accs)), float(np.std(accs)), folds, note


def _diverse(order: np.ndarray, vectors: np.ndarray, n: int, similarity: float) -> np.ndarray:
    """The first `n` of `order` (positions into `vectors`) skipping any row at least `similarity`
    cosine-similar to one already taken: near-duplicates cost a labeler twice for one lesson."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    taken: list[int] = []
    for i in order:
        if not taken or (unit[taken] @ unit[i]).max() < similarity:
            taken.append(int(i))
            if len(taken) == n:
                break
    return np.asarray(taken, dtype=np.int64)


def activations(project: Project, use_ray: bool, log=print):
    """The encoder's activations of every project row at the freeze mode's boundary: one encoder
    pass (the sweep's `embed.ensure_activation_sets`), cached under the project for later rounds."""
    cfg = project.cfg
    backbone = load_backbone(cfg.encoder.name)
    boundary = boundary_for(cfg.freeze, backbone.num_layers, cfg.encoder.pooling, cfg.encoder.max_length)
    cached = (project.dir / "cache" / activation_key(backbone.fingerprint, boundary, project.texts)
              / "meta.json").exists()
    # Ray only for a pass that will run on it (a later round reads the cache: no actors to start)
    # and only on a cluster: on one machine torch's own threads already use every core, and
    # starting Ray, its Data pipeline and an encoder per actor was most of round 1's time
    # (docs/measurements.md, "select round 1"). Stopped when done unless the caller's Ray was up.
    on_ray = use_ray and not cached and len(project.texts) >= RAY_MIN_ENCODE_ROWS and cluster_given()
    with ray_running(enabled=on_ray):
        paths = ensure_activation_sets(cfg.encoder.name, {"rows": project.texts}, [boundary], project.dir / "cache",
                                       use_ray=on_ray, batch_size=cfg.encoder.batch_size, actors=cfg.encoder.actors,
                                       log=log)
    return load_activations(paths["rows"][0])


def cluster_given() -> bool:
    """Whether a Ray is already up in this process to share the encoder pass (a driver on a
    cluster). `select` itself would only start a local one (runtime.start_ray), which on one
    machine is all overhead."""
    import sys

    ray = sys.modules.get("ray")  # not imported here just to ask: the import alone takes seconds
    return bool(ray is not None and ray.is_initialized())


def next_round(project: Project, use_ray: bool = True, log=print) -> Path:
    """Train on every labeled row, estimate accuracy, choose the next batch, write its files."""
    _check_offerable(project)  # before the encoder pass, not after it
    start = time.perf_counter()
    acts = activations(project, use_ray, log)
    encoded_s = time.perf_counter() - start
    with _one_thread():
        return _choose(project, acts, encoded_s, use_ray, log)


def _check_offerable(project: Project) -> None:
    if not ((project.labels < 0) & ~project.offered).any():
        raise DataError(f"{project.dir}: no row left to offer ({int((project.labels >= 0).sum())} labeled, "
                        f"{int(((project.labels < 0) & project.offered).sum())} offered and not labeled)")


@contextmanager
def _one_thread():
    """Train and score the head on one torch thread. A head step is a few small matrix products:
    a second thread only adds OpenMP spin-waits, and on a busy 2-core machine the 5-fold estimate
    of the README's example took 289 s with two threads against 7.3 s with one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _choose(project: Project, acts, encoded_s: float, use_ray: bool, log, in_memory: bool = False) -> Path:
    """Choose the batch. Pooled freeze modes read the pool a run at a time (poolscan.py), so memory
    stays bounded by a run however large the pool; token-level modes, and `in_memory` (the tests'
    reference), score the whole pool at once through `scoring.pool_view`. Both pick the same rows."""
    cfg, classes = project.cfg, project.classes
    labeled = np.flatnonzero(project.labels >= 0)
    pool = np.flatnonzero((project.labels < 0) & ~project.offered)
    n = min(cfg.batch, len(pool))
    rng = np.random.default_rng([cfg.seed, len(project.rounds), 1])
    y = project.labels[labeled]
    t0 = time.perf_counter()
    probs = scores = None
    model = None
    chunked = not acts.boundary.ragged and not in_memory
    work_dir = project.dir / "cache"
    summary: dict = {"round": len(project.rounds) + 1, "labeled": int(len(labeled)), "pool": int(len(pool)),
                     "batch": int(n), "classes": classes, "encoder": to_dict(cfg.encoder), "freeze": cfg.freeze,
                     "seed": cfg.seed}
    if len(labeled) == 0:
        how = cfg.cold_start
        if how == "random":
            picked = rng.permutation(len(pool))[:n]
        else:  # the encoder's own sentence vectors (an untrained head's input): cover the space
            blank = modeling.build_model(acts, len(classes), cfg.recipe, cfg.seed)
            if how == "typiclust":  # k-means over the whole pool's vectors: in memory (O(N H) floats)
                vectors = scoring.score_rows(blank, acts, pool).embeddings
                picked = typiclust_picks(vectors, np.empty((0, vectors.shape[1])), n, rng)
            elif chunked:
                picked = poolscan.cold_start_k_center(blank, acts, pool, n, rng, work_dir)
            else:
                vectors = scoring.score_rows(blank, acts, pool).embeddings
                picked = k_center_greedy(vectors, np.empty((0, vectors.shape[1])), n, rng)
        summary.update(strategy=f"cold start: {how}", cv_accuracy=None,
                       cv_note="nothing is labeled yet: no model, no estimate")
        log(f"cold start: nothing is labeled yet, so the first {n} rows are chosen by "
            f"{COLD_START_WORDS[how]}, not by {cfg.strategy}")
    else:
        strategy = strategies.get(cfg.strategy).configure(cfg.selection)
        t_cv = time.perf_counter()
        acc, std, folds, note = cross_validated_accuracy(acts, labeled, y, len(classes), cfg)
        summary["cv_s"] = round(time.perf_counter() - t_cv, 3)
        counts = np.bincount(y, minlength=len(classes))
        majority = classes[int(counts.argmax())]
        summary.update(strategy=str(strategy), cv_accuracy=acc, cv_std=std, cv_folds=folds, cv_note=note,
                       majority_class=majority, majority_baseline=float(counts.max() / len(y)),
                       chance=1 / len(classes))
        log(f"strategy: {strategy}")
        log(f"labeled rows: {len(labeled)}; cross-validated accuracy: "
            + (f"{acc:.3f} +- {std:.3f} ({folds} folds)" if acc is not None else f"none ({note})")
            + f"; majority class ({majority}) alone: {counts.max() / len(y):.3f}; chance: {1 / len(classes):.3f}"
            + (f"; {note}" if note and acc is not None else ""))
        model = modeling.trained_model(acts, labeled, y, len(classes), cfg.recipe, cfg.seed, project.dir / "cache")
        # Diverse: rank more than the batch, then walk down the ranking past near-duplicates.
        want = min(len(pool), n * 5) if cfg.diverse else n
        if chunked and poolscan.handles(strategy):
            picks = poolscan.ranked(strategy, model, acts, pool, labeled, y, want, rng, cfg.selection.mc_samples,
                                    cfg.seed, work_dir)
            picked, ranked_scores, probs, vectors = picks.positions, picks.scores, picks.probs, picks.embeddings
        else:
            view = scoring.pool_view(strategy.needs | {"probs"}, model, acts, pool, labeled, y, cfg.selection,
                                     cfg.seed, cache_dir=project.dir / "cache", use_ray=use_ray and cluster_given(), log=log)
            if "committee_probs" in strategy.needs:  # qbc-seeds: the same training under COMMITTEE other seeds
                seeds = [cfg.seed + 1 + i for i in range(COMMITTEE)]
                members = [modeling.trained_model(acts, labeled, y, len(classes), cfg.recipe, s, project.dir / "cache")
                           for s in seeds]
                view.committee_probs = scoring.committee_probs(members, seeds, acts, pool, labeled, y, cfg.selection,
                                                               project.dir / "cache", log)
            picked, ranked_scores = strategy.ranked(view, want, rng)
            probs, vectors = view.probs[picked], view.embeddings[picked]
        if cfg.diverse:  # only over the candidates: their vectors are all this needs
            keep = _diverse(np.arange(len(picked)), vectors, n, cfg.similarity)
            summary["diverse_skipped"] = int(keep.max() + 1 - len(keep)) if len(keep) else 0
            log(f"diverse: skipped {summary['diverse_skipped']} of the ranked rows as near-duplicates "
                f"(cosine similarity >= {cfg.similarity}) of a row already in the batch")
            picked, probs = picked[keep], probs[keep]
            ranked_scores = ranked_scores[keep] if ranked_scores is not None else None
        scores = ranked_scores
    t_stop = time.perf_counter()
    summary["stopping"], stop_preds = _stopping(project, acts, model, summary)
    summary["stopping_s"] = round(time.perf_counter() - t_stop, 3)
    log(summary["stopping"]["line"])
    summary["select_s"] = round(time.perf_counter() - t0, 3)
    summary["encode_s"] = round(encoded_s, 3)
    return write_round(project, pool[picked], probs, scores, model, summary, log, stop_preds)


STOP_SET_FILE = "stop_set.json"  # the round's model's label of each stop-set row (stopping.py)


def _stopping(project: Project, acts, model, summary: dict) -> tuple[dict, dict[str, str] | None]:
    """The round's stopping record (stopping.assess) and its model's predictions on the stop set."""
    history = []
    for r in project.rounds:
        rec = json.loads((r / "round.json").read_text()) if (r / "round.json").exists() else {}
        history.append(rec)
    if project.rounds and (project.rounds[-1] / STOP_SET_FILE).exists():
        history[-1]["_stop_set"] = json.loads((project.rounds[-1] / STOP_SET_FILE).read_text())
    preds = None
    if model is not None:
        at = stopping.stop_set(project.ids, project.cfg.seed)
        probs = scoring.score_rows(model, acts, at).probs
        preds = {str(project.ids[i]): project.classes[k] for i, k in zip(at, probs.argmax(1))}
    cfg = project.cfg
    record = stopping.assess(history, preds, summary["labeled"], cfg.batch, summary.get("cv_accuracy"),
                             summary.get("cv_std"), summary.get("cv_folds", 0), cfg.budget or None)
    return record, preds


def write_round(project: Project, rows: np.ndarray, probs: np.ndarray | None, scores: np.ndarray | None,
                model, summary: dict, log=print, stop_preds: dict[str, str] | None = None) -> Path:
    """The batch as to_label.csv / .jsonl and a Label Studio import; round.json and head.pt beside them."""
    classes = project.classes
    d = project.dir / ROUNDS / f"round-{summary['round']:03d}"
    tmp = d.with_name(f".{d.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "labelstudio").mkdir(parents=True)
    table = pd.DataFrame({"id": project.ids[rows], "text": [project.texts[r] for r in rows],
                          "rank": np.arange(1, len(rows) + 1),
                          "score": scores if scores is not None else np.full(len(rows), np.nan)})
    predicted = [classes[k] for k in probs.argmax(1)] if probs is not None else [None] * len(rows)
    table["predicted"] = predicted
    for k, c in enumerate(classes):
        table[f"p_{c}"] = probs[:, k] if probs is not None else np.nan
    table.to_csv(tmp / "to_label.csv", index=False)
    with open(tmp / "to_label.jsonl", "w", encoding="utf-8") as fh:
        for i, row in enumerate(table.itertuples(index=False)):
            rec = {"id": row.id, "text": row.text, "rank": int(row.rank),
                   "score": None if pd.isna(row.score) else float(row.score), "predicted": predicted[i],
                   "probabilities": ({c: float(probs[i, k]) for k, c in enumerate(classes)}
                                     if probs is not None else None)}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    # The prediction's score is the strategy's (Label Studio orders tasks by it); a strategy
    # without one (random, coreset, badge) gets the model's confidence in its label.
    score_of = (scores if scores is not None else probs.max(1) if probs is not None else [None] * len(rows))
    tasks = [labelstudio.task(str(row_id), text, predicted[i], None if score_of[i] is None else float(score_of[i]),
                              model_version=d.name)
             for i, (row_id, text) in enumerate(zip(table["id"], table["text"]))]
    (tmp / "labelstudio" / "tasks.json").write_text(json.dumps(tasks, indent=1, ensure_ascii=False))
    (tmp / "labelstudio" / "config.xml").write_text(labelstudio.labeling_config(classes))
    if model is not None:
        import torch

        torch.save({"state": model.state_dict(), "classes": classes, "encoder": to_dict(project.cfg.encoder),
                    "freeze": project.cfg.freeze, "boundary": asdict(model.boundary),
                    "dropout": project.cfg.recipe.dropout}, tmp / "head.pt")
    if stop_preds is not None:
        (tmp / STOP_SET_FILE).write_text(json.dumps(stop_preds))
    (tmp / "round.json").write_text(json.dumps(summary, indent=1))
    tmp.rename(d)  # whole or not at all: a half-written round would count as exported
    log(f"{d.name}: {len(rows)} rows to label in {d / 'to_label.csv'} (also to_label.jsonl and "
        f"labelstudio/tasks.json with labelstudio/config.xml)")
    return d


def prepare(project_dir: str | Path, overrides: list[str] | tuple[str, ...] = (), labels: str | Path | None = None,
            sweep_file: str | None = None, results_dir: str | Path | None = None, log=print,
            allow_open: bool = False, from_report: str | Path | None = None) -> Project:
    """Everything `select` does before any work: check the config, the files and every round,
    merge returned `labels` (if given) into the open round, and check that a row is left to offer.
    `results_dir`: take the strategy from a finished sweep (`strategy_from_results`); `from_report`
    (or `strategy: from-report`): from a report's surviving findings (analysis/advice.py).
    `allow_open`: leave an open round open (studio.py closes it from Label Studio)."""
    project_dir = Path(project_dir)
    cfg = load_project_config(project_dir, overrides, sweep_file)
    if from_report is not None or cfg.strategy == FROM_REPORT:  # the report's surviving findings decide
        from raysweep.analysis.advice import strategy_from_report

        best, why = strategy_from_report(from_report or project_dir / cfg.report, cfg.freeze)
        cfg = load_project_config(project_dir, [*overrides, f"strategy={best}"], sweep_file)
        log(f"strategy {why}")
    elif results_dir is not None:
        best, caveat = strategy_from_results(results_dir, cfg.freeze)
        cfg = load_project_config(project_dir, [*overrides, f"strategy={best}"], sweep_file)
        log(caveat)
    project = load_project(project_dir, cfg)
    if labels is not None:  # checked whole before anything is written (read_returned)
        merge_labels(labels, project, log)
        project = load_project(project_dir, cfg)
    elif allow_open:
        return project
    elif project.open_round is not None:
        raise DataError(f"{project.open_round}: this batch's labels have not come back yet: pass them with "
                        "--labels FILE (or --undo to drop the batch)")
    _check_offerable(project)
    return project


def select(project_dir: str | Path, overrides: list[str] | tuple[str, ...] = (), labels: str | Path | None = None,
           sweep_file: str | None = None, results_dir: str | Path | None = None, use_ray: bool = True,
           log=print, from_report: str | Path | None = None) -> Path:
    """One step of the loop: merge returned `labels` (if given) into the open round, then write
    the next round's batch. Everything is checked before any encoder pass or training (`prepare`)."""
    return next_round(prepare(project_dir, overrides, labels, sweep_file, results_dir, log, from_report=from_report),
                      use_ray, log)
