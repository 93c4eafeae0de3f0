"""Before any work: the sweep checked against its data, its encoders and the machine.

`load_sweep` checks what the file alone can tell (types, ranges, known names). What it cannot
tell needs the world around it: whether the data file reads and has two classes, whether
`selection.k` fits the labeled rows, whether the encoder resolves offline and has positions for
`max_length`, whether any node can ever give a trial its CPUs and GPUs (Tune would keep such a
trial PENDING forever). `raysweep check`, `run`, `submit` and `generate` run `preflight` before
Ray starts and before anything is written, and it reports every problem at once, one line each,
naming the key or the file and row.

The `CheckReport` it returns is what `raysweep check` prints: the grid by compared value, the rows each
fraction adds (capped to the whole pool), and with an output directory the cells already done.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from raysweep import pools
from raysweep.config import SweepConfig
from raysweep.encoders import SHORT_NAMES
from raysweep.errors import RaysweepError

COMPARED = ("encoder", "pooling", "pool", "strategy", "freeze", "fraction", "seed")


class PreflightError(RaysweepError):
    """A sweep that cannot run as it is; one line per problem, every problem listed."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class CheckReport:
    """What a sweep will do, as `raysweep check` prints it."""

    cells: list  # train.Cell, in grid order
    data: str = ""  # the splits in one line
    n_labeled: int = 0
    pool_sizes: dict = field(default_factory=dict)  # pool -> rows a cell may add from it
    status: list | None = None  # per cell: "ok", "failed", "running" or None (to run); None: no output given
    notes: list[str] = field(default_factory=list)

    def adds(self, fraction: float, pool: str) -> tuple[int, bool]:
        """(rows a cell of `fraction` adds from `pool`, whether the pool capped it)."""
        from raysweep.grid import rows_to_add

        got = rows_to_add(fraction, self.n_labeled, self.pool_sizes[pool])
        return got, round(fraction * self.n_labeled, 0) > got  # a float round: 1e308 x |labeled| is inf

    def by_value(self) -> dict[str, dict[str, dict[str, int]]]:
        """{parameter: {value: {"cells": n, "done": n}}} for every compared parameter."""
        out: dict[str, dict[str, Counter]] = {}
        for i, cell in enumerate(self.cells):
            for name in COMPARED:
                value = getattr(cell, name)
                key = f"{value:g}" if isinstance(value, float) else str(value)
                counts = out.setdefault(name, {}).setdefault(key, Counter())
                counts["cells"] += 1
                if self.status is not None:
                    counts["done"] += self.status[i] == "ok"
        return {name: {v: dict(c) for v, c in values.items()} for name, values in out.items()}

    def added_rows(self) -> list[dict]:
        """Per pool of the grid and fraction: the rows a cell adds, and whether the pool capped them."""
        fractions = sorted({c.fraction for c in self.cells})
        pools = sorted({c.pool for c in self.cells} & set(self.pool_sizes))
        return [dict(zip(("fraction", "pool", "rows", "capped"), (f, p, *self.adds(f, p))))
                for p in pools for f in fractions]

    def status_counts(self) -> dict[str, int] | None:
        if self.status is None:
            return None
        return {k: self.status.count(v) for k, v in
                (("done", "ok"), ("failed", "failed"), ("running", "running"), ("pending", None))}

    def to_json(self, sweep: str) -> dict:
        out = {"sweep": sweep, "valid": True, "cells": len(self.cells), "data": self.data,
               "labeled": self.n_labeled, "pools": self.pool_sizes, "fractions": self.added_rows(),
               "by": self.by_value(), "notes": self.notes}
        if self.status is not None:
            out["status"] = self.status_counts()
        return out

    def lines(self, sweep: str, output: str | None = None) -> list[str]:
        """What `raysweep check` prints: the grid by compared value, the rows each fraction adds,
        the cells already done in `output`."""
        out = [f"{sweep}: valid, {len(self.cells)} cells" + (f"; {self.data}" if self.data else "")]
        for name, values in self.by_value().items():
            shown = [f"{v} {c['cells']}" + (f" ({c['done']} done)" if self.status is not None else "")
                     for v, c in values.items()]
            out.append(f"  {name:9s} " + ", ".join(shown))
        by_pool: dict[str, list[str]] = {}
        for a in self.added_rows():
            by_pool.setdefault(a["pool"], []).append(
                f"x{a['fraction']:g} {a['rows']}" + (" (capped: the whole pool)" if a["capped"] else ""))
        for pool, adds in by_pool.items():
            out.append(f"  rows added from {pool} (pool {self.pool_sizes[pool]}, labeled {self.n_labeled}): "
                       + ", ".join(adds))
        if self.status is not None:
            s = self.status_counts()
            out.append(f"  in {output}: {s['done']} done, {s['failed']} failed, {s['running']} running, "
                       f"{s['pending']} to run")
        out.extend(f"  note: {note}" for note in self.notes)
        return out


# --------------------------------------------------------------------------- the machine


def capacity(address: str | None):
    """What the machine or cluster that runs the trials has or can scale to: the local machine
    without an address, else the running cluster's nodes plus its autoscaler's node types
    (raysweep.cluster.capacity, which joins the cluster at `address` to ask)."""
    from raysweep.cluster import capacity as cluster_capacity

    return cluster_capacity(address)


# --------------------------------------------------------------------------- the checks


def _max_positions(config) -> int | None:
    """The longest input `config`'s position embeddings take, or None when it has no such limit."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int):
        return None
    # RoBERTa-style models number positions from padding_idx + 1, so that many are never a token's.
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "mpnet", "longformer"):
        positions -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return positions


def _check_encoder(name: str, key: str, max_length: int, length_key: str = "encoder.max_length") -> str | None:
    """A problem with encoder `name` (at `key`), read from its config alone, or None."""
    from transformers import AutoConfig

    from raysweep.encoders import resolve_encoder

    try:
        path = resolve_encoder(name)
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except RaysweepError as exc:
        return f"{key}: {exc}"
    except (OSError, ValueError) as exc:  # transformers' "not found" / "not a model directory"
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        return f"{key}: encoder {name!r} does not resolve offline to a local directory or cached model ({first})"
    positions = _max_positions(config)
    if positions is not None and max_length > positions:
        return (f"{length_key}: {max_length} is more than the {positions} positions of encoder {name!r} "
                "(a longer text would fail inside the encoder)")
    return None


def _llm_problems(llm) -> list[str]:
    """What the endpoint the calls would go to rules out (llm.generate.check_endpoint)."""
    from raysweep.llm.generate import check_endpoint, choose_endpoint

    try:
        endpoint = choose_endpoint(llm)
    except RaysweepError:
        return []  # a key that is not there: said by `generate` itself, where the key is read
    try:
        check_endpoint(llm, endpoint)
    except RaysweepError as exc:
        return [str(exc)]
    return []


def preflight(cfg: SweepConfig, *, where: str = "", address: str | None = None, output: str | None = None,
              remote: bool = False) -> CheckReport:
    """Check `cfg` against its data, encoders and machine; the CheckReport, or PreflightError listing every problem.

    `where` (the sweep file) prefixes the key-path problems. `remote` (submit): the sweep runs on a
    cluster, so a data path or encoder that is not on this machine may be on the cluster's, and
    the resources are the cluster's: those are checked only where they can be from here.
    """
    from raysweep.data import DataError, load_splits
    from raysweep.strategies import get as strategy
    from raysweep.grid import expand
    from raysweep.status import cell_statuses

    prefix = f"{where}: " if where else ""
    problems: list[str] = []
    plan = CheckReport(cells=expand(cfg))

    # The data: read whole and checked (splits, labels, classes), then split as every trial will.
    if remote and cfg.data.path and not Path(cfg.data.path).exists():
        plan.notes.append(f"data.path {cfg.data.path} is not on this machine: checked on the cluster")
    else:
        try:
            splits = load_splits(cfg.data, cfg.split)
        except DataError as exc:  # names the file and row itself, or the `split:` key
            problems.append(f"{prefix}{exc}" if str(exc).startswith("split:") else str(exc))
        else:
            plan.data = splits.describe()
            plan.n_labeled = len(splits.labeled)
            plan.pool_sizes["real"] = len(splits.unlabeled)
            model_based = [s for s in cfg.compare.strategy if strategy(s).needs]
            if model_based and cfg.selection.k > len(splits.labeled):
                # Every model-based strategy writes the SQBC diagnostic, which needs k labeled neighbours.
                problems.append(f"{prefix}selection.k: {cfg.selection.k} neighbours, but only "
                                f"{len(splits.labeled)} rows are labeled ({model_based[0]} scores with them)")
    for pool in cfg.compare.pool:
        size = pools.get(pool).planned_size(plan.pool_sizes.get("real"), cfg)
        if size is not None:
            plan.pool_sizes[pool] = size

    if cfg.needs_generation and not remote:
        problems.extend(prefix + p for p in _llm_problems(cfg.llm))

    # The encoders: resolved as a trial will, but only their config is read (not the weights).
    # A split-zip encoder (mpnet-base) not yet assembled is assembled here, into the encoder cache
    # (never the output): a run would do it next anyway, and its config is inside the zip.
    names = [(f"compare.encoder[{i}]", n) for i, n in enumerate(cfg.compare.encoder)] or [("encoder.name",
                                                                                          cfg.encoder.name)]
    for key, name in names:
        if remote and not Path(name).exists() and name not in SHORT_NAMES:
            continue  # a Hugging Face name: the cluster's cache or hub decides
        problem = _check_encoder(name, key, cfg.max_length, "encoder.pair_max_length" if cfg.task.pairs
                                 else "encoder.max_length")
        if problem:
            problems.append(prefix + problem)

    # Resources: a trial no node can ever hold stays PENDING forever in Tune. Each freeze mode's
    # own (`resources.freeze.<mode>`) is checked under its key; a cluster whose GPU workers are
    # not up yet is fine when its autoscaler can start them (capacity counts its node types).
    cap = None if remote else capacity(address)
    if cap is not None:
        asks = [("resources", cfg.resources)] + [(f"resources.freeze.{f}", cfg.resources.of(f))
                                                 for f in cfg.compare.freeze if f in cfg.resources.freeze]
        shapes = [sh for sh in cap.shapes if sh.max_count > 0]
        for key, res in asks:
            if cap.fits(res.cpus_per_trial, res.gpus_per_trial):
                continue
            for what, asked, have in (("cpus_per_trial", res.cpus_per_trial, max((sh.cpus for sh in shapes), default=0)),
                                      ("gpus_per_trial", res.gpus_per_trial, max((sh.gpus for sh in shapes), default=0))):
                if asked > have:
                    problems.append(f"{prefix}{key}.{what}: {asked:g} per trial, but no node has or can get more "
                                    f"than {have:g} ({cap.describe()}; the trials would wait forever)")

    if problems:
        raise PreflightError(problems)
    if output is not None:
        plan.status = cell_statuses(cfg, output)
    return plan
