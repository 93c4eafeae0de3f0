"""The sweep: a sweep config -> the grid of cells -> Ray Tune trials -> trials.csv.

Layout of an output directory:
    sweep.yaml        the resolved sweep config (every default filled in)
    cells/<id>.json   one finished cell: its parameters and metrics (or its error)
    cells/<id>.running  a cell a trial is running now: host, pid, start time; rewritten every
                      HEARTBEAT_S while it runs and removed once cells/<id>.json is written
    tune/             Ray Tune's own experiment directory
    chosen/           the rows each cell added, with score and rank (chosen.py)
    cache/            cached frozen activations (unless `cache_dir` points elsewhere); for a URI
                      output, a copy of the entries the trials need, which each node fetches into
                      its own disk cache (storage.py)
    trials.csv        one row per cell of this sweep, assembled from cells/

Each cell has a deterministic id from its parameters and the sweep's fixed settings, so a
finished cell is never run twice: running the sweep again skips it, and adding fractions,
strategies or seeds runs only the new cells.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from raysweep import augment, chosen, console, grid, model, packing, scoring, strategies
from raysweep.backbone import boundary_for, load_backbone
from raysweep.config import ANNOTATED_POOL, RecipeConfig, ResourcesConfig, SelectionConfig, SweepConfig, parse_lora, to_dict
from raysweep.data import load_splits
from raysweep.embed import concatenate_entries, ensure_activation_sets, load_activations
from raysweep.encoders import cache_home
# The grid's names are also known from here (tests and scripts written before grid.py import them so).
from raysweep.grid import (HEARTBEAT_S, STALE_S, Cell, cell_id, cell_ids, expand, fixed_digest,  # noqa: F401
                           read_cells, results_table, running_cells, selection_settings)
from raysweep.grid import Pack, Training
from raysweep.llm import annotate
from raysweep.model import error_line, use_assigned
from raysweep.runtime import start_ray
from raysweep.storage import Output, StorageError, fetch_entry, node_lock, refuse_credentials
from raysweep.tasks import Task
from raysweep.train import TrialInputs, choose_rows, run_trials


def generation_dir(cfg: SweepConfig, output: str | Path) -> Path:
    """Where the sweep's generated rows live: `generation_dir:`, else <output>/generation."""
    return Path(cfg.generation_dir).resolve() if cfg.generation_dir else Path(output).resolve() / "generation"


def trainable_counts(cfg: SweepConfig) -> dict[str, dict[str, int] | str]:
    """Per encoder, each freeze mode's trainable-parameter count, or why the encoder was not loaded.

    A freeze mode that does not fit an encoder (more layers than it has, a LoRA rank wider than
    its hidden size) raises EncoderError: `raysweep check` reports it before any work. An encoder
    that cannot be loaded here (a hub name on an offline laptop) is not an error of the sweep file.
    """
    from raysweep.backbone import trainable_parameters
    from raysweep.encoders import EncoderError

    counts = {}
    for encoder in cfg.encoders:
        try:
            backbone = load_backbone(encoder)
        except EncoderError as exc:
            counts[encoder] = str(exc)
            continue
        counts[encoder] = {f: trainable_parameters(backbone, f, cfg.task.outputs, cfg.poolings[0],
                                                   cfg.max_length) for f in cfg.compare.freeze}
    return counts


# --------------------------------------------------------------------------- preparing shared inputs


@dataclass
class TrialContext:
    """What every trial of a sweep reads (pickled once into Tune): small arrays and the paths of
    the cached activations, never the activations themselves."""

    train_labels: np.ndarray
    val_labels: np.ndarray
    labeled: np.ndarray  # positions into train
    pool_rows: np.ndarray  # the real pool: positions into train
    num_classes: int
    artifacts: dict[str, tuple[str, ...]]  # (train, val[, test]) entry paths by Cell.variant (+ "|generated")
    recipe: RecipeConfig
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)  # per freeze mode: bf16
    cache_dir: str | None = None
    fixed: str | None = None  # the sweep's fixed_digest: names chosen/'s rows table
    test_labels: np.ndarray | None = None
    generated_labels: dict[str, np.ndarray] | None = None  # the LLM pools' labels of the generated rows
    # llm_annotated: the train labels with the LLM's in place of gold on the rows the cells choose
    annotated_labels: np.ndarray | None = None
    task: Task | None = None  # what the trials learn and report (tasks.py); None: classification
    train_texts: list[str] | None = None  # for chosen/'s rows table; dropped before the trials
    seeds: tuple[int, ...] = ()  # replicate.seed: qbc-seeds' committee (train.TrialInputs.seeds)

    def pool_size(self, pool: str) -> int:
        return len(self.pool_rows) if pool in ("real", ANNOTATED_POOL) else len(self.generated_labels[pool])


def prepare(cfg: SweepConfig, cache_dir: Path, use_ray: bool, log=print,
            generated: pd.DataFrame | None = None) -> TrialContext:
    """Load the data and compute every activation cache the grid needs, once, before any trial.

    Returns the trial context: small arrays and artifact paths that every trial reads. With
    `generated` rows (LLM pools), a second train set is cached: the real train rows followed by
    the generated ones, so that a trial of an LLM pool adds rows at positions past the real ones.
    It is assembled from the entries of the two parts; only the generated rows are encoded (and
    not even those when the generation's teacher cached them already).
    """
    splits = load_splits(cfg.data, cfg.split)
    log(f"data: {splits.describe()}")
    texts = {"train": splits.train["text"].tolist(), "val": splits.val["text"].tolist()}
    if splits.test is not None:
        texts["test"] = splits.test["text"].tolist()
    if generated is not None and len(generated):
        texts["generated"] = generated["text"].astype(str).tolist()
    artifacts = {}
    for encoder in cfg.encoders:
        backbone = load_backbone(encoder)
        boundaries = {(pooling, f): boundary_for(f, backbone.num_layers, pooling, cfg.max_length,
                                                 backbone.hidden_size)
                      for pooling in cfg.poolings for f in cfg.compare.freeze}
        unique = sorted(set(boundaries.values()), key=lambda b: (b.kind, b.layer, b.pooling))
        # One encoder pass per encoder serves every pooling, freeze mode and text set.
        paths = ensure_activation_sets(encoder, texts, unique, cache_dir, use_ray=use_ray,
                                       batch_size=cfg.encoder.batch_size, actors=cfg.encoder.actors, log=log)
        paths = {name: dict(zip(unique, found)) for name, found in paths.items()}
        if "generated" in texts:  # assembled from the two cached parts, not encoded again
            both = texts["train"] + texts["generated"]
            paths["train+generated"] = {b: concatenate_entries([paths["train"][b], paths["generated"][b]], both,
                                                               cache_dir) for b in unique}
        elif generated is not None:  # nothing was generated: the LLM pools add no row
            paths["train+generated"] = paths["train"]
        # (train, val) or, with a test split, (train, val, test): the entries a trial of the variant reads
        held_out = lambda b: (str(paths["val"][b]), *([str(paths["test"][b])] if "test" in paths else []))  # noqa: E731
        for (pooling, f), b in boundaries.items():
            artifacts[f"{encoder}|{pooling}|{f}"] = (str(paths["train"][b]), *held_out(b))
            if generated is not None:
                artifacts[f"{encoder}|{pooling}|{f}|generated"] = (str(paths["train+generated"][b]), *held_out(b))
    generated_labels = None
    if generated is not None:
        generated_labels = {"llm": generated["llm_label"].to_numpy(dtype=np.int64),
                            "llm_teacher": generated["teacher_label"].to_numpy(dtype=np.int64)}
    return TrialContext(
        train_labels=splits.train["label"].to_numpy(), val_labels=splits.val["label"].to_numpy(),
        labeled=splits.labeled, pool_rows=splits.unlabeled, num_classes=cfg.data.num_classes, artifacts=artifacts,
        recipe=cfg.recipe, selection=cfg.selection, resources=cfg.resources, cache_dir=str(cache_dir),
        fixed=fixed_digest(cfg), test_labels=splits.test["label"].to_numpy() if splits.test is not None else None,
        generated_labels=generated_labels, train_texts=texts["train"], task=cfg.task,
        seeds=tuple(cfg.replicate.seed))


@lru_cache(maxsize=8)
def _activations(path: str):
    return load_activations(path)


def trial_inputs(context: TrialContext, variant: str, pool: str = "real") -> TrialInputs:
    """The inputs of the trials of one `Cell.variant` (encoder|pooling|freeze) and pool.

    An LLM pool's trials see the real train rows followed by the generated rows, labeled by
    the LLM (`llm`) or the teacher (`llm_teacher`); they add rows from the generated part only.
    """
    select_labels = None
    if pool in ("real", ANNOTATED_POOL):
        train_path, val_path, *test_path = context.artifacts[variant]
        labels, rows = context.train_labels, context.pool_rows
        if pool == ANNOTATED_POOL:  # chosen as `real` chooses (gold labels), trained on with the LLM's
            labels, select_labels = context.annotated_labels, labels
    else:
        train_path, val_path, *test_path = context.artifacts[f"{variant}|generated"]
        extra = context.generated_labels[pool]
        n_real = len(context.train_labels)
        labels = np.concatenate([context.train_labels, extra])
        rows = np.arange(n_real, n_real + len(extra))
    return TrialInputs(train_labels=labels, val_labels=context.val_labels,
                       labeled=context.labeled, pool_rows=rows, train_acts=_activations(train_path),
                       val_acts=_activations(val_path), num_classes=context.num_classes,
                       cache_dir=context.cache_dir, lora=parse_lora(variant.rsplit("|", 1)[-1]),
                       test_labels=context.test_labels,
                       test_acts=_activations(test_path[0]) if test_path else None, select_labels=select_labels,
                       task=context.task, seeds=context.seeds)


def prepare_selection(cfg: SweepConfig, context: TrialContext, out: Output, use_ray: bool, log=print,
                      resources=None) -> None:
    """Train the scoring model of every (freeze, seed) and score the pool under it, once, before
    any trial; then write the entropy / SQBC diagnostics under `output`/diagnostics.

    Trials find these in the cache, so the fractions and strategies of a (freeze, seed) share
    one scoring pass. Doing it here gives Ray Data the whole cluster: inside a trial its actors
    would wait for the CPUs the trials themselves hold. `resources(freeze, n)`: the (cpus, gpus,
    pack size) the scoring models of a freeze mode train with (see `scoring.prepare_scores`).
    """
    needs = frozenset().union(*(strategies.get(s).needs for s in cfg.compare.strategy))
    if not needs:
        return
    jobs = [(f, s) for f in cfg.compare.freeze for s in cfg.replicate.seed]
    several = len(cfg.encoders) * len(cfg.poolings) > 1
    # The LLM pools share one scoring pass: the scoring model trains on `labeled` alone, so the
    # pool's labels (the LLM's or the teacher's) do not change what it says about the rows.
    real = "real" in cfg.compare.pool or cfg.needs_annotation  # llm_annotated chooses as `real` does
    sources = (["real"] if real else []) + (["llm"] if cfg.needs_generation else [])
    for source in sources:
        for encoder in cfg.encoders:
            for pooling in cfg.poolings:
                inputs = {f: trial_inputs(context, f"{encoder}|{pooling}|{f}", source) for f in cfg.compare.freeze}
                views = scoring.prepare_scores(jobs, inputs, context.recipe, cfg.selection,
                                               mc="mc_probs" in needs, use_ray=use_ray, log=log,
                                               out=out if out.is_uri else None, resources=resources)
                # One encoder and pooling (the study's case): diagnostics/ itself; else one folder each.
                # The real pool's are the study's diagnostic; the generated pool's go beside them.
                rel = ("diagnostics" if source == "real" else "diagnostics-generated") + (
                    f"/{encoder}-{pooling}".replace("/", "_") if several else "")
                if cfg.task.regression:  # the diagnostic correlates entropy, which a score has not
                    log("diagnostics: entropy vs SQBC is a classification diagnostic; skipped for a regression task")
                    continue
                if not out.is_uri:
                    scoring.write_diagnostics(views, cfg.selection.k, out.local_dir / rel, log=log)
                    continue
                with tempfile.TemporaryDirectory() as staging:  # written here, then copied to the URI
                    scoring.write_diagnostics(views, cfg.selection.k, staging, log=log)
                    out.upload_tree(Path(staging), rel, skip_existing=False)


class _Heartbeat:
    """Writes cells/<id>.running for each cell of a pack when it starts, and again every
    HEARTBEAT_S until the cell's record is written (`finished`): `raysweep status` counts a cell
    as running while its marker is fresh."""

    def __init__(self, out: Output, cids: list[str]):
        self.out = out
        self.texts = {cid: json.dumps({"cell_id": cid, "host": socket.gethostname(), "pid": os.getpid(),
                                       "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                      for cid in cids}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _write(self) -> None:
        with self.lock:
            for cid, text in self.texts.items():
                self.out.write_text(f"cells/{cid}.running", text)

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                self._write()
            except StorageError:
                pass  # a missed beat on a flaky store: the next one, or the result, follows

    def finished(self, cid: str) -> None:
        """The cell's record is written: its marker has served its purpose."""
        with self.lock:
            if self.texts.pop(cid, None) is not None:
                self.out.delete(f"cells/{cid}.running")

    def __enter__(self):
        self._write()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def _record(cid: str, cell: Cell, result, start: float) -> dict:
    """A cell's record: its metrics, or the error that failed it (in one line). `wall_s` is the
    cell's own share of its pack's time: its trial (select, train, evaluate) and its writes."""
    record = {"cell_id": cid, "cell": asdict(cell)}
    if isinstance(result, BaseException):
        return {**record, "status": "failed", "error": error_line(result), "metrics": {}}
    metrics = {**result[0]}
    metrics["wall_s"] = round(metrics.get("trial_s", 0.0) + time.perf_counter() - start, 4)
    return {**record, "status": "ok", "metrics": metrics}


def run_pack(pack: Pack, cells: dict[str, Cell], context: TrialContext, out: Output, device: str = "cpu") -> dict:
    """Run the trainings of one pack and record each cell under cells/; returns the records.

    A training whose cell has a record already (finished before this run, or written before a
    lost node took the rest of the pack) is not trained again; its riders copy that record. A
    failing cell is recorded, not raised: an exception in a trial is deterministic, so Tune
    retrying it would only repeat it; the other cells of the pack are unaffected.
    """
    records: dict[str, dict] = {}
    earlier = {t.cell: _read_record(out, t.cell) for t in pack.trainings}
    with _Heartbeat(out, [c for c in pack.cells if earlier.get(c) is None]) as beat:
        todo = [t for t in pack.trainings if earlier[t.cell] is None]
        inputs = None
        try:
            inputs = trial_inputs(context, pack.variant, pack.pool)
            bf16 = context.resources.of(pack.variant.rsplit("|", 1)[-1]).bf16
            results = run_trials([cells[t.cell] for t in todo], inputs, context.recipe, context.selection, device,
                                 bf16)
        except Exception as exc:  # noqa: BLE001 - the pack's inputs failed: so does each of its cells
            results = [exc] * len(todo)
        for t, result in zip(todo, results):
            # `pack`: the Tune trial (its config's "pack") that wrote the record, for status and Tune's logs
            records[t.cell] = _write_cell(out, t.cell, cells[t.cell], result, inputs, context, beat, {"pack": pack.name})
        for t in pack.trainings:
            source = records.get(t.cell) or earlier[t.cell]
            for rider in t.riders:
                records[rider] = _write_rider(out, rider, cells[rider], source, context, beat, pack.name)
    return records


def _read_record(out: Output, cid: str) -> dict | None:
    text = out.read_text(f"cells/{cid}.json")
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None  # torn by a node's death: run the cell again


def _write_cell(out: Output, cid: str, cell: Cell, result, inputs, context: TrialContext, beat: _Heartbeat,
                extra: dict | None = None) -> dict:
    start = time.perf_counter()
    if not isinstance(result, BaseException):
        try:  # before the cell's record: a cell that counts as finished has its chosen rows on record
            chosen.write_cell(out, cid, result[1], inputs.train_labels, context.fixed)
        except Exception as exc:  # noqa: BLE001
            result = exc
    record = {**_record(cid, cell, result, start), **(extra or {})}
    out.write_text(f"cells/{cid}.json", json.dumps(record, indent=1))
    beat.finished(cid)
    return record


def _write_rider(out: Output, cid: str, cell: Cell, source: dict, context: TrialContext, beat: _Heartbeat,
                 pack: str | None = None) -> dict:
    """A cell whose rows are the same as `source`'s by construction: its own record (and chosen
    rows), with `source`'s results and `shared_training` naming the cell that trained. It trained
    nothing itself: its train_s and eval_s are 0 (the compute is on the cell that trained)."""
    start = time.perf_counter()
    shared = source.get("shared_training", source["cell_id"])
    try:
        inputs = trial_inputs(context, cell.variant, cell.pool)
        picked = choose_rows(cell, inputs, context.recipe, context.selection)  # no model: none or all of the pool
        if source.get("status") != "ok":
            raise RuntimeError(f"the training it shares with cell {shared} failed: {source.get('error', '')}")
        select_s = round(time.perf_counter() - start, 4)
        metrics = {**source["metrics"], "select_s": select_s, "train_s": 0.0, "eval_s": 0.0, "trial_s": select_s,
                   "pool_size": len(inputs.pool_rows)}
        metrics.pop("cached_model", None)
        result = (metrics, picked)
    except Exception as exc:  # noqa: BLE001
        result, inputs = exc, None
    return _write_cell(out, cid, cell, result, inputs, context, beat, {"shared_training": shared, "pack": pack})


def run_cell(cell: Cell, cid: str, context: TrialContext, out: Output) -> dict:
    """Run one cell alone (a pack of one) and record it under cells/."""
    pack = Pack(cid, cell.variant, cell.pool, 0, (Training(cid),))
    return run_pack(pack, {cid: cell}, context, out)[cid]


_fetched: set[str] = set()  # outputs whose scoring files this process has fetched (see fetch_cache)


def publish_entries(out: Output, context: TrialContext, log=print) -> None:
    """A URI output: copy the activation entries the trials read from the driver's cache to
    <output>/cache/, where every node finds them. Before any remote work: the scoring tasks and
    actors of `prepare_selection` read them too."""
    entries = sorted({Path(p) for pair in context.artifacts.values() for p in pair})
    copied = sum(out.upload_tree(p, f"cache/{p.name}") > 0 for p in entries)
    log(f"cache: {copied} of {len(entries)} activation entries uploaded to {out.show('cache')}")


def publish_selection(out: Output, context: TrialContext, log=print) -> None:
    """A URI output: copy the scoring models and pool scores (all in the driver's cache: remote
    training returns its states to the driver) to <output>/cache/selection/ for the trials."""
    selection = Path(context.cache_dir) / "selection"
    if selection.is_dir():
        log(f"cache: {out.upload_tree(selection, 'cache/selection')} scoring files uploaded to "
            f"{out.show('cache/selection')}")


def artifact_key(cell: Cell) -> str:
    """The key of `TrialContext.artifacts` a cell's trial reads: an LLM pool's trials read the
    real train rows followed by the generated ones."""
    return cell.variant if cell.pool in ("real", ANNOTATED_POOL) else f"{cell.variant}|generated"


def fetch_cache(out: Output, context: TrialContext, cells: list[Cell]) -> None:
    """Before a node's first trial of `cells`' inputs: download the activation entries it lacks from
    <output>/cache/ into the node's cache (the same path as the driver's), and the scoring files
    once; each under a per-node lock, so the trials of one node download nothing twice."""
    for key in dict.fromkeys(artifact_key(c) for c in cells):
        for path in context.artifacts[key]:
            fetch_entry(out, Path(path))
    if out.spec not in _fetched:  # a listing of the store: once per process and output
        selection = Path(context.cache_dir) / "selection"
        with node_lock(selection):
            out.fetch_tree("cache/selection", selection, marker=None)
        _fetched.add(out.spec)


def _tune_trainable(config: dict, context: TrialContext, packs: dict[str, Pack], cells: dict[str, dict],
                    output: str) -> None:
    """One Tune trial: one pack, on the device and threads Ray assigned it (model.use_assigned).

    Tune retries a trial whose node died: cells whose records were written before the node went
    are not run again (see `run_pack`), so a lost node costs only its packs' unfinished cells.
    The driver removed every record it meant to re-run before starting, so a record is this run's.
    """
    from ray import tune

    device = use_assigned()
    pack = packs[config["pack"]]
    out = Output(output)
    members = {cid: Cell(**cells[cid]) for cid in pack.cells}
    if out.is_uri:
        fetch_cache(out, context, list(members.values()))
    records = run_pack(pack, members, context, out, device)
    ok = sum(r["status"] == "ok" for r in records.values())
    tune.report({"cells": len(records), "ok": ok, "failed": len(records) - ok})


# --------------------------------------------------------------------------- running


def check_output(output: str | Path, probe: bool = False) -> None:
    """Refuse an output whose credentials a run would leak (a StorageError, one line), before any
    work: the CLI calls it before it opens the run's log file, run_sweep again for library users."""
    # Tune pickles its storage filesystem, keys and all, into tuner.pkl and its state files.
    refuse_credentials(str(output), "output", "Tune would write into its experiment state (tuner.pkl)")
    copied = [name for name in TUNE_COPIES if os.environ.get(name)]
    if str(output).startswith("s3://") and copied:
        raise StorageError(f"output {output}: Ray Tune would copy {', '.join(copied)} from this environment into "
                           "every trial's runtime environment, which Ray logs in clear; put the keys in "
                           "~/.aws/credentials (AWS_PROFILE picks a profile) or use an instance profile "
                           "(docs/cluster.md#secrets)")
    out = Output(output)
    if probe and out.is_uri:  # the CLI: an unreachable or denied store is one line before the log file's line
        out.exists("sweep.yaml")


def run_sweep(cfg: SweepConfig, output: str | Path, address: str | None = None, retry_failed: bool = False,
              use_ray_data: bool = True, log=print, shared_output: bool = False) -> pd.DataFrame:
    """Run every cell of `cfg` not yet finished in `output`; write and return trials.csv.

    `shared_output`: `output` is a local path that every node of the cluster mounts (NFS, EFS);
    without it, a local path is refused on a cluster that has or can scale to several nodes."""
    check_output(output)
    out = Output(output)
    if not out.is_uri and not shared_output and address not in (None, "local"):
        check_local_output(out, address)
    out.mkdir("cells")
    out.write_text("sweep.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    cache_dir = _cache_dir(cfg, out)
    # Before the cell ids: an LLM pool's cells are keyed by the rows generated for them.
    generated = _generation(cfg, output, out, cache_dir, address, use_ray_data, log) if cfg.needs_generation else None

    cells = expand(cfg)
    context = sizes = None  # the trials' inputs, prepared once: here when the annotator needs them, else below

    def prepared() -> TrialContext:
        nonlocal context, sizes
        if context is None:
            start_ray(address)
            t0 = time.perf_counter()
            context, sizes = _prepare_trials(cfg, out, cache_dir, generated, address, use_ray_data, log)
            log(f"prepared the trials' inputs in {time.perf_counter() - t0:.2f} s")
        return context

    labels = None
    if cfg.needs_annotation:
        # Before the cell ids: an llm_annotated cell is keyed by the LLM's labels of its rows.
        labels = _annotate(cfg, cells, out, output, cache_dir, prepared, log)
    ids = cell_ids(cfg, cells, generated.digest if generated else None, labels)
    done = read_cells(out)
    skip = {"ok"} if retry_failed else {"ok", "failed"}
    todo = {i for i in ids if done.get(i, {}).get("status") not in skip}
    log(f"sweep {cfg.name}: {len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run")

    if todo:
        context = prepared()
        if cfg.needs_annotation:
            context.annotated_labels = annotate.trial_labels(
                annotate.annotation_dir(cfg, output, out.is_uri, cache_dir), context.train_labels, context.pool_rows)
        for i in todo:  # failed records about to be re-run (--retry-failed): see _tune_trainable
            if i in done:
                out.delete(f"cells/{i}.json")
        plan = grid.plan(cells, ids, todo, done, len(context.labeled),
                         {p: context.pool_size(p) for p in cfg.compare.pool}, sizes.trials)
        log(plan.describe(len(todo)))
        run_packs(cfg, plan, context, cells, ids, out, log)

    done = read_cells(out)
    table = results_table(cells, ids, done, cfg)
    out.write_text("trials.csv", table.to_csv(index=False))
    missing = len(cells) - len(table)
    failed = int((table["status"] == "failed").sum())
    log(f"wrote {out.show('trials.csv')}: {len(table)} cells ({failed} failed, {missing} missing)")
    return table


def _prepare_trials(cfg: SweepConfig, out: Output, cache_dir: Path, generated, address: str | None,
                    use_ray_data: bool, log) -> tuple[TrialContext, _PackSizes]:
    """The trials' context (`prepare`), the rows table of chosen/, and every scoring model and pool
    score the strategies need (`prepare_selection`), published for the trials of a URI output."""
    context = prepare(cfg, cache_dir, use_ray=use_ray_data, log=log, generated=generated.rows if generated else None)
    chosen.write_rows_table(out, context.fixed, context.train_texts, context.train_labels, context.labeled)
    context.train_texts = None  # not pickled into every trial
    sizes = _PackSizes(cfg, context, address)
    # Publish before the first remote work that reads the entries, collect after the work
    # that makes scoring models and scores (their states come back to this driver's cache).
    if out.is_uri:
        publish_entries(out, context, log=log)
    prepare_selection(cfg, context, out, use_ray=use_ray_data, log=log, resources=sizes.scoring)
    if out.is_uri:
        publish_selection(out, context, log=log)
    return context, sizes


def _annotate(cfg: SweepConfig, cells: list[Cell], out: Output, output, cache_dir: Path, prepared, log
              ) -> list[str | None]:
    """Per cell, the digest of the LLM's labels of the rows it adds (None outside llm_annotated):
    from a complete annotation directory, else by labeling them now (llm/annotate.py), which
    needs the trials' inputs (`prepared()`) to know which rows the `real` counterparts choose."""
    keys = cell_ids(cfg, [annotate.counterpart(c) for c in cells])
    ann_dir = annotate.annotation_dir(cfg, output, out.is_uri, cache_dir)
    with _paid_replies_in_storage(out, "annotation", ann_dir, fetch=True, log=log):
        wanted = [k for c, k in zip(cells, keys) if c.pool == ANNOTATED_POOL]
        digests = annotate.recorded(cfg, wanted, ann_dir)
        if digests is None:
            context = prepared()
            digests = annotate.annotate_sweep(cfg, cells, keys, lambda c: trial_inputs(context, c.variant), ann_dir,
                                              say=log).digests
        else:
            log(f"annotation: reusing {ann_dir} ({len(set(wanted))} cells' labels)")
    return [digests[k] if c.pool == ANNOTATED_POOL else None for c, k in zip(cells, keys)]


@contextmanager
def _paid_replies_in_storage(out: Output, rel: str, local: Path, fetch: bool, log):
    """A directory of paid LLM replies (`generation`, `annotation`) kept in a URI output's storage.

    Its reply store is appended to and fsynced call by call, so it lives on the driver's disk. The
    storage's copy is merged in first (`fetch`; files this disk already has are as new: kept), so a
    driver on a new head, or after a wiped cache, reuses or resumes what was paid for instead of
    paying again; and the directory goes up afterwards, also when the step stops short (Ctrl-C, the
    budget, a failed call), without hiding that step's own error. A local output: nothing to do.
    """
    if not out.is_uri:
        yield
        return
    if fetch:
        out.fetch_tree(rel, local, marker=None)
    try:
        yield
    except BaseException:
        if local.exists():
            try:
                out.upload_tree(local, rel, skip_existing=False)
            except StorageError as exc:
                log(f"{rel}: the replies stay in {local} only ({exc})")
        raise
    out.upload_tree(local, rel, skip_existing=False)


def _cache_dir(cfg: SweepConfig, out: Output) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).resolve()
    if out.is_uri:
        # Trials memory-map the cache, so it must be on a disk: each node's own, filled from <output>/cache/.
        return cache_home() / "cache"
    return out.local_dir / "cache"


def _generation(cfg: SweepConfig, output: str | Path, out: Output, cache_dir: Path, address: str | None,
                use_ray: bool, log) -> augment.Generated:
    """The LLM pools' generated rows: reused when complete, else generated (and relabeled) now.

    The response store is appended to and fsynced call by call, so it lives on a disk: with a
    URI output, beside the local cache, and copied to <output>/generation/ after every run of it,
    complete or not (`_paid_replies_in_storage`)."""
    gen_dir = (generation_dir(cfg, output) if cfg.generation_dir or not out.is_uri
               else cache_dir.parent / "generation" / cfg.name)
    # generation_dir: the user's own directory, the one to trust: uploaded, never overwritten.
    with _paid_replies_in_storage(out, "generation", gen_dir, fetch=not cfg.generation_dir, log=log):
        generated = augment.reuse(cfg, gen_dir)
        if generated is not None:
            log(f"generation: reusing {gen_dir} ({len(generated.rows)} rows)")
        else:
            start_ray(address)
            generated = augment.run_generation(cfg, gen_dir, cache_dir, use_ray=use_ray, log=log,
                                               out=out if out.is_uri else None)
    return generated


class _PackSizes:
    """Per freeze mode: the resources its trials and scoring models hold, and how many members a
    pack of them trains (grid.pack_size: the device memory a pack may use over one member's
    bound, model.member_bytes, and a balance bound from the trial slots the cluster has)."""

    def __init__(self, cfg: SweepConfig, context: TrialContext, address: str | None):
        from raysweep.cluster import capacity

        self.cfg, self.context = cfg, context
        self.cap = capacity(address)

    def _bound(self, freeze: str, variant: str | None, rows: int, n: int) -> int:
        res = self.cfg.resources.of(freeze)
        slots = self.cap.actors(res.cpus_per_trial, res.gpus_per_trial)
        if res.max_concurrent:
            slots = min(slots, res.max_concurrent)
        variant = variant or f"{self.cfg.encoders[0]}|{self.cfg.poolings[0]}|{freeze}"
        acts = _activations(self.context.artifacts[variant][0])
        lora = parse_lora(freeze)
        member = model.member_bytes(acts, self.context.num_classes, self.context.recipe, rows, lora)
        # Stacked packs: one per slot and shelf; packs whose members train one by one: four.
        per_slot = 1 if packing.packable(acts, lora, self.context.task) else 4
        return grid.pack_size(n, slots, member, res.pack_memory_gb * 1024**3, res.pack_size, per_slot)

    def trials(self, variant: str, rows: int, n: int) -> int:
        return self._bound(variant.rsplit("|", 1)[-1], variant, rows, n)

    def scoring(self, freeze: str, n: int) -> tuple[float, float, int]:
        res = self.cfg.resources.of(freeze)
        return res.cpus_per_trial, res.gpus_per_trial, self._bound(freeze, None, len(self.context.labeled), n)


def run_packs(cfg: SweepConfig, plan: grid.Plan, context: TrialContext, cells: list[Cell], ids: list[str],
              out: Output, log=print) -> None:
    """The Tune driver: one trial per pack, with its freeze mode's resources, on a progress bar of cells."""
    from ray import tune

    by_id = dict(zip(ids, cells))
    packs = {p.name: p for p in plan.packs}
    res = cfg.resources

    def resources(config: dict):
        own = res.of(packs[config["pack"]].variant.rsplit("|", 1)[-1])
        bundle = {"CPU": own.cpus_per_trial, "GPU": own.gpus_per_trial}
        return tune.PlacementGroupFactory([{k: v for k, v in bundle.items() if v}])

    bar = console.progress(sum(len(p.cells) for p in plan.packs), "trials", "cells")
    trainable = tune.with_resources(
        tune.with_parameters(_tune_trainable, context=context, packs=packs,
                             cells={c: asdict(by_id[c]) for p in plan.packs for c in p.cells}, output=out.spec),
        resources if res.freeze else {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        # The grid is the list of packs still to run, largest first (grid.plan); the progress
        # table shows each trial's pack name: pool, variant, training rows and part.
        param_space={"pack": tune.grid_search(list(packs))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=res.max_concurrent or None,
            reuse_actors=True,  # a worker keeps its loaded activations between trials
            trial_name_creator=lambda t: t.config["pack"],
            trial_dirname_creator=lambda t: t.config["pack"],
        ),
        run_config=tune.RunConfig(
            name=cfg.name,
            # A URI: Tune writes through the same pyarrow filesystem (query options such as
            # endpoint_override included), so its path is given without the scheme.
            storage_path=out.path("tune") if out.is_uri else str(out.local_dir / "tune"),
            storage_filesystem=out.fs if out.is_uri else None,
            failure_config=tune.FailureConfig(max_failures=3),  # a lost node retries its packs
            verbose=1,  # Tune's trial tables: in the log file when the CLI keeps one (console.py)
            callbacks=[_trial_progress(bar, {name: len(p.cells) for name, p in packs.items()})],
        ),
    )
    t0 = time.perf_counter()
    # Without Tune's loggers (below) its result grid warns, per trial, that it found no
    # result.json or progress.csv: true and expected here, and alarming in a user's terminal.
    analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = analysis_log.level
    analysis_log.setLevel(logging.ERROR)
    # Tune installs a SIGINT handler of its own for the fit (in the main thread) and leaves it
    # there: in a process that goes on (a notebook, a library caller, the next sweep) the next
    # Ctrl-C would only end an experiment that is over. The caller's handler goes back after.
    sigint = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    try:
        # Tune's default CSV, JSON and TensorBoard loggers write three files per trial from the
        # driver, which shares the CPUs with the trials; cells/ and trials.csv already hold every
        # result, so they are off for this fit. And the AWS keys Tune would copy into each
        # trial's logged runtime_env are out of its sight (a URI output refused them above;
        # a local Ray's workers have them from the environment they started with).
        with _environ(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1", **dict.fromkeys(TUNE_COPIES)):
            tuner.fit()
    finally:
        bar.close()
        analysis_log.setLevel(level)
        if sigint is not None:
            signal.signal(signal.SIGINT, sigint)
    log(f"ran {len(plan.packs)} packs ({sum(len(p.cells) for p in plan.packs)} cells) in "
        f"{time.perf_counter() - t0:.2f} s")


# Ray Tune copies these from the driver's environment into every trial actor's runtime_env
# (ray/tune/execution/class_cache.py in Ray 2.60), which Ray writes in clear to every node's
# runtime_env_agent.log.
TUNE_COPIES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")


def check_local_output(out: Output, address: str) -> None:
    """Refuse a local output path on a cluster that has, or can scale to, more than one node:
    each node's trials would write cells/ and read cache/ on their own disk, losing results."""
    from raysweep.cluster import capacity

    cap = capacity(address)
    if cap.multi_node:
        raise StorageError(f"--output {out}: a local path, but the cluster has or can scale to {cap.max_nodes} nodes "
                           f"({cap.describe()}), and each would write and read its own disk: give a storage URI every node "
                           f"reaches (s3://..., gs://...) or, if every node mounts {out}, --shared-output")


@contextmanager
def _environ(**values: str | None):
    """os.environ with each variable set (a string) or removed (None), restored afterwards:
    the caller's process may run other Ray or Tune code after a sweep."""
    before = {name: os.environ.get(name) for name in values}

    def put(items):
        for name, value in items:
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    put(values.items())
    try:
        yield
    finally:
        put(before.items())


def _trial_progress(bar, cells: dict[str, int]):
    """A Tune callback that moves the cells' progress bar by a pack's cells as its trial ends (one
    class per call: Tune is imported only when a sweep runs)."""
    from ray.tune import Callback

    class TrialProgress(Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            bar.update(cells.get(trial.config.get("pack"), 1))

        def on_trial_error(self, iteration, trials, trial, **info):
            bar.update(cells.get(trial.config.get("pack"), 1))

    return TrialProgress()


def cell_statuses(cfg: SweepConfig, output: str | Path, now: float | None = None) -> list[str | None]:
    """Per cell of `expand(cfg)`: 'ok', 'failed', 'running' or None (still to run) in `output`.

    An LLM pool's cells count as still to run until its generation directory is complete.
    """
    out = Output(output)
    digest = None
    if cfg.needs_generation and (cfg.generation_dir or not out.is_uri):
        generated = augment.reuse(cfg, generation_dir(cfg, output))
        digest = generated.digest if generated else None
    elif cfg.needs_generation:  # the copy the sweep uploaded next to its results
        summary = json.loads(out.read_text("generation/generation.json") or "null") or {}
        if summary.get("complete") and summary.get("config_key") == augment.config_key(cfg):
            digest = summary.get("rows_digest")
    cells = expand(cfg)
    done = read_cells(out)
    running = running_cells(out, now)
    ids = cell_ids(cfg, cells, digest, _recorded_labels(cfg, cells, out, output))
    return [done.get(i, {}).get("status") or ("running" if i in running else None) for i in ids]


def _recorded_labels(cfg: SweepConfig, cells: list[Cell], out: Output, output) -> list[str | None] | None:
    """The llm_annotated cells' label digests from a complete annotation, else None for each: an
    annotated cell counts as still to run until its rows are labeled."""
    if not cfg.needs_annotation:
        return None
    keys = cell_ids(cfg, [annotate.counterpart(c) for c in cells])
    wanted = [k for c, k in zip(cells, keys) if c.pool == ANNOTATED_POOL]
    if out.is_uri:  # the copy the sweep uploaded next to its results
        summary = json.loads(out.read_text(f"annotation/{annotate.SUMMARY}") or "null") or {}
        digests = annotate.recorded(cfg, wanted, summary=summary)
    else:
        digests = annotate.recorded(cfg, wanted, annotate.annotation_dir(cfg, output, False, Path()))
    digests = digests or {}
    return [digests.get(k) if c.pool == ANNOTATED_POOL else None for c, k in zip(cells, keys)]


def cell_progress(cfg: SweepConfig, output: str | Path, now: float | None = None) -> dict[str, int]:
    """How many of the sweep's cells in `output` are done, running now, failed and still to run."""
    status = cell_statuses(cfg, output, now)
    return {"cells": len(status), "done": status.count("ok"), "running": status.count("running"),
            "failed": status.count("failed"), "pending": sum(s is None for s in status)}
