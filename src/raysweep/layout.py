"""Where everything of a sweep lives under its output: the one owner of those paths.

    DIR/sweep.yaml           the resolved sweep config
    DIR/trials.csv           one row per cell, assembled from cells/
    DIR/cells/<id>.json      a finished cell's record; <id>.running while a trial runs it
    DIR/chosen/              the rows each cell added (chosen.py)
    DIR/predictions/         per-row predictions beside the cell records
    DIR/cache/               content-addressed activations, models and scores (`cache_dir:` moves it)
    DIR/generation/          the LLM pools' generated rows (`generation_dir:` moves it)
    DIR/annotation/          the LLM's labels of the rows `llm_annotated` adds
    DIR/diagnostics/         entropy vs SQBC of the pool under each scoring model
    DIR/logs/                each command's full log
    DIR/tune/                Ray Tune's experiment directory

DIR may be a storage URI. Then the cache and the LLM steps' reply stores (appended to and
fsynced call by call) live on the driver's disk under ~/.cache/raysweep, and are copied to DIR.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raysweep.encoders import cache_home, shared_cache
from raysweep.storage import Output, is_uri

CELLS, CHOSEN, PREDICTIONS, CACHE, GENERATION, ANNOTATION, LOGS, TUNE = (
    "cells", "chosen", "predictions", "cache", "generation", "annotation", "logs", "tune")
SWEEP_FILE, TRIALS = "sweep.yaml", "trials.csv"


def cell_record(cid: str) -> str:
    return f"{CELLS}/{cid}.json"


def cell_marker(cid: str) -> str:
    return f"{CELLS}/{cid}.running"


def diagnostics(source: str, variant: str | None = None) -> str:
    """The diagnostics folder of a pool's scoring pass (`real`, or the generated rows'); one
    folder per encoder and pooling (`variant`, already made path-safe) when a sweep has several."""
    rel = "diagnostics" if source == "real" else "diagnostics-generated"
    return f"{rel}/{variant}" if variant else rel


@dataclass(frozen=True)
class Layout:
    """The paths of one sweep (`name`, its `cache_dir:` and `generation_dir:`) under `output`."""

    output: str
    name: str
    cache_setting: str | None = None  # the sweep's `cache_dir:`
    generation_setting: str | None = None  # the sweep's `generation_dir:`

    @classmethod
    def of(cls, cfg, output: str | Path) -> Layout:
        return cls(str(output), cfg.name, cfg.cache_dir, cfg.generation_dir)

    @property
    def out(self) -> Output:
        return Output(self.output)

    @property
    def is_uri(self) -> bool:
        return is_uri(self.output)  # without opening the store (Output would reach it)

    @property
    def local(self) -> Path:
        """The output directory on this disk (a local output only)."""
        return self.out.local_dir

    @property
    def cache_dir(self) -> Path:
        if self.cache_setting:
            return Path(self.cache_setting).resolve()
        if self.is_uri:
            # Trials memory-map the cache, so it must be on a disk: each node's own, filled from DIR/cache/.
            return shared_cache()
        return self.local / CACHE

    @property
    def generation_dir(self) -> Path:
        """Where the generated rows are read and written on this disk. `generation_dir:` is the
        user's own directory; a URI output's is a local one beside the cache, copied to DIR/generation."""
        if self.generation_setting:
            return Path(self.generation_setting).resolve()
        if self.is_uri:
            return self.cache_dir.parent / GENERATION / self.name
        return Path(self.output).resolve() / GENERATION

    @property
    def annotation_dir(self) -> Path:
        if self.is_uri:
            return self.cache_dir.parent / ANNOTATION / self.name
        return Path(self.output).resolve() / ANNOTATION

    def log_file(self, filename: str) -> Path:
        """A command's log on this disk: DIR/logs/, or for a URI output ~/.cache/raysweep/logs/ (a
        driver writes it line by line, which a store cannot append to; copied to DIR/logs/ at the end)."""
        return cache_home() / LOGS / filename if self.is_uri else self.local / LOGS / filename


def generation_layout(cfg, gen_dir: str | Path) -> Layout:
    """The layout `raysweep generate --output GEN_DIR` writes into. A directory named `generation`
    is a sweep output's own (`run --output DIR` reads DIR/generation), so it shares that output's
    cache: the teacher and the activations generation caches are the ones the run then finds.
    Any other directory uses `cache_dir:`, else this machine's shared cache: a cache of its own
    would encode every real row again for each new directory, to relabel a handful of rows."""
    gen_dir = Path(gen_dir).resolve()
    if gen_dir.name == GENERATION:
        return Layout(str(gen_dir.parent), cfg.name, cfg.cache_dir, str(gen_dir))
    return Layout(str(gen_dir), cfg.name, cfg.cache_dir or str(shared_cache()), str(gen_dir))
