"""The sweep: a sweep config -> the grid of cells -> Ray Tune trials -> trials.csv.

Layout of an output directory:
    sweep.yaml        the resolved sweep config (every default filled in)
    cells/<id>.json   one finished cell: its parameters and metrics (or its error)
    tune/             Ray Tune's own experiment directory
    cache/            cached frozen activations (unless `cache_dir` points elsewhere)
    trials.csv        one row per cell of this sweep, assembled from cells/

Each cell has a deterministic id from its parameters and the sweep's fixed settings, so a
finished cell is never run twice: running the sweep again skips it, and adding fractions,
strategies or seeds runs only the new cells.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from raysweep import augment, scoring, strategies
from raysweep.backbone import boundary_for, load_backbone
from raysweep.config import RecipeConfig, SelectionConfig, SweepConfig, to_dict
from raysweep.data import load_splits
from raysweep.embed import ensure_activation_sets, load_activations
from raysweep.train import Cell, TrialInputs, run_trial

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


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def read_cells(cells_dir: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(cells_dir.glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue  # a torn write from a killed process: the cell simply counts as not run
    return out


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
    """
    splits = load_splits(cfg.data, cfg.split)
    log(f"data: {splits.describe()}")
    texts = {"train": splits.train["text"].tolist(), "val": splits.val["text"].tolist()}
    if generated is not None:
        texts["train+generated"] = texts["train"] + generated["text"].astype(str).tolist()
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


def prepare_selection(cfg: SweepConfig, context: dict, output: Path, use_ray: bool, log=print) -> None:
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
                top = output / ("diagnostics" if source == "real" else "diagnostics-generated")
                where = top / (f"{encoder}-{pooling}".replace("/", "_") if several else "")
                scoring.write_diagnostics(views, cfg.selection.k, where, log=log)


def run_cell(cell: Cell, cid: str, context: dict, cells_dir: Path) -> dict:
    """Run one cell and record it under cells/. A failing trial is recorded, not raised:
    an exception in the trial is deterministic, so Tune retrying it would only repeat it."""
    start = time.perf_counter()
    record = {"cell_id": cid, "cell": asdict(cell)}
    try:
        metrics = run_trial(cell, trial_inputs(context, cell.variant, cell.pool), RecipeConfig(**context["recipe"]),
                            SelectionConfig(**context.get("selection", {})))
        metrics["wall_s"] = round(time.perf_counter() - start, 4)
        record.update(status="ok", metrics=metrics)
    except Exception as exc:  # noqa: BLE001 - recorded with its message, shown in trials.csv
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        record.update(status="failed", error=f"{type(exc).__name__}: {msg}", metrics={})
    _write_json(cells_dir / f"{cid}.json", record)
    return record


def _tune_trainable(config: dict, context: dict, cells: dict, cells_dir: str, threads: int) -> None:
    import torch
    from ray import tune

    torch.set_num_threads(threads)
    cid = config["cell_id"]
    record = run_cell(Cell(**cells[cid]), cid, context, Path(cells_dir))
    metrics = {k: v for k, v in record["metrics"].items() if k != "confusion"}
    tune.report({"status": record["status"], **metrics})


# --------------------------------------------------------------------------- running


def run_sweep(cfg: SweepConfig, output: str | Path, address: str | None = None, retry_failed: bool = False,
              use_ray_data: bool = True, log=print) -> pd.DataFrame:
    """Run every cell of `cfg` not yet finished in `output`; write and return trials.csv."""
    from ray import tune

    output = Path(output).resolve()
    cells_dir = output / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    (output / "sweep.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    cache_dir = Path(cfg.cache_dir).resolve() if cfg.cache_dir else output / "cache"

    generated = None
    if cfg.needs_generation:
        # Before the cell ids: an LLM pool's cells are keyed by the rows generated for them.
        gen_dir = generation_dir(cfg, output)
        generated = augment.reuse(cfg, gen_dir)
        if generated is None:
            init_ray(address)
            generated = augment.run_generation(cfg, gen_dir, cache_dir, use_ray=use_ray_data, log=log)
        else:
            log(f"generation: reusing {gen_dir} ({len(generated.rows)} rows)")

    cells = expand(cfg)
    ids = cell_ids(cfg, cells, generated.digest if generated else None)
    done = read_cells(cells_dir)
    skip = {"ok"} if retry_failed else {"ok", "failed"}
    todo = [(c, i) for c, i in zip(cells, ids) if done.get(i, {}).get("status") not in skip]
    log(f"sweep {cfg.name}: {len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run")

    if todo:
        init_ray(address)
        context = prepare(cfg, cache_dir, use_ray=use_ray_data, log=log,
                          generated=generated.rows if generated else None)
        context.update(selection=to_dict(cfg.selection), cache_dir=str(cache_dir))
        prepare_selection(cfg, context, output, use_ray=use_ray_data, log=log)
        res = cfg.resources
        several = len(cfg.encoders) * len(cfg.poolings) > 1
        names = {i: _trial_name(asdict(c), several) for c, i in todo}
        trainable = tune.with_resources(
            tune.with_parameters(_tune_trainable, context=context, cells={i: asdict(c) for c, i in todo},
                                 cells_dir=str(cells_dir),
                                 threads=max(1, int(res.cpus_per_trial))),
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
                storage_path=str(output / "tune"),
                failure_config=tune.FailureConfig(max_failures=3),  # a lost node retries its trials
                verbose=1,
            ),
        )
        tuner.fit()

    done = read_cells(cells_dir)
    table = results_table(cells, ids, done, cfg)
    table.to_csv(output / "trials.csv", index=False)
    missing = len(cells) - len(table)
    failed = int((table["status"] == "failed").sum())
    log(f"wrote {output / 'trials.csv'}: {len(table)} cells ({failed} failed, {missing} missing)")
    return table


def init_ray(address: str | None) -> None:
    import ray

    if not ray.is_initialized():
        # "local" starts a fresh Ray here; a bare init() would join any cluster on this machine.
        ray.init(address=address or "local", configure_logging=False, log_to_driver=True)


def cell_progress(cfg: SweepConfig, output: str | Path) -> dict[str, int]:
    """How many of the sweep's cells are done, failed and still to run in `output`.

    An LLM pool's cells count as pending until its generation directory is complete.
    """
    generated = augment.reuse(cfg, generation_dir(cfg, output)) if cfg.needs_generation else None
    done = read_cells(Path(output) / "cells")
    status = [done.get(i, {}).get("status") for i in cell_ids(cfg, expand(cfg), generated.digest if generated else None)]
    return {"cells": len(status), "done": status.count("ok"), "failed": status.count("failed"),
            "pending": sum(s is None for s in status)}


def _trial_name(cell: dict, with_encoder: bool = False) -> str:
    name = f"{cell['pool']}-{cell['strategy']}-{cell['freeze']}-x{cell['fraction']:g}-s{cell['seed']}"
    if with_encoder:
        name = f"{cell['encoder'].replace('/', '_')}-{cell['pooling']}-{name}"
    return name
