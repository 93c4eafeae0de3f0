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


def _llm_problems(cfg: SweepConfig, splits, plan: CheckReport, output: str | None, generation_dir: str | None
                  ) -> list[str]:
    """The problems of the sweep's LLM steps before any call (llm/checks.py): the endpoint, each
    step's store against this config, and whether the cap pays for its next call (a note in
    `plan` when replies are stored: the run goes on with them)."""
    from raysweep.llm.checks import cap_problem, endpoint_problems, store_problem

    if not (cfg.needs_generation or cfg.needs_annotation):
        return []
    endpoint, problems = endpoint_problems(cfg.llm)
    if endpoint is None or problems or splits is None:
        return problems
    gen_dir, ann_dir = _llm_dirs(cfg, output, generation_dir)
    steps = ([_generation_step(cfg, endpoint, splits, gen_dir)] if cfg.needs_generation else []) + (
        [_labeling_step(cfg, endpoint, splits, ann_dir)] if cfg.needs_annotation else [])
    for what, step_endpoint, messages, records, setup, store in filter(None, steps):
        problem = store_problem(records, setup, store)
        note = None
        if problem is None:
            problem, note = cap_problem(what, cfg.llm, step_endpoint, messages, records)
        problems.extend([problem] if problem else [])
        plan.notes.extend([note] if note else [])
    return problems


def _generation_step(cfg: SweepConfig, endpoint, splits, gen_dir: Path | None):
    """What generation's next call would be; None when the directory is reused as it is."""
    from raysweep.augment import GenerationSummary, examples_for
    from raysweep.llm.checks import stored
    from raysweep.llm.config import load_template
    from raysweep.llm.generate import setup_for
    from raysweep.llm.prompt import DEFAULT_TEMPLATE, build_messages
    from raysweep.llm.store import STORE_NAME

    summary = GenerationSummary.read(gen_dir) if gen_dir is not None else None
    if summary is not None and summary.finished_for(cfg):
        return None
    llm, names, examples = cfg.llm, tuple(cfg.data.class_names), examples_for(splits)
    template = load_template(llm.template) if llm.template else DEFAULT_TEMPLATE
    store = gen_dir / STORE_NAME if gen_dir is not None else None
    records = stored(store)
    done = {r.get("request_id") for r in records}
    first = next(i for i in range(len(done) + 1) if i not in done)  # the next call a run would make
    messages = build_messages(template, endpoint.samples_per_call, examples, llm.examples_per_class, llm.seed, first,
                              names)
    return "generation", endpoint, messages, records, setup_for(llm, endpoint, template, examples, names), store


def _labeling_step(cfg: SweepConfig, endpoint, splits, ann_dir: Path | None):
    """What LLM labeling's next call would be like."""
    from dataclasses import replace

    from raysweep.annotation import setup_of
    from raysweep.augment import examples_for
    from raysweep.llm.checks import stored
    from raysweep.llm.prompt import build_label_messages
    from raysweep.llm.store import STORE_NAME

    a, examples = cfg.llm.annotate, examples_for(splits)
    labeling = replace(endpoint, samples_per_call=a.rows_per_call, max_tokens=a.max_tokens)
    store = ann_dir / STORE_NAME if ann_dir is not None else None
    # The rows a cell adds are chosen by its training run; any rows_per_call sentences of the
    # data give the prompt's size.
    texts = splits.train["text"].astype(str).tolist()[: a.rows_per_call]
    messages = build_label_messages(texts, examples, a.examples_per_class, cfg.llm.seed, 0,
                                    tuple(cfg.data.class_names))
    return "LLM labeling", labeling, messages, stored(store), setup_of(cfg, labeling.model, examples), store


def _llm_dirs(cfg: SweepConfig, output: str | None, generation_dir: str | None) -> tuple[Path | None, Path | None]:
    """(the generation directory, the LLM labeling directory) a run would use, on this disk:
    under `output` (check's, or run's `llm_output`: an output whose cells are not counted), or
    `generation_dir` itself (generate --output)."""
    from raysweep.layout import Layout
    from raysweep.storage import is_uri

    layout = Layout.of(cfg, output) if output else None
    gen = Path(generation_dir).resolve() if generation_dir else layout.generation_dir if layout else None
    if gen is None and cfg.generation_dir:
        gen = Path(cfg.generation_dir).resolve()
    ann = layout.annotation_dir if layout is not None and not is_uri(output) else None
    return gen, ann


def preflight(cfg: SweepConfig, *, where: str = "", address: str | None = None, output: str | None = None,
              remote: bool = False, llm_output: str | None = None, generation_dir: str | None = None) -> CheckReport:
    """Check `cfg` against its data, encoders and machine; the CheckReport, or PreflightError listing every problem.

    `where` (the sweep file) prefixes the key-path problems (the LLM stores: _llm_dirs). `remote`
    (submit): the sweep runs on a cluster, so a data path or encoder not on this machine may be on
    the cluster's, and the resources are the cluster's: checked only where they can be from here.
    """
    from raysweep.data import DataError, load_splits
    from raysweep.strategies import get as strategy
    from raysweep.grid import expand

    prefix = f"{where}: " if where else ""
    problems: list[str] = []
    plan = CheckReport(cells=expand(cfg))

    # The data: read whole and checked (splits, labels, classes), then split as every trial will.
    splits = None
    if remote and cfg.data.path and not Path(cfg.data.path).exists():
        plan.notes.append(f"data.path {cfg.data.path} is not on this machine: checked on the cluster")
    else:
        try:
            splits = load_splits(cfg.data, cfg.split)
        except DataError as exc:  # names the file and row itself, or the `split:` key
            problems.append(f"{prefix}{exc}" if str(exc).startswith("split:") else str(exc))
        else:
            plan.data = splits.describe()
            plan.notes.extend(splits.warnings)
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

    if not remote:
        problems.extend(prefix + p for p in _llm_problems(cfg, splits, plan, output or llm_output, generation_dir))

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
        from raysweep.status import cell_statuses  # only when an output's cells are counted

        plan.status = cell_statuses(cfg, output)
    return plan
