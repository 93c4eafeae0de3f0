"""The sweep's shared inputs: what every trial reads, prepared once before any trial runs.

    prepare(cfg, cache_dir) -> TrialContext   the data, and every activation cache the grid needs
    trial_inputs(context, variant, pool)       one variant and pool's TrialInputs
    prepare_selection(cfg, context, out)       every scoring model and pool score, once

A TrialContext is pickled once into Tune: small arrays and the paths of the cached activations,
never the activations themselves (a trial memory-maps them).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from raysweep import layout, pools, scoring, strategies
from raysweep.backbone import boundary_for, load_backbone
from raysweep.config import CleaningConfig, RecipeConfig, ResourcesConfig, SelectionConfig, SweepConfig
from raysweep.costs import Prices
from raysweep.freeze import parse as parse_mode
from raysweep.data import load_splits
from raysweep.embed import concatenate_entries, ensure_activation_sets, load_activations
from raysweep.grid import Variant, fixed_digest
from raysweep.storage import Output
from raysweep.tasks import Task
from raysweep.train import TrialInputs


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



@dataclass
class TrialContext:
    """What every trial of a sweep reads (pickled once into Tune): small arrays and the paths of
    the cached activations, never the activations themselves."""

    train_labels: np.ndarray
    val_labels: np.ndarray
    labeled: np.ndarray  # positions into train
    pool_rows: np.ndarray  # the real pool: positions into train
    num_classes: int
    artifacts: dict[Variant, tuple[str, ...]]  # (train, val[, test]) entry paths by variant
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
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)  # llm_cleaned / llm_routed
    prices: Prices | None = None  # what each cell's added labels cost (costs.py); None: not priced



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
            variant = Variant(encoder, pooling, f)
            artifacts[variant] = (str(paths["train"][b]), *held_out(b))
            if generated is not None:
                artifacts[variant.with_generated()] = (str(paths["train+generated"][b]), *held_out(b))
    generated_labels = None
    if generated is not None:  # every generated pool's labels of the rows, e.g. the LLM's or the teacher's
        generated_labels = {p.name: generated[p.label_column].to_numpy(dtype=np.int64)
                            for p in pools.REGISTRY.values() if p.step == "generate"}
    return TrialContext(
        train_labels=splits.train["label"].to_numpy(), val_labels=splits.val["label"].to_numpy(),
        labeled=splits.labeled, pool_rows=splits.unlabeled, num_classes=cfg.data.num_classes, artifacts=artifacts,
        recipe=cfg.recipe, selection=cfg.selection, resources=cfg.resources, cache_dir=str(cache_dir),
        fixed=fixed_digest(cfg), test_labels=splits.test["label"].to_numpy() if splits.test is not None else None,
        generated_labels=generated_labels, train_texts=texts["train"], task=cfg.task,
        seeds=tuple(cfg.replicate.seed), cleaning=cfg.cleaning)


@lru_cache(maxsize=8)
def _activations(path: str):
    return load_activations(path)


def trial_inputs(context: TrialContext, variant: Variant, pool: str = "real") -> TrialInputs:
    """The inputs of the trials of one variant and pool: the pool says which rows and labels."""
    found = pools.get(pool).rows(context, variant)
    train_path, val_path, *test_path = found.artifacts
    return TrialInputs(train_labels=found.train_labels, val_labels=context.val_labels,
                       labeled=context.labeled, pool_rows=found.pool_rows, train_acts=_activations(train_path),
                       val_acts=_activations(val_path), num_classes=context.num_classes,
                       cache_dir=context.cache_dir, freeze=parse_mode(variant.freeze),
                       test_labels=context.test_labels,
                       test_acts=_activations(test_path[0]) if test_path else None,
                       select_labels=found.select_labels, task=context.task, seeds=context.seeds,
                       cleaning=context.cleaning)


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
    # Pools whose rows one scoring pass ranks share it (pools.Pool.scoring_source).
    sources = sorted({pools.get(p).scoring_source for p in cfg.compare.pool}, key=lambda s: s != "real")
    # The diagnostic's line is for sweeps that compare entropy or SQBC; its files are always written.
    say = log if {"entropy", "sqbc"} & set(cfg.compare.strategy) else None
    for source in sources:
        for encoder in cfg.encoders:
            for pooling in cfg.poolings:
                inputs = {f: trial_inputs(context, Variant(encoder, pooling, f), source) for f in cfg.compare.freeze}
                views = scoring.prepare_scores(jobs, inputs, context.recipe, cfg.selection,
                                               mc="mc_probs" in needs, use_ray=use_ray, log=log,
                                               out=out if out.is_uri else None, resources=resources)
                # One encoder and pooling (the study's case): diagnostics/ itself; else one folder each.
                # The real pool's are the study's diagnostic; the generated pool's go beside them.
                rel = layout.diagnostics(source, f"{encoder}-{pooling}".replace("/", "_") if several else None)
                if cfg.task.regression:  # the diagnostic correlates entropy, which a score has not
                    log("diagnostics: entropy vs SQBC is a classification diagnostic; skipped for a regression task")
                    continue
                if not out.is_uri:
                    scoring.write_diagnostics(views, cfg.selection.k, out.local_dir / rel, log=say)
                    continue
                with tempfile.TemporaryDirectory() as staging:  # written here, then copied to the URI
                    table = scoring.write_diagnostics(views, cfg.selection.k, staging)
                    if say is not None:
                        say(scoring.diagnostic_line(table, out.show(rel)))
                    out.upload_tree(Path(staging), rel, skip_existing=False)
