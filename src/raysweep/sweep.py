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

import hashlib
import itertools
import json
import logging
import os
import socket
import tempfile
import threading
import time
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from raysweep import augment, chosen, scoring, strategies
from raysweep.backbone import boundary_for, load_backbone
from raysweep.config import RecipeConfig, SelectionConfig, SweepConfig, to_dict
from raysweep.data import load_splits
from raysweep.embed import concatenate_entries, ensure_activation_sets, load_activations
from raysweep.encoders import cache_home
from raysweep.storage import Output
from raysweep.train import Cell, TrialInputs, run_trial_rows

# A trial rewrites its cells/<id>.running every HEARTBEAT_S; a marker older than STALE_S is a trial
# that died with its node (nothing else removes the marker then), so it no longer counts as running.
HEARTBEAT_S = 15.0
STALE_S = 4 * HEARTBEAT_S

PARAMS = ("pool", "strategy", "fraction", "freeze", "seed", "encoder", "pooling")
METRICS = ("val_accuracy", "val_macro_f1", "train_accuracy", "final_loss", "n_labeled", "n_added", "n_train",
           "select_s", "train_s", "eval_s", "trial_s", "wall_s")


def fixed_digest(cfg: SweepConfig) -> str:
    """Hash of everything a cell's result depends on besides its own parameters."""
    fixed = {"data": to_dict(cfg.data), "split": to_dict(cfg.split), "recipe": to_dict(cfg.recipe),
             "encoder": {"max_length": cfg.encoder.max_length}}  # name and pooling are in each cell
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:12]


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
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


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
    for cell, cid in zip(cells, ids):
        rec = done.get(cid)
        if rec is None:
            continue
        row = {"cell_id": cid, **asdict(cell), "rounds": cfg.selection.rounds,
               "status": rec.get("status", "ok"), "error": rec.get("error", "")}
        for m in METRICS:
            row[m] = rec.get("metrics", {}).get(m, np.nan)
        row["confusion"] = json.dumps(rec.get("metrics", {}).get("confusion")) if rec.get("metrics") else ""
        rows.append(row)
    return pd.DataFrame(rows, columns=["cell_id", *PARAMS, "rounds", "status", "error", *METRICS, "confusion"])


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
    if generated is not None and len(generated):
        texts["generated"] = generated["text"].astype(str).tolist()
    artifacts = {}
    for encoder in cfg.encoders:
        backbone = load_backbone(encoder)
        boundaries = {(pooling, f): boundary_for(f, backbone.num_layers, pooling, cfg.encoder.max_length)
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
        for (pooling, f), b in boundaries.items():
            artifacts[f"{encoder}|{pooling}|{f}"] = (str(paths["train"][b]), str(paths["val"][b]))
            if generated is not None:
                artifacts[f"{encoder}|{pooling}|{f}|generated"] = (str(paths["train+generated"][b]),
                                                                   str(paths["val"][b]))
    context = {
        "train_labels": splits.train["label"].to_numpy(),
        "val_labels": splits.val["label"].to_numpy(),
        "labeled": splits.labeled,
        "pool": splits.unlabeled,
        "num_classes": cfg.data.num_classes,
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
        train_path, val_path = context["artifacts"][variant]
        labels, rows = context["train_labels"], context["pool"]
    else:
        train_path, val_path = context["artifacts"][f"{variant}|generated"]
        extra = context["generated_labels"][pool]
        n_real = len(context["train_labels"])
        labels = np.concatenate([context["train_labels"], extra])
        rows = np.arange(n_real, n_real + len(extra))
    return TrialInputs(train_labels=labels, val_labels=context["val_labels"],
                       labeled=context["labeled"], pool=rows, train_acts=_activations(train_path),
                       val_acts=_activations(val_path), num_classes=context["num_classes"],
                       cache_dir=context.get("cache_dir"))


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
                                               mc="mc_probs" in needs, use_ray=use_ray, log=log)
                # One encoder and pooling (the study's case): diagnostics/ itself; else one folder each.
                # The real pool's are the study's diagnostic; the generated pool's go beside them.
                rel = ("diagnostics" if source == "real" else "diagnostics-generated") + (
                    f"/{encoder}-{pooling}".replace("/", "_") if several else "")
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
            except OSError:
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


def publish_cache(out: Output, context: dict, log=print) -> None:
    """A URI output: copy the activation entries the trials read, and the driver's scoring models
    and pool scores, from the driver's cache to <output>/cache/, where every node finds them."""
    cache_dir = Path(context["cache_dir"])
    entries = sorted({Path(p) for pair in context["artifacts"].values() for p in pair})
    copied = sum(out.upload_tree(p, f"cache/{p.name}") > 0 for p in entries)
    scores = out.upload_tree(cache_dir / "selection", "cache/selection") if (cache_dir / "selection").is_dir() else 0
    log(f"cache: {copied} of {len(entries)} activation entries and {scores} scoring files uploaded to "
        f"{out.show('cache')}")


def fetch_cache(out: Output, context: dict, variant: str) -> None:
    """Before a node's first trial of `variant`: download the activation entries it lacks from
    <output>/cache/ into the node's cache (the same path as the driver's), and the scoring files once."""
    for path in context["artifacts"][variant]:  # a local stat once the entry is here
        out.fetch_tree(f"cache/{Path(path).name}", Path(path))
    if out.spec not in _fetched:  # a listing of the store: once per process and output
        out.fetch_tree("cache/selection", Path(context["cache_dir"]) / "selection", marker=None)
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
            fetch_cache(out, context, Cell(**cells[cid]).variant)
        record = run_cell(Cell(**cells[cid]), cid, context, out)
    metrics = {k: v for k, v in record["metrics"].items() if k != "confusion"}
    tune.report({"status": record["status"], **metrics})


# --------------------------------------------------------------------------- running


def run_sweep(cfg: SweepConfig, output: str | Path, address: str | None = None, retry_failed: bool = False,
              use_ray_data: bool = True, log=print) -> pd.DataFrame:
    """Run every cell of `cfg` not yet finished in `output`; write and return trials.csv."""
    from ray import tune

    out = Output(output)
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
            init_ray(address)
            generated = augment.run_generation(cfg, gen_dir, cache_dir, use_ray=use_ray_data, log=log)
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
        init_ray(address)
        import ray

        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        if nodes > 1 and not out.is_uri:
            # Trials write cells/ and read cache/ on their own node: fine on one machine or a shared
            # filesystem, lost results and failed cells on a worker's private disk.
            log(f"warning: the output {out} is a local path and the cluster has {nodes} nodes: every node "
                f"must see this same directory (a shared filesystem); otherwise use an s3:// or gs:// URI")
        t0 = time.perf_counter()
        context = prepare(cfg, cache_dir, use_ray=use_ray_data, log=log,
                          generated=generated.rows if generated else None)
        context.update(selection=to_dict(cfg.selection), cache_dir=str(cache_dir), fixed=fixed_digest(cfg))
        chosen.write_rows_table(out, context["fixed"], context.pop("train_texts"), context["train_labels"],
                                context["labeled"])
        prepare_selection(cfg, context, out, use_ray=use_ray_data, log=log)
        if out.is_uri:
            publish_cache(out, context, log=log)
        for _, i in todo:  # failed records about to be re-run (--retry-failed): see _tune_trainable
            if i in done:
                out.delete(f"cells/{i}.json")
        log(f"prepared the trials' inputs in {time.perf_counter() - t0:.2f} s")
        res = cfg.resources
        several = len(cfg.encoders) * len(cfg.poolings) > 1
        names = {i: _trial_name(asdict(c), several) for c, i in todo}
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
                verbose=1,
            ),
        )
        t0 = time.perf_counter()
        # Tune's default CSV, JSON and TensorBoard loggers write three files per trial from the
        # driver, which shares the CPUs with the trials; cells/ and trials.csv already hold every
        # result, so they are off for this fit (restored after: the caller's process may run other Tune code).
        before = os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
        # Without those files Tune's result grid warns, per trial, that it found no result.json
        # or progress.csv: true and expected here, and alarming in a user's terminal.
        analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
        level = analysis_log.level
        analysis_log.setLevel(logging.ERROR)
        try:
            tuner.fit()
        finally:
            analysis_log.setLevel(level)
            if before is None:
                os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
            else:
                os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = before
        log(f"ran {len(todo)} trials in {time.perf_counter() - t0:.2f} s")

    done = read_cells(out)
    table = results_table(cells, ids, done, cfg)
    out.write_text("trials.csv", table.to_csv(index=False))
    missing = len(cells) - len(table)
    failed = int((table["status"] == "failed").sum())
    log(f"wrote {out.show('trials.csv')}: {len(table)} cells ({failed} failed, {missing} missing)")
    return table


def init_ray(address: str | None) -> None:
    import ray

    if not ray.is_initialized():
        # "local" starts a fresh Ray here; a bare init() would join any cluster on this machine.
        ray.init(address=address or "local", configure_logging=False, log_to_driver=True)


def cell_progress(cfg: SweepConfig, output: str | Path, now: float | None = None) -> dict[str, int]:
    """How many of the sweep's cells in `output` are done, running now, failed and still to run.

    An LLM pool's cells count as pending until its generation directory is complete.
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
    status = [done.get(i, {}).get("status") or ("running" if i in running else None) for i in ids]
    return {"cells": len(status), "done": status.count("ok"), "running": status.count("running"),
            "failed": status.count("failed"), "pending": sum(s is None for s in status)}


def _trial_name(cell: dict, with_encoder: bool = False) -> str:
    name = f"{cell['pool']}-{cell['strategy']}-{cell['freeze']}-x{cell['fraction']:g}-s{cell['seed']}"
    if with_encoder:
        name = f"{cell['encoder'].replace('/', '_')}-{cell['pooling']}-{name}"
    return name
