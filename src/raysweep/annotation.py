"""The annotation step: the LLM labels the real rows the sweep's strategies choose (pool `llm_annotated`).

    annotate_sweep(cfg, cells, keys, inputs_for, ann_dir) -> Annotation

The study's LLM writes sentences *and* labels them, and its labels are unreliable. LLM-era
active learning (FreeAL, "LLMs in the loop", ActiveLLM) asks the cheaper question: a strategy
chooses *real* rows and the LLM only labels them. A cell of pool `llm_annotated` adds exactly
the rows its counterpart, the `real` cell with the same strategy, fraction, freeze mode and
seed, adds (`train.choose_rows` is deterministic given the cell and the cached scoring models),
each with the LLM's label instead of the gold one: the two pools differ in the labels alone.

Before the trials, the union of those rows is labeled once: a classification prompt with
few-shot examples from `labeled`, drawn per call as generation draws them (llm/prompt.py),
`rows_per_call` sentences per call, through generation's endpoint, shared limiter and generator
actors (llm/generate.py, llm/client.py). Every reply is appended to the response store, with the
rows it carried, before it is parsed. A rerun asks only for rows that have no label yet, so a
sweep that grows (another fraction or seed) pays only for its new rows, and a killed run loses
at most the calls in flight.

An annotation directory (<output>/annotation):
    responses.jsonl   every paid reply and the rows it labeled (llm/store.py)
    labels.csv        row, text, gold, llm_label, request_id: the labeled rows, by row
    annotation.json   requests, tokens, cost and cost per labeled row; the LLM's accuracy,
                      per-class accuracy and confusion matrix against the gold labels of the same
                      rows; and per annotated cell (by its counterpart's id) the digest of the
                      labels it trains on, which is part of its own cell id
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from raysweep import dashboard, pools
from raysweep.config import SweepConfig, to_dict
from raysweep.console import progress
from raysweep.hashing import json_digest
from raysweep.llm.parse import parse_labels
from raysweep.llm.prompt import (LABEL_TEMPLATE, build_label_messages, check_examples, examples_digest,
                                 sentences_in, template_digest)
from raysweep.llm.store import StoreError

log = logging.getLogger(__name__)

SUMMARY = "annotation.json"
LABELS = "labels.csv"


# --------------------------------------------------------------------------- which rows, which labels


def counterpart(cell):
    """The cell whose rows an annotated cell adds (the `real` one); any other cell: itself as `real`."""
    return replace(cell, pool=getattr(pools.get(cell.pool), "counterpart", "real"))


def annotated(cell) -> bool:
    return pools.get(cell.pool).step == "annotate"


def labels_digest(rows: np.ndarray, labels: dict[int, int]) -> str:
    """What an annotated cell trains on besides `labeled`: its rows and their LLM labels."""
    return json_digest([[int(r), int(labels[int(r)])] for r in np.sort(rows)], 16)


def setup_of(cfg: SweepConfig, model: str, examples: pd.DataFrame | None = None) -> dict:
    """What makes a stored label answer this config's question: the model, prompt and examples.
    Limits, prices, concurrency and how many rows go in one call may change between runs."""
    a = cfg.llm.annotate
    setup = {"task": "label", "model": model, "temperature": a.temperature, "examples_per_class": a.examples_per_class,
             "seed": cfg.llm.seed, "template": template_digest(LABEL_TEMPLATE),
             "class_names": list(cfg.data.class_names), **cfg.llm.prompt_setup()}
    if examples is not None:
        setup["examples"] = examples_digest(examples)
    return setup


def config_key(cfg: SweepConfig) -> str:
    """Everything the labels depend on, without loading the data: the setup, data and split."""
    from raysweep.llm.calls import choose_endpoint  # Ray: imported when the calls are made

    model = choose_endpoint(cfg.llm).model
    return json_digest({"setup": setup_of(cfg, model), "data": to_dict(cfg.data), "split": to_dict(cfg.split)}, 16)


def recorded(cfg: SweepConfig, keys: list[str], ann_dir: Path | None = None, summary: dict | None = None
             ) -> dict[str, str] | None:
    """Each key's labels digest from a complete annotation.json made by this config (in `ann_dir`,
    whose labels.csv must still be what it says, or given as `summary`), or None when one is
    missing: then the labeling must run, and nothing is known about the cells' labels."""
    if summary is None:
        try:
            summary = json.loads((Path(ann_dir) / SUMMARY).read_text())
            if summary.get("rows_digest") != _rows_digest(read_labels(ann_dir)):
                return None  # edited by hand since: label again (from the store, without a call)
        except (OSError, ValueError, KeyError):
            return None
    cells = summary.get("cells", {})
    if summary.get("config_key") != config_key(cfg) or not all(k in cells for k in keys):
        return None
    return {k: cells[k] for k in keys}


def read_summary(ann_dir: Path) -> dict | None:
    """annotation.json, or None when there is none (or it cannot be read: nothing is priced from it)."""
    try:
        summary = json.loads((Path(ann_dir) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def read_labels(ann_dir: Path) -> pd.DataFrame:
    return pd.read_csv(Path(ann_dir) / LABELS, keep_default_na=False)


def _rows_digest(table: pd.DataFrame) -> str:
    return json_digest(table[["row", "llm_label"]].astype(int).to_numpy().tolist(), 16)


def trial_labels(ann_dir: Path, gold: np.ndarray, pool_rows: np.ndarray) -> np.ndarray:
    """Labels of all train rows for an annotated trial: gold for `labeled`, the LLM's for the rows
    it labeled, -1 for the rest of the pool (no annotated cell adds them: training on one fails
    loudly instead of quietly using its gold label)."""
    table = read_labels(ann_dir)
    out = np.array(gold, dtype=np.int64)
    out[np.asarray(pool_rows, dtype=np.int64)] = -1
    out[table["row"].to_numpy(dtype=np.int64)] = table["llm_label"].to_numpy(dtype=np.int64)
    return out


# --------------------------------------------------------------------------- the run


@dataclass
class Annotation:
    labels: pd.DataFrame  # row, text, gold, llm_label, request_id: every row the LLM labeled
    summary: dict
    digests: dict[str, str]  # counterpart cell id -> labels digest of the annotated cell
    path: Path


def annotate_sweep(cfg: SweepConfig, cells: list, keys: list[str], inputs_for: Callable, ann_dir: Path,
                   say: Callable[[str], None] = print) -> Annotation:
    """Label the rows every `llm_annotated` cell of `cells` adds; `keys[i]` is cells[i]'s counterpart id.

    `inputs_for(cell)` gives the counterpart's TrialInputs (the real pool, gold labels), whose
    scoring models and pool scores the sweep has cached already. The few-shot examples are the
    labeled rows, as generation's (augment.examples_for)."""
    from raysweep.augment import examples_for
    from raysweep.data import load_splits
    from raysweep.train import choose_rows  # torch: not for `recorded`, which `raysweep status` calls

    chosen = {}
    for cell, key in zip(cells, keys):
        if annotated(cell) and key not in chosen:
            real = counterpart(cell)
            chosen[key] = np.sort(choose_rows(real, inputs_for(real), cfg.recipe, cfg.selection).rows)
    wanted = np.unique(np.concatenate([np.empty(0, dtype=np.int64), *chosen.values()]))
    splits = load_splits(cfg.data, cfg.split)
    result = label_rows(cfg, wanted, splits.train["text"].astype(str).tolist(), splits.train["label"].to_numpy(),
                        examples_for(splits), ann_dir, say)
    by_row = dict(zip(result.labels["row"].tolist(), result.labels["llm_label"].tolist()))
    digests = {key: labels_digest(rows, by_row) for key, rows in chosen.items()}
    summary = {**result.summary, "config_key": config_key(cfg), "cells": digests,
               "cell_rows": {key: len(rows) for key, rows in chosen.items()}}
    _write_summary(ann_dir, summary)
    return replace(result, summary=summary, digests=digests)


def label_rows(cfg: SweepConfig, rows: np.ndarray, texts: list[str], gold: np.ndarray, examples: pd.DataFrame,
               ann_dir: Path, say: Callable[[str], None] = print) -> Annotation:
    """Have the LLM label train rows `rows`, resuming from `ann_dir`'s response store; write
    labels.csv. Anything that stops the run is a GenerationError of one line; replies already
    paid for are in the store by then."""
    from raysweep.llm.calls import GenerationError
    from raysweep.llm.limiter import LimitError
    from raysweep.llm.server import ServerError

    try:
        return _label_rows(cfg, np.asarray(rows, dtype=np.int64), texts, np.asarray(gold), examples, Path(ann_dir), say)
    except (StoreError, ServerError, LimitError) as exc:
        raise GenerationError(str(exc)) from None


def _label_rows(cfg: SweepConfig, rows: np.ndarray, texts: list[str], gold: np.ndarray, examples: pd.DataFrame,
                ann_dir: Path, say: Callable[[str], None]) -> Annotation:
    # The calls go out as generation's do: the same paid-call loop, endpoint, limiter and actors.
    from raysweep.llm.calls import PaidCalls, choose_endpoint

    started = time.monotonic()
    a, class_names = cfg.llm.annotate, tuple(cfg.data.class_names)
    check_examples(examples, len(class_names))
    endpoint = replace(choose_endpoint(cfg.llm), samples_per_call=a.rows_per_call, max_tokens=a.max_tokens)
    llm = replace(cfg.llm, temperature=a.temperature)
    with PaidCalls(llm, endpoint, ann_dir, setup_of(cfg, endpoint.model, examples), len(class_names), say,
                   check_record=lambda record, path: _check_rows(record, texts, path)) as calls:
        labels, failures = _ask_until_labeled(cfg, calls, rows, texts, examples)
    table = pd.DataFrame({"row": rows, "text": [texts[r] for r in rows], "gold": gold[rows],
                          "llm_label": [labels[int(r)][0] for r in rows],
                          "request_id": [labels[int(r)][1] for r in rows]})
    table.to_csv(ann_dir / LABELS, index=False)
    spent = calls.totals()
    summary = {
        "endpoint": endpoint.kind,
        "model": endpoint.model,
        **{k: v for k, v in spent.items() if k not in ("tokens_this_run", "resumed_from")},
        "rows_labeled": len(table),
        "cost_usd_per_labeled_row": round(spent["cost_usd"] / len(table), 8) if len(table) else None,
        "replies_unreadable": dict(failures),
        "resumed_from": spent["resumed_from"],
        **agreement(table, class_names),
        "rows_digest": _rows_digest(table),
        "elapsed_s": round(time.monotonic() - started, 2),
    }
    return Annotation(table, summary, {}, ann_dir)


def _ask_until_labeled(cfg: SweepConfig, calls, rows: np.ndarray, texts: list[str], examples: pd.DataFrame
                       ) -> tuple[dict[int, tuple[int, int]], Counter]:
    """Rounds of labeling calls for the rows without a readable label, each row asked at most
    `attempts` times; returns (row -> (label, request_id), unreadable replies by kind)."""
    from raysweep.llm.calls import GenerationError, check_round
    from raysweep.llm.server import label_format_for

    a, class_names, per_call = cfg.llm.annotate, tuple(cfg.data.class_names), cfg.llm.annotate.rows_per_call
    labels, tries, failures = _labels_of(calls.records, class_names)
    missing = [int(r) for r in rows if int(r) not in labels]
    # The most calls the store may hold at the end: llm.annotate.max_requests, else every row
    # still missing asked `attempts` times on top of what earlier runs paid for.
    budget = a.max_requests or len(calls.records) + a.attempts * math.ceil(len(missing) / per_call)
    carried: dict[int, list[int]] = {}
    with progress(math.ceil(len(missing) / per_call), "LLM labels", "calls") as bar:
        def on_record(record: dict) -> None:
            calls.keep(record, rows=carried[record["request_id"]])
            bar.update(1)

        while True:
            # A row whose replies so far could not be read goes out again, up to `attempts` calls.
            asked = [r for r in missing if tries[r] < a.attempts]
            room = budget - len(calls.records)
            if not asked or room <= 0:
                break
            first = max(calls.records, default=-1) + 1
            batch = []
            for k, start in enumerate(range(0, len(asked), per_call)):
                if k >= room:
                    break
                request_id, chunk = first + k, asked[start:start + per_call]
                carried[request_id] = chunk
                messages = build_label_messages([texts[r] for r in chunk], examples, a.examples_per_class,
                                                cfg.llm.seed, cfg.llm.examples_call(request_id), class_names)
                # The embedded server is held to exactly this call's number of labels; a hosted
                # model is asked in words (the prompt) and checked when its reply is parsed.
                params = ({"response_format": label_format_for(len(chunk), len(class_names))}
                          if calls.endpoint.kind == "embedded" else None)
                batch.append((request_id, messages, cfg.llm.seed + request_id, params))
            log.info("requesting %d labeling call(s) for %d row(s)", len(batch), len(asked))
            # llm.max_cost_usd caps the labeling directory as it caps generation's: what earlier
            # runs paid here counts, and each call reserves its worst case first (llm/budget.py).
            gave_up, fatal, reached = calls.round(batch, on_record)
            check_round(fatal, gave_up, len(batch), len(calls.records), calls.store.path)
            labels, tries, failures = _labels_of(calls.records, class_names)
            still = [r for r in missing if r not in labels]
            dashboard.rows_labeled("llm", len(missing) - len(still))
            missing = still
            if missing and reached:
                # Every cell of the pool needs all its rows labeled: stop here, paid replies kept.
                from raysweep.llm.budget import stop_line

                raise GenerationError(
                    f"labeling {stop_line(calls.budget_stats())} with {len(missing)} of "
                    f"{len(rows)} chosen row(s) unlabeled; raise the cap and rerun: the {len(calls.records)} paid "
                    f"replies in {calls.store.path} are kept")
    if missing:
        raise GenerationError(
            f"{len(missing)} chosen row(s) still have no label after {min(tries[r] for r in missing)} call(s) each "
            f"(replies that could not be read: {dict(failures)}); raise llm.annotate.attempts or max_requests and "
            f"rerun: the {len(calls.records)} replies in {calls.store.path} are kept")
    return labels, failures


def _check_rows(record: dict, texts: list[str], path: Path) -> None:
    """A stored call's rows must still be the sentences it asked about (same data, same split)."""
    rows = record.get("rows")
    messages = (record.get("request") or {}).get("messages") or [{}]
    asked = sentences_in(str(messages[-1].get("content", "")))
    if not isinstance(rows, list) or asked is None or len(asked) != len(rows) or any(
            not isinstance(r, int) or not 0 <= r < len(texts) or texts[r] != t for r, t in zip(rows, asked)):
        raise StoreError(f"{path}: call {record.get('request_id')} labeled other sentences than these train rows "
                         f"hold (another data file or split); use another output directory or restore the data")


def _labels_of(records: dict[int, dict], class_names) -> tuple[dict[int, tuple[int, int]], Counter, Counter]:
    """(row -> (label, request_id) from the first readable reply for it, calls per row, unreadable replies by kind)."""
    labels: dict[int, tuple[int, int]] = {}
    tries: Counter = Counter()
    failures: Counter = Counter()
    from raysweep.llm.calls import content_of

    for request_id in sorted(records):
        rows = records[request_id]["rows"]
        tries.update(rows)
        content, _ = content_of(records[request_id])
        parsed = parse_labels(content, len(rows), class_names)
        if parsed.labels is None:
            failures[parsed.failure] += 1
            continue
        for row, label in zip(rows, parsed.labels):
            labels.setdefault(row, (label, request_id))
    return labels, tries, failures


def agreement(table: pd.DataFrame, class_names) -> dict:
    """The LLM's labels against the gold labels of the same rows: accuracy, accuracy per gold
    class (its recall; None for a class no row has) and the confusion matrix."""
    k = len(class_names)
    gold, llm = table["gold"].to_numpy(dtype=np.int64), table["llm_label"].to_numpy(dtype=np.int64)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (gold, llm), 1)
    per_class = {name: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None)
                 for i, name in enumerate(class_names)}
    return {"accuracy": float((gold == llm).mean()) if len(table) else None,
            "per_class_accuracy": per_class,
            "confusion_gold_by_llm": confusion.tolist(),  # rows: the gold label, columns: the LLM's
            "class_names": list(class_names)}


def _write_summary(ann_dir: Path, summary: dict) -> None:
    # Written last and atomically: it is what `recorded` trusts to skip the labeling step.
    tmp = ann_dir / f".{SUMMARY}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, ann_dir / SUMMARY)

