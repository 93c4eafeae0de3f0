"""The pools' preparation steps: what must run before their cells have ids.

    generate   an LLM writes rows and a teacher relabels them (augment.py): the LLM pools' cells
               depend on the rows' digest
    annotate   the LLM labels the real rows the strategies choose (annotation.py): each annotated
               cell depends on the digest of its rows' labels

Each step is run by the sweep (`generation`, `annotation`: reused when complete, else run now)
and read back from files alone for status (`recorded_generation`, `recorded_labels`): no Ray,
no paid call. A pool names its step (pools.Pool.step).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from raysweep import annotation, augment
from raysweep.config import SweepConfig
from raysweep.grid import Cell, cell_ids
from raysweep.layout import ANNOTATION, GENERATION, Layout
from raysweep.runtime import start_ray
from raysweep.storage import StorageError


@contextmanager
def paid_replies_in_storage(lay: Layout, rel: str, local: Path, fetch: bool, log):
    """A directory of paid LLM replies (`generation`, `annotation`) kept in a URI output's storage.

    Its reply store is appended to and fsynced call by call, so it lives on the driver's disk. The
    storage's copy is merged in first (`fetch`; files this disk already has are as new: kept), so a
    driver on a new head, or after a wiped cache, reuses or resumes what was paid for instead of
    paying again; and the directory goes up afterwards, also when the step stops short (Ctrl-C, the
    budget, a failed call), without hiding that step's own error. A local output: nothing to do.
    """
    out = lay.out
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


# --------------------------------------------------------------------------- generate


def generation(cfg: SweepConfig, lay: Layout, address: str | None, use_ray: bool, log) -> augment.Generated:
    """The LLM pools' generated rows: reused when complete, else generated (and relabeled) now."""
    gen_dir = lay.generation_dir
    # generation_dir: the user's own directory, the one to trust: uploaded, never overwritten.
    with paid_replies_in_storage(lay, GENERATION, gen_dir, fetch=not cfg.generation_dir, log=log):
        generated = augment.reuse(cfg, gen_dir)
        if generated is not None:
            log(f"generation: reusing {gen_dir} ({len(generated.rows)} rows)")
        else:
            start_ray(address)
            out = lay.out
            generated = augment.run_generation(cfg, gen_dir, lay.cache_dir, use_ray=use_ray, log=log,
                                               out=out if out.is_uri else None)
    return generated


def recorded_generation(cfg: SweepConfig, lay: Layout) -> str | None:
    """The generated rows' digest from a complete generation made by this config, else None."""
    if cfg.generation_dir or not lay.is_uri:
        generated = augment.reuse(cfg, lay.generation_dir)
        return generated.digest if generated else None
    # A URI output: the copy the sweep uploaded next to its results.
    summary = augment.GenerationSummary.parse(lay.out.read_text(f"{GENERATION}/{augment.SUMMARY}"))
    if summary is not None and summary.complete and summary.config_key == augment.config_key(cfg):
        return summary.rows_digest
    return None


# --------------------------------------------------------------------------- annotate


def _annotated_keys(cfg: SweepConfig, cells: list[Cell]) -> tuple[list[str], list[str]]:
    """(per cell, its counterpart's id; the ids of the annotated cells' counterparts)."""
    keys = cell_ids(cfg, [annotation.counterpart(c) for c in cells])
    return keys, [k for c, k in zip(cells, keys) if annotation.annotated(c)]


def annotation_labels(cfg: SweepConfig, cells: list[Cell], lay: Layout, prepared, inputs_for, log
                      ) -> list[str | None]:
    """Per cell, the digest of the LLM's labels of the rows it adds (None for a cell of another
    pool): from a complete annotation directory, else by labeling them now, which needs the
    trials' inputs (`prepared()`, then `inputs_for(context, cell)`) to know which rows the
    counterparts choose."""
    keys, wanted = _annotated_keys(cfg, cells)
    ann_dir = lay.annotation_dir
    with paid_replies_in_storage(lay, ANNOTATION, ann_dir, fetch=True, log=log):
        digests = annotation.recorded(cfg, wanted, ann_dir)
        if digests is None:
            context = prepared()
            digests = annotation.annotate_sweep(cfg, cells, keys, lambda c: inputs_for(context, c), ann_dir,
                                                say=log).digests
        else:
            log(f"annotation: reusing {ann_dir} ({len(set(wanted))} cells' labels)")
    return [digests[k] if annotation.annotated(c) else None for c, k in zip(cells, keys)]


def recorded_labels(cfg: SweepConfig, cells: list[Cell], lay: Layout) -> list[str | None] | None:
    """The annotated cells' label digests from a complete annotation, else None for each: an
    annotated cell counts as still to run until its rows are labeled."""
    if not cfg.needs_annotation:
        return None
    keys, wanted = _annotated_keys(cfg, cells)
    if lay.is_uri:  # the copy the sweep uploaded next to its results
        summary = json.loads(lay.out.read_text(f"{ANNOTATION}/{annotation.SUMMARY}") or "null") or {}
        digests = annotation.recorded(cfg, wanted, summary=summary)
    else:
        digests = annotation.recorded(cfg, wanted, lay.annotation_dir)
    digests = digests or {}
    return [digests.get(k) if annotation.annotated(c) else None for c, k in zip(cells, keys)]
