"""The pools a cell adds rows from, behind one registry (as strategies/ are).

A pool answers, for the sweep's stages:
    step          the preparation its cells wait for: "generate", "annotate" or None (steps.py runs it)
    id_key        what its cell ids depend on beyond the cell and the fixed settings (grid.cell_id):
                  None, the generated rows' digest ("generated") or its rows' LLM labels ("labels")
    reads(variant)           the activations its trials read: the real rows', or real + generated
    rows(context, variant)   the activations, labels and pool positions a trial of it reads
    train_rows(cell, inputs, added, recipe)   what a cell trains on once it has chosen rows: labeled
                             + added with their labels, unless the pool changes them (llm_cleaned)
    settings(cfg)            the config its cells depend on beyond the fixed settings: in their ids
    size(context)            how many rows it offers; `planned_size` before any data is encoded
    scoring_source           whose scoring pass ranks its rows (inputs.prepare_selection)
    labeled_by               who labeled the rows it adds, for their price (costs.py): "human" (gold
                             a person is paid for), "llm_generate" (rows and labels an LLM wrote) or
                             "llm_annotate" (real rows the LLM labeled). A pool whose cells buy some
                             human labels puts `human_labels` and `llm_labels` in its trials' metrics
and `status.pool_status` says whether its step is done in an output.

Adding a pool is one module here plus one line at the bottom of this file. Pool modules import
no stage (no config, no Ray): the config validates names against this registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from raysweep.errors import RaysweepError


class UnknownPoolError(RaysweepError, KeyError):
    """A pool name the registry does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass
class PoolRows:
    """What a trial of one pool reads (train.TrialInputs is built from it)."""

    artifacts: tuple[str, ...]  # (train, val[, test]) activation entries
    train_labels: np.ndarray  # labels of every train position the trial may use
    pool_rows: np.ndarray  # the positions it may add
    select_labels: np.ndarray | None = None  # the labels selection sees, when not the trained-on ones


@dataclass
class TrainRows:
    """What one cell trains on: positions into train (`labeled` first, then the rows it keeps of
    those it added) and their labels; `fields` go on its record (what a pool changed, and why)."""

    rows: np.ndarray
    labels: np.ndarray
    fields: dict


class Pool:
    """One pool. Subclasses set the class attributes and implement `rows` and `size`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    step: ClassVar[str | None] = None
    id_key: ClassVar[str | None] = None
    scoring_source: ClassVar[str] = "real"
    labeled_by: ClassVar[str] = "human"
    # Whether its rows are written for single-sentence classification only (an LLM's), and what
    # the LLM does for it (the config error says it).
    classification_only: ClassVar[bool] = False
    llm_does: ClassVar[str] = ""

    def id_part(self, generated: str | None, labels: str | None) -> dict:
        """The part of a cell id this pool adds: {} or {id_key: the digest its cells depend on}."""
        if self.id_key is None:
            return {}
        return {self.id_key: {"generated": generated, "labels": labels}[self.id_key]}

    def settings(self, cfg) -> dict:
        """The config settings its cells' results depend on beyond the fixed ones (part of their ids;
        {} leaves the ids of the pools that have none as they were)."""
        return {}

    def train_rows(self, cell, inputs, added: np.ndarray, recipe) -> TrainRows:
        """What `cell` trains on after choosing `added` (positions into train): `labeled` and the
        added rows, sorted (the model depends on which rows, not on the pick order), with the
        labels of `inputs` (train.TrialInputs); a pool that cleans its labels changes them."""
        rows = np.concatenate([inputs.labeled, np.sort(added)])
        return TrainRows(rows, inputs.train_labels[rows], {})

    def reads(self, variant):
        """The activations its trials of `variant` read (the key of TrialContext.artifacts)."""
        return variant

    def rows(self, context, variant) -> PoolRows:
        raise NotImplementedError

    def size(self, context) -> int:
        raise NotImplementedError

    def planned_size(self, n_real: int | None, cfg) -> int | None:
        """Its size from the config and the real pool's size, before anything is generated or encoded."""
        return n_real

    def __str__(self) -> str:
        return f"{self.name}: {self.summary}"


# The preparation steps a pool may wait for; steps.py runs each (generation, annotation).
STEPS = ("generate", "annotate")
REGISTRY: dict[str, Pool] = {}


def register(pool: Pool) -> Pool:
    if pool.name in REGISTRY:
        raise ValueError(f"pool {pool.name!r} registered twice")
    REGISTRY[pool.name] = pool
    return pool


def get(name: str) -> Pool:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownPoolError(f"unknown pool {name!r} (known: {', '.join(REGISTRY)})") from None


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def steps_of(pool_names) -> list[str]:
    """The preparation steps a grid of these pools needs, each once, in registry order."""
    steps = [get(p).step for p in pool_names]
    return list(dict.fromkeys(s for s in steps if s))


# The registry, in the order errors and `raysweep check` list the pools: each module registers itself.
from raysweep.pools import real  # noqa: E402,F401,I001
from raysweep.pools import generated  # noqa: E402,F401,I001
from raysweep.pools import annotated  # noqa: E402,F401,I001
from raysweep.pools import cleaned  # noqa: E402,F401,I001
from raysweep.pools import routed  # noqa: E402,F401,I001
