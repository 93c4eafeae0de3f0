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

import itertools
import json
import logging
import os
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from raysweep import augment, chosen, console, scoring, strategies
from raysweep.backbone import boundary_for, load_backbone
from raysweep.config import RecipeConfig, SelectionConfig, SweepConfig, parse_lora, to_dict
from raysweep.data import load_splits
from raysweep.embed import concatenate_entries, ensure_activation_sets, load_activations
from raysweep.encoders import cache_home
from raysweep.hashing import json_digest
from raysweep.runtime import start_ray
from raysweep.storage import Output, StorageError, fetch_entry, node_lock, refuse_credentials
from raysweep.tasks import Task
from raysweep.train import Cell, TrialInputs, run_trial_rows

# A trial rewrites its cells/<id>.running every HEARTBEAT_S; a marker older than STALE_S is a trial
# that died with its node (nothing else removes the marker then), so it no longer counts as running.
HEARTBEAT_S = 15.0
STALE_S = 4 * HEARTBEAT_S

PARAMS = ("pool", "strategy", "fraction", "freeze", "seed", "encoder", "pooling")
METRICS = ("val_accuracy", "val_macro_f1", "train_accuracy", "final_loss", "n_labeled", "n_added", "n_train",
           "trainable_params", "select_s", "train_s", "eval_s", "trial_s", "wall_s")
TEST_METRICS = ("test_accuracy", "test_macro_f1")  # columns only when the data has a test split


def metric_columns(task) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(trials.csv's metric columns, its test columns) for a `tasks.Task`: METRICS / TEST_METRICS
    for SST-5's task, the task's own metrics (tasks.Task.metrics) in their place for the others."""
    val = tuple(f"val_{m}" for m in task.metrics)
    return (*val, f"train_{task.train_metric}", *METRICS[3:]), tuple(f"test_{m}" for m in task.metrics)


def fixed_digest(cfg: SweepConfig) -> str:
    """Hash of everything a cell's result depends on besides its own parameters."""
    # data.keyed() and cfg.max_length are to_dict(cfg.data) and encoder.max_length for a single-sentence
    # classification sweep: its ids are the ones it had before pair and regression tasks.
    fixed = {"data": cfg.data.keyed(), "split": to_dict(cfg.split), "recipe": to_dict(cfg.recipe),
             "encoder": {"max_length": cfg.max_length}}  # name and pooling are in each cell
    return json_digest(fixed, 12)


def selection_settings(strategy: str, selection: SelectionConfig) -> dict:
    """The `selection:` settings a cell's result depends on: none for a strategy without a model
    (random), else the rounds, the strategy's own options (sqbc's k) and bald's MC samples."""
    s = strategies.get(strategy)
    if not s.needs:
        return {}
    out = {"rounds": selection.rounds, **{o: getattr(selection, o) for o in s.options}}
    if "mc_probs" in s.needs:
        out["mc_samples"] = selection.mc_samples
    return out


def cell_id(cell: Cell, fixed: str, settings: dict | None = None, generated: str | None = None) -> str:
    key = {**asdict(cell), "fraction": float(cell.fraction), "fixed": fixed}
    if settings:  # left out when empty, so random cells keep the ids they had before `selection:`
        key["selection"] = settings
    if cell.pool != "real":  # an LLM pool's cell depends on the generated rows and their labels
        key["generated"] = generated
    return json_digest(key, 16)


def cell_ids(cfg: SweepConfig, cells: list[Cell], generated: str | None = None) -> list[str]:
    """The ids of `cells`; `generated` is the digest of the generated rows (LLM pools only)."""
    fixed = fixed_digest(cfg)
    return [cell_id(c, fixed, selection_settings(c.strategy, cfg.selection), generated) for c in cells]


def generation_dir(cfg: SweepConfig, output: str | Path) -> Path:
    """Where the sweep's generated rows live: `generation_dir:`, else <output>/generation."""
    return Path(cfg.generation_dir).resolve() if cfg.generation_dir else Path(output).resolve() / "generation"


def expand(cfg: SweepConfig) -> list[Cell]:
    """Every combination of the compared parameters, times every seed."""
    c = cfg.compare
    return [Cell(pool, strategy, float(fraction), freeze, int(seed), encoder, pooling)
            for encoder, pooling, pool, strategy, freeze, fraction, seed in itertools.product(
                cfg.encoders, cfg.poolings, c.pool, c.strategy, c.freeze, c.fraction, cfg.replicate.seed)]


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


# --------------------------------------------------------------------------- cell results on disk


def read_cells(out: Output) -> dict[str, dict]:
    out_cells = {}
    for entry in out.list("cells", ".json"):
        try:
            out_cells[entry.name[: -len(".json")]] = json.loads(out.read_text(f"cells/{entry.name}") or "")
        except json.JSONDecodeError:
            continue  # a torn write from a killed process: the cell simply counts as not run
    return out_cells


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def running_cells(out: Output, now: float | None = None) -> set[str]:
    """Ids of the cells a live trial is running: a cells/<id>.running marker without a
    cells/<id>.json, rewritten less than STALE_S ago, and (when it was written on this machine)
    whose process is still alive: a trial killed with its node leaves its marker behind."""
    now = time.time() if now is None else now
    finished = {e.name[: -len(".json")] for e in out.list("cells", ".json")}
    host = socket.gethostname()
    live = set()
    for entry in out.list("cells", ".running"):
        cid = entry.name[: -len(".running")]
        if cid in finished or entry.mtime is None or now - entry.mtime > STALE_S:
            continue
        try:
            marker = json.loads(out.read_text(f"cells/{entry.name}") or "")
        except json.JSONDecodeError:
            marker = {}  # being rewritten as we read it: a heartbeat, so alive
        if marker.get("host") == host and isinstance(marker.get("pid"), int) and not _pid_alive(marker["pid"]):
            continue
        live.add(cid)
    return live


def results_table(cells: list[Cell], ids: list[str], done: dict[str, dict], cfg: SweepConfig) -> pd.DataFrame:
    rows = []
    records = [done[cid] for cid in ids if cid in done]
    columns, test_columns = metric_columns(cfg.task)
    n_val = len(cfg.task.metrics)
    has_test = any(m in (rec.get("metrics") or {}) for rec in records for m in test_columns)
    metrics = (*columns[:n_val], *test_columns, *columns[n_val:]) if has_test else columns
    for cell, cid in zip(cells, ids):
        rec = done.get(cid)
        if rec is None:
            continue
        row = {"cell_id": cid, **asdict(cell), "rounds": cfg.selection.rounds,
               "status": rec.get("status", "ok"), "error": rec.get("error", "")}
        for m in metrics:
            row[m] = rec.get("metrics", {}).get(m, np.nan)
        row["confusion"] = json.dumps(rec.get("metrics", {}).get("confusion")) if rec.get("metrics") else ""
        rows.append(row)
    return pd.DataFrame(rows, columns=["cell_id", *PARAMS, "rounds", "status", "error", *metrics, "confusion"])


# --------------------------------------------------------------------------- preparing shared inputs


def prepare(cfg: SweepConfig, cache_dir: Path, use_ray: bool, log=print,
            generated: pd.DataFrame | None = None) -> dict:
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
    context = {
        "train_labels": splits.train["label"].to_numpy(),
        "val_labels": splits.val["label"].to_numpy(),
        "test_labels": splits.test["label"].to_numpy() if splits.test is not None else None,
        "labeled": splits.labeled,
        "pool_rows": splits.unlabeled,
        "num_classes": cfg.data.num_classes,
        "task": asdict(cfg.task),  # tasks.Task: what the trials learn and report
        "artifacts": artifacts,  # by Cell.variant (+ "|generated" for the LLM pools)
        "recipe": to_dict(cfg.recipe),
        "train_texts": texts["train"],  # for chosen/'s rows table; run_sweep takes it out before the trials
    }
    if generated is not None:
        context["generated_labels"] = {"llm": generated["llm_label"].to_numpy(dtype=np.int64),
                                       "llm_teacher": generated["teacher_label"].to_numpy(dtype=np.int64)}
    return context


@lru_cache(maxsize=8)
def _activations(path: str):
    return load_activations(path)


def trial_inputs(context: dict, variant: str, pool: str = "real") -> TrialInputs:
    """The inputs of the trials of one `Cell.variant` (encoder|pooling|freeze) and pool.

    An LLM pool's trials see the real train rows followed by the generated rows, labeled by
    the LLM (`llm`) or the teacher (`llm_teacher`); they add rows from the generated part only.
    """
    if pool == "real":
        train_path, val_path, *test_path = context["artifacts"][variant]
        labels, rows = context["train_labels"], context["pool_rows"]
    else:
        train_path, val_path, *test_path = context["artifacts"][f"{variant}|generated"]
        extra = context["generated_labels"][pool]
        n_real = len(context["train_labels"])
        labels = np.concatenate([context["train_labels"], extra])
        rows = np.arange(n_real, n_real + len(extra))
    return TrialInputs(train_labels=labels, val_labels=context["val_labels"],
                       labeled=context["labeled"], pool_rows=rows, train_acts=_activations(train_path),
                       val_acts=_activations(val_path), num_classes=context["num_classes"],
                       task=Task(**context["task"]) if context.get("task") else None,
                       cache_dir=context.get("cache_dir"), lora=parse_lora(variant.rsplit("|", 1)[-1]),
                       test_labels=context.get("test_labels"),
                       test_acts=_activations(test_path[0]) if test_path else None)


def prepare_selection(cfg: SweepConfig, context: dict, out: Output, use_ray: bool, log=print) -> None:
    """Train the scoring model of every (freeze, seed) and score the pool under it, once, before
    any trial; then write the entropy / SQBC diagnostics under `output`/diagnostics.

    Trials find these in the cache, so the fractions and strategies of a (freeze, seed) share
    one scoring pass. Doing it here gives Ray Data the whole cluster: inside a trial its actors
    would wait for the CPUs the trials themselves hold.
    """
    needs = frozenset().union(*(strategies.get(s).needs for s in cfg.compare.strategy))
    if not needs:
        return
    jobs = [(f, s) for f in cfg.compare.freeze for s in cfg.replicate.seed]
    several = len(cfg.encoders) * len(cfg.poolings) > 1
    # The LLM pools share one scoring pass: the scoring model trains on `labeled` alone, so the
    # pool's labels (the LLM's or the teacher's) do not change what it says about the rows.
    sources = (["real"] if "real" in cfg.compare.pool else []) + (["llm"] if cfg.needs_generation else [])
    for source in sources:
        for encoder in cfg.encoders:
            for pooling in cfg.poolings:
                inputs = {f: trial_inputs(context, f"{encoder}|{pooling}|{f}", source) for f in cfg.compare.freeze}
                views = scoring.prepare_scores(jobs, inputs, RecipeConfig(**context["recipe"]), cfg.selection,
                                               mc="mc_probs" in needs, use_ray=use_ray, log=log,
                                               out=out if out.is_uri else None)
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
    """Writes cells/<id>.running when a trial starts and again every HEARTBEAT_S until it stops:
    `raysweep status` counts the cell as running while the marker is fresh."""

    def __init__(self, out: Output, cid: str):
        self.out, self.rel = out, f"cells/{cid}.running"
        self.text = json.dumps({"cell_id": cid, "host": socket.gethostname(), "pid": os.getpid(),
                                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                self.out.write_text(self.rel, self.text)
            except StorageError:
                pass  # a missed beat on a flaky store: the next one, or the result, follows

    def __enter__(self):
        self.out.write_text(self.rel, self.text)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        if exc[0] is None:  # the result is written: the marker has served its purpose
            self.out.delete(self.rel)


def run_cell(cell: Cell, cid: str, context: dict, out: Output) -> dict:
    """Run one cell and record it under cells/. A failing trial is recorded, not raised:
    an exception in the trial is deterministic, so Tune retrying it would only repeat it."""
    with _Heartbeat(out, cid):
        start = time.perf_counter()
        record = {"cell_id": cid, "cell": asdict(cell)}
        try:
            inputs = trial_inputs(context, cell.variant, cell.pool)
            metrics, rows = run_trial_rows(cell, inputs, RecipeConfig(**context["recipe"]),
                                           SelectionConfig(**context.get("selection", {})))
            # Before the cell's record: a cell that counts as finished has its chosen rows on record.
            chosen.write_cell(out, cid, rows, inputs.train_labels, context.get("fixed"))
            metrics["wall_s"] = round(time.perf_counter() - start, 4)
            record.update(status="ok", metrics=metrics)
        except Exception as exc:  # noqa: BLE001 - recorded with its message, shown in trials.csv
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            record.update(status="failed", error=f"{type(exc).__name__}: {msg}", metrics={})
        out.write_text(f"cells/{cid}.json", json.dumps(record, indent=1))
    return record


_fetched: set[str] = set()  # outputs whose scoring files this process has fetched (see fetch_cache)


def publish_entries(out: Output, context: dict, log=print) -> None:
    """A URI output: copy the activation entries the trials read from the driver's cache to
    <output>/cache/, where every node finds them. Before any remote work: the scoring tasks and
    actors of `prepare_selection` read them too."""
    entries = sorted({Path(p) for pair in context["artifacts"].values() for p in pair})
    copied = sum(out.upload_tree(p, f"cache/{p.name}") > 0 for p in entries)
    log(f"cache: {copied} of {len(entries)} activation entries uploaded to {out.show('cache')}")


def publish_selection(out: Output, context: dict, log=print) -> None:
    """A URI output: copy the scoring models and pool scores (all in the driver's cache: remote
    training returns its states to the driver) to <output>/cache/selection/ for the trials."""
    selection = Path(context["cache_dir"]) / "selection"
    if selection.is_dir():
        log(f"cache: {out.upload_tree(selection, 'cache/selection')} scoring files uploaded to "
            f"{out.show('cache/selection')}")


def artifact_key(cell: Cell) -> str:
    """The key of `context["artifacts"]` a cell's trial reads: an LLM pool's trials read the
    real train rows followed by the generated ones."""
    return cell.variant if cell.pool == "real" else f"{cell.variant}|generated"


def fetch_cache(out: Output, context: dict, cell: Cell) -> None:
    """Before a node's first trial of `cell`'s inputs: download the activation entries it lacks from
    <output>/cache/ into the node's cache (the same path as the driver's), and the scoring files
    once; each under a per-node lock, so the trials of one node download nothing twice."""
    for path in context["artifacts"][artifact_key(cell)]:
        fetch_entry(out, Path(path))
    if out.spec not in _fetched:  # a listing of the store: once per process and output
        selection = Path(context["cache_dir"]) / "selection"
        with node_lock(selection):
            out.fetch_tree("cache/selection", selection, marker=None)
        _fetched.add(out.spec)


def _tune_trainable(config: dict, context: dict, cells: dict, output: str, threads: int) -> None:
    import torch
    from ray import tune

    torch.set_num_threads(threads)
    cid = config["cell_id"]
    out = Output(output)
    # Tune retries a trial whose node died. If the cell's result was written before the node went
    # (only the report back to Tune was lost), report that result instead of running the cell again.
    # The driver removed every record it meant to re-run before starting, so a record here is this run's.
    earlier = out.read_text(f"cells/{cid}.json")
    try:
        record = json.loads(earlier) if earlier else None
    except json.JSONDecodeError:
        record = None  # torn by the node's death: run the cell again
    if record is None:
        if out.is_uri:
            fetch_cache(out, context, Cell(**cells[cid]))
        record = run_cell(Cell(**cells[cid]), cid, context, out)
    metrics = {k: v for k, v in record["metrics"].items() if k != "confusion"}
    tune.report({"status": record["status"], **metrics})


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
    from ray import tune

    check_output(output)
    out = Output(output)
    if not out.is_uri and not shared_output and address not in (None, "local"):
        check_local_output(out, address)
    out.mkdir("cells")
    out.write_text("sweep.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    if cfg.cache_dir:
        cache_dir = Path(cfg.cache_dir).resolve()
    elif out.is_uri:
        # Trials memory-map the cache, so it must be on a disk: each node's own, filled from <output>/cache/.
        cache_dir = cache_home() / "cache"
    else:
        cache_dir = out.local_dir / "cache"

    generated = None
    if cfg.needs_generation:
        # Before the cell ids: an LLM pool's cells are keyed by the rows generated for them.
        # The response store is appended to and fsynced call by call, so it lives on a disk: with
        # a URI output, beside the local cache, copied to <output>/generation/ once complete.
        gen_dir = (generation_dir(cfg, output) if cfg.generation_dir or not out.is_uri
                   else cache_dir.parent / "generation" / cfg.name)
        generated = augment.reuse(cfg, gen_dir)
        if generated is None:
            start_ray(address)
            generated = augment.run_generation(cfg, gen_dir, cache_dir, use_ray=use_ray_data, log=log,
                                               out=out if out.is_uri else None)
        else:
            log(f"generation: reusing {gen_dir} ({len(generated.rows)} rows)")
        if out.is_uri:
            out.upload_tree(gen_dir, "generation", skip_existing=False)

    cells = expand(cfg)
    ids = cell_ids(cfg, cells, generated.digest if generated else None)
    done = read_cells(out)
    skip = {"ok"} if retry_failed else {"ok", "failed"}
    todo = [(c, i) for c, i in zip(cells, ids) if done.get(i, {}).get("status") not in skip]
    log(f"sweep {cfg.name}: {len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run")

    if todo:
        start_ray(address)
        t0 = time.perf_counter()
        context = prepare(cfg, cache_dir, use_ray=use_ray_data, log=log,
                          generated=generated.rows if generated else None)
        context.update(selection=to_dict(cfg.selection), cache_dir=str(cache_dir), fixed=fixed_digest(cfg))
        chosen.write_rows_table(out, context["fixed"], context.pop("train_texts"), context["train_labels"],
                                context["labeled"])
        # Publish before the first remote work that reads the entries, collect after the work
        # that makes scoring models and scores (their states come back to this driver's cache).
        if out.is_uri:
            publish_entries(out, context, log=log)
        prepare_selection(cfg, context, out, use_ray=use_ray_data, log=log)
        if out.is_uri:
            publish_selection(out, context, log=log)
        for _, i in todo:  # failed records about to be re-run (--retry-failed): see _tune_trainable
            if i in done:
                out.delete(f"cells/{i}.json")
        log(f"prepared the trials' inputs in {time.perf_counter() - t0:.2f} s")
        res = cfg.resources
        several = len(cfg.encoders) * len(cfg.poolings) > 1
        names = {i: _trial_name(asdict(c), several) for c, i in todo}
        bar = console.progress(len(todo), "trials", "trials")
        trainable = tune.with_resources(
            tune.with_parameters(_tune_trainable, context=context, cells={i: asdict(c) for c, i in todo},
                                 output=out.spec, threads=max(1, int(res.cpus_per_trial))),
            {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            # The grid is the list of cell ids still to run (after a resume it is no cross product);
            # the progress table shows each trial's cell id, the name of its file under cells/.
            param_space={"cell_id": tune.grid_search([i for _, i in todo])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=res.max_concurrent or None,
                reuse_actors=True,  # a worker keeps its loaded activations between trials
                trial_name_creator=lambda t: names[t.config["cell_id"]],
                trial_dirname_creator=lambda t: names[t.config["cell_id"]],
            ),
            run_config=tune.RunConfig(
                name=cfg.name,
                # A URI: Tune writes through the same pyarrow filesystem (query options such as
                # endpoint_override included), so its path is given without the scheme.
                storage_path=out.path("tune") if out.is_uri else str(out.local_dir / "tune"),
                storage_filesystem=out.fs if out.is_uri else None,
                failure_config=tune.FailureConfig(max_failures=3),  # a lost node retries its trials
                verbose=1,  # Tune's trial tables: in the log file when the CLI keeps one (console.py)
                callbacks=[_trial_progress(bar)],
            ),
        )
        t0 = time.perf_counter()
        # Without Tune's loggers (below) its result grid warns, per trial, that it found no
        # result.json or progress.csv: true and expected here, and alarming in a user's terminal.
        analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
        level = analysis_log.level
        analysis_log.setLevel(logging.ERROR)
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
        log(f"ran {len(todo)} trials in {time.perf_counter() - t0:.2f} s")

    done = read_cells(out)
    table = results_table(cells, ids, done, cfg)
    out.write_text("trials.csv", table.to_csv(index=False))
    missing = len(cells) - len(table)
    failed = int((table["status"] == "failed").sum())
    log(f"wrote {out.show('trials.csv')}: {len(table)} cells ({failed} failed, {missing} missing)")
    return table


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


def _trial_progress(bar):
    """A Tune callback that moves the trials' progress bar as each trial ends (one class per
    call: Tune is imported only when a sweep runs)."""
    from ray.tune import Callback

    class TrialProgress(Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            bar.update(1)

        def on_trial_error(self, iteration, trials, trial, **info):
            bar.update(1)

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
    done = read_cells(out)
    running = running_cells(out, now)
    ids = cell_ids(cfg, expand(cfg), digest)
    return [done.get(i, {}).get("status") or ("running" if i in running else None) for i in ids]


def cell_progress(cfg: SweepConfig, output: str | Path, now: float | None = None) -> dict[str, int]:
    """How many of the sweep's cells in `output` are done, running now, failed and still to run."""
    status = cell_statuses(cfg, output, now)
    return {"cells": len(status), "done": status.count("ok"), "running": status.count("running"),
            "failed": status.count("failed"), "pending": sum(s is None for s in status)}


def _trial_name(cell: dict, with_encoder: bool = False) -> str:
    name = f"{cell['pool']}-{cell['strategy']}-{cell['freeze']}-x{cell['fraction']:g}-s{cell['seed']}"
    if with_encoder:
        name = f"{cell['encoder'].replace('/', '_')}-{cell['pooling']}-{name}"
    return name
