"""LLM augmentation: generate labeled sentences, relabel them with a teacher, write the generation directory.

    run_generation(cfg, gen_dir, cache_dir) -> Generated

The study's first experiment: an LLM writes SST-like sentences with labels (`raysweep.llm`),
and a teacher trained on all real train rows labels them again. The sweep's pools `llm` and
`llm_teacher` are these rows with the LLM's and the teacher's labels.

Layout of a generation directory (what `raysweep generate` writes and `raysweep analyze` reads):
    responses.jsonl       every paid reply, appended before it is parsed (llm/store.py)
    parse_failures.jsonl  what could not be recovered from a reply, one line each
    removed.csv           duplicates and val leaks that were dropped
    generated.csv         text, llm_label, teacher_label: the kept rows, in call order
    generation.json       requests, tokens, cost, parse failures, duplicates, leaks, teacher val
                          accuracy, agreement and the LLM-by-teacher confusion matrix
    embeddings.npz        `real` (train rows) and `generated` sentence vectors of the frozen encoder
    real_labels.csv       `label` of the real train rows, for the label-distribution figure

Every step resumes: the store makes no call it already paid for, the teacher and the activations
come from the content-addressed cache, and a directory whose generation.json matches the config
and is complete is reused without starting anything.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from raysweep import dashboard, metrics, model
from raysweep.backbone import boundary_for, load_backbone
from raysweep.config import SweepConfig, to_dict
from raysweep.freeze import parse as parse_mode
from raysweep.data import Splits, load_splits
from raysweep.embed import ensure_activation_sets, link_or_copy, load_activations
from raysweep.encoders import shared_cache
from raysweep.errors import RaysweepError
from raysweep.hashing import json_digest
from raysweep.runtime import ray_running
from raysweep.storage import Output

GENERATED = "generated.csv"
SUMMARY = "generation.json"
# LLM settings that change which rows a run produces. The rest (limits, concurrency, retries,
# timeouts, prices, where the server is) may change between runs of one directory.
_ROW_SETTINGS = ("model", "n_rows", "samples_per_call", "examples_per_class", "template", "temperature",
                 "max_tokens", "near_duplicate", "seed", "embedded")


class GenerationDirError(RaysweepError, ValueError):
    """A generation directory that cannot be used as it is; the message names the file."""


@dataclass
class GenerationSummary:
    """generation.json, read (`parse`, `read`) and written (`write`) here only. The properties are
    what decisions rest on (is the directory complete, for which config, with which rows); the
    rest (requests, tokens, dollars, parse and dedup counts, the teacher's agreement) is shown
    as it is (`summary["key"]`, `as_dict`)."""

    data: dict

    @classmethod
    def parse(cls, text: str | None) -> GenerationSummary | None:
        try:
            data = json.loads(text) if text else None
        except json.JSONDecodeError:
            return None
        return cls(data) if isinstance(data, dict) else None

    @classmethod
    def read(cls, gen_dir: str | Path) -> GenerationSummary | None:
        try:
            return cls.parse((Path(gen_dir) / SUMMARY).read_text())
        except OSError:
            return None

    def write(self, gen_dir: Path) -> None:
        # Atomically, and last: it is what marks the directory complete (see `reuse`).
        tmp = gen_dir / f".{SUMMARY}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, gen_dir / SUMMARY)

    def __getitem__(self, key: str):
        return self.data[key]

    def __contains__(self, key: str) -> bool:
        return key in self.data

    @property
    def complete(self) -> bool:
        return bool(self.data.get("complete"))

    def as_dict(self) -> dict:
        return dict(self.data)

    @property
    def config_key(self) -> str | None:
        return self.data.get("config_key")

    @property
    def rows_digest(self) -> str | None:
        return self.data.get("rows_digest")

    def finished_for(self, cfg: SweepConfig) -> bool:
        """Made by this config, and as finished as it can be: complete, or stopped by the same
        llm.max_cost_usd (a higher cap resumes generation instead)."""
        d = self.data
        finished = d.get("complete") or (d.get("stopped") == "budget" and d.get("max_cost_usd") == cfg.llm.max_cost_usd)
        return bool(finished) and self.config_key == config_key(cfg)


@dataclass
class Generated:
    rows: pd.DataFrame  # text, llm_label, teacher_label
    summary: GenerationSummary
    path: Path

    @property
    def digest(self) -> str:
        """What the LLM pools' cells depend on: the rows and both labels."""
        return rows_digest(self.rows)


def rows_digest(rows: pd.DataFrame) -> str:
    return json_digest([[str(t), int(a), int(b)] for t, a, b in
                        rows[["text", "llm_label", "teacher_label"]].itertuples(index=False)], 16, ascii_only=False)


def examples_for(splits: Splits) -> pd.DataFrame:
    """The real rows the prompts draw their examples from: the study's D_labeled."""
    return splits.train.iloc[splits.labeled][["text", "label"]].reset_index(drop=True)


def config_key(cfg: SweepConfig) -> str:
    """Everything the generated rows and their teacher labels depend on."""
    llm = to_dict(cfg.llm)
    llm["embedded"] = {k: llm["embedded"][k] for k in ("n_ctx", "samples_per_call", "max_tokens")}
    rows = {k: llm[k] for k in _ROW_SETTINGS}
    rows.update(cfg.llm.prompt_setup())  # a fixed few-shot set: other prompts than a per-call directory's
    if cfg.llm.cosine_duplicate is not None:  # only when on: directories made before it keep their key
        rows.update(cosine_duplicate=cfg.llm.cosine_duplicate, dedup_calls=cfg.llm.dedup_calls)
    key = {"llm": rows, "teacher": to_dict(cfg.teacher), "recipe": to_dict(cfg.recipe),
           "encoder": {"name": cfg.encoder.name, "pooling": cfg.encoder.pooling, "max_length": cfg.encoder.max_length},
           "data": cfg.data.keyed(), "split": to_dict(cfg.split)}
    return json_digest(key, 16)


def read_generated(path: str | Path) -> pd.DataFrame:
    """generated.csv as (text, llm_label, teacher_label), or a one-line error naming the file."""
    path = Path(path)
    try:
        rows = pd.read_csv(path, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise GenerationDirError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("text", "llm_label", "teacher_label") if c not in rows.columns]
    if missing:
        raise GenerationDirError(f"{path}: missing column(s) {', '.join(missing)}")
    for col in ("llm_label", "teacher_label"):
        if not pd.api.types.is_integer_dtype(rows[col]):
            raise GenerationDirError(f"{path}: column {col} holds non-integer labels")
    return rows[["text", "llm_label", "teacher_label"]]


def reuse(cfg: SweepConfig, gen_dir: str | Path) -> Generated | None:
    """The directory's result when it is complete and made by this config; else None."""
    gen_dir = Path(gen_dir)
    summary = GenerationSummary.read(gen_dir)
    if summary is None or not summary.finished_for(cfg) or not (gen_dir / GENERATED).exists():
        return None
    rows = read_generated(gen_dir / GENERATED)
    if summary.rows_digest != rows_digest(rows):
        return None  # edited by hand since: relabel again rather than trust the summary
    return Generated(rows, summary, gen_dir)


def run_generation(cfg: SweepConfig, gen_dir: str | Path, cache_dir: str | Path, use_ray: bool = True,
                   log=print, out: Output | None = None, wait: bool = True) -> Generated:
    """Generate (or resume) `cfg.llm.n_rows` rows, relabel them with the teacher, write `gen_dir`.

    `out`: the sweep's output; with a storage URI, a teacher trained on another node reads its
    activations from `<out>/cache/` when they are too large for the object store."""
    dashboard.follow(cfg.name)  # the LLM actors and metrics carry the sweep's name
    gen_dir = Path(gen_dir)
    found = reuse(cfg, gen_dir)
    if found is not None:
        log(f"generation: reusing {gen_dir} ({len(found.rows)} rows, agreement {found.summary['agreement']:.3f})")
        return found
    with ray_running(enabled=use_ray):  # the caller's Ray if it started one, else a local one for this run
        return _run(cfg, gen_dir, cache_dir, use_ray, log, out, wait)


def _run(cfg: SweepConfig, gen_dir: Path, cache_dir: str | Path, use_ray: bool, log, out: Output | None,
         wait: bool = True) -> Generated:
    from raysweep.llm.generate import generate

    start = time.perf_counter()
    splits = load_splits(cfg.data, cfg.split)
    embed = SentenceVectors(cfg) if cfg.llm.cosine_duplicate is not None else None
    result = generate(cfg.llm, examples_for(splits), splits.val["text"].tolist(), gen_dir,
                      class_names=cfg.data.class_names, say=log, wait=wait, embed=embed)
    s = result.summary  # generate() said it in one line: calls, tokens, dollars, rows, why it stopped short
    log(f"generation: {s['rows_parsed']} rows parsed, parse failures {s['parse_failures']}")
    if result.rows.empty:
        raise GenerationDirError(no_rows_error(gen_dir, s))
    gen_texts = result.rows["text"].astype(str).tolist()
    teacher = relabel(cfg, splits, gen_texts, cache_dir, use_ray=use_ray, log=log, out=out)

    rows = result.rows.assign(teacher_label=teacher["labels"])
    llm, tea = rows["llm_label"].to_numpy(), rows["teacher_label"].to_numpy()
    confusion = metrics.confusion(llm, tea, cfg.data.num_classes).tolist()
    summary = GenerationSummary({
        **s,
        "teacher": {"freeze": cfg.teacher.freeze, "epochs": teacher["epochs"], "seed": cfg.teacher.seed,
                    "train_rows": len(splits.train), "encoder": cfg.encoder.name, "pooling": cfg.encoder.pooling},
        "teacher_val_accuracy": teacher["val_accuracy"],
        "agreement": float((llm == tea).mean()),
        "confusion_llm_by_teacher": confusion,  # rows: the LLM's label, columns: the teacher's
        "class_names": list(cfg.data.class_names),
        "config_key": config_key(cfg),
        "rows_digest": rows_digest(rows),
        "relabel_s": teacher["seconds"],
        "total_s": round(time.perf_counter() - start, 2),
    })
    _write(gen_dir, rows, summary, teacher["real_vectors"], teacher["generated_vectors"],
           splits.train["label"].to_numpy())
    dashboard.rows_labeled("teacher", len(rows))
    log(f"teacher ({cfg.teacher.freeze}, val accuracy {summary['teacher_val_accuracy']:.3f}) agrees with the LLM "
        f"on {summary['agreement']:.1%} of {len(rows)} rows; wrote {gen_dir}")
    return Generated(rows, summary, gen_dir)


def no_rows_error(gen_dir: Path, s: dict) -> str:
    """Why generation ended with no row, in one line: the cap when it stopped there, else what the
    replies held (a failure log that is empty says nothing, so it is named only when it is not)."""
    if s.get("stopped") == "budget":
        from raysweep.llm.budget import stop_line

        budget = s.get("budget") or {"cap_usd": s["max_cost_usd"], "spent_usd": s["cost_usd"], "peak_reserved_usd": 0}
        got = f"{s['requests']} stored call(s) gave no usable row and " if s["requests"] else ""
        return f"{gen_dir}: no rows: {got}generation {stop_line(budget)}; raise llm.max_cost_usd"
    failed = sum(s.get("parse_failures", {}).values())
    if not s.get("requests"):
        return f"{gen_dir}: no rows: no call was made ({s.get('stopped') or 'nothing to ask'})"
    if failed:
        return (f"{gen_dir}: the LLM produced no usable row in {s['requests']} replies ({failed} parse failures: "
                f"{s['parse_failures']}); see parse_failures.jsonl there")
    return (f"{gen_dir}: the LLM produced no usable row in {s['requests']} replies (rows parsed {s['rows_parsed']}, "
            f"removed as duplicates {s['duplicates_removed']}, as val leaks {s['leaks_removed']})")


def llm_estimate(cfg: SweepConfig, gen_dir: Path | None = None):
    """The calls, tokens and dollars `cfg.llm` would still spend (llm/estimate.py), counting the
    replies already in `gen_dir`'s store; nothing is called or started."""
    from raysweep.llm.estimate import estimate
    from raysweep.llm.store import STORE_NAME, ResponseStore

    splits = load_splits(cfg.data, cfg.split)
    stored = ResponseStore(gen_dir / STORE_NAME).load() if gen_dir is not None else []
    return estimate(cfg.llm, examples_for(splits), cfg.data.class_names, stored)


def cancel_generation(cfg: SweepConfig, gen_dir: Path, log=print) -> dict:
    """`raysweep generate --cancel`: stop the open batches, keep what they finished in the store."""
    from raysweep.llm.generate import generate

    splits = load_splits(cfg.data, cfg.split)
    return generate(cfg.llm, examples_for(splits), splits.val["text"].tolist(), gen_dir,
                    class_names=cfg.data.class_names, say=log, cancel=True).summary


class SentenceVectors:
    """The sweep's frozen encoder's sentence vectors (its pooled output, what the head sees in
    last-linear mode), for dedup by meaning during generation: computed here in small batches as
    the replies arrive, each text once (generation re-checks every row after every round)."""

    def __init__(self, cfg: SweepConfig, batch_size: int = 64):
        enc = cfg.encoder
        self.backbone = load_backbone(enc.name)
        self.boundary = boundary_for("last-linear", self.backbone.num_layers, enc.pooling, enc.max_length)
        self.batch_size = batch_size
        self.memo: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self.memo]
        for start in range(0, len(new), self.batch_size):
            batch = new[start:start + self.batch_size]
            self.memo.update(zip(batch, np.asarray(self.backbone.features(batch, self.boundary), dtype=np.float32)))
        return np.stack([self.memo[t] for t in texts]) if texts else np.zeros((0, self.backbone.hidden_size))


def relabel(cfg: SweepConfig, splits: Splits, gen_texts: list[str], cache_dir: str | Path, use_ray: bool = True,
            log=print, out: Output | None = None) -> dict:
    """Train the teacher on every real train row and label `gen_texts` with it.

    Returns the labels, the teacher's val accuracy, and sentence vectors of the real train rows
    and of the generated rows (the frozen encoder's pooled output, as the head sees it in
    last-linear mode) for the PCA figure. All features come from one encoder pass.
    """
    start = time.perf_counter()
    enc = cfg.encoder
    backbone = load_backbone(enc.name)
    b_teacher = boundary_for(cfg.teacher.freeze, backbone.num_layers, enc.pooling, enc.max_length,
                             backbone.hidden_size)
    mode = parse_mode(cfg.teacher.freeze)
    b_sentence = boundary_for("last-linear", backbone.num_layers, enc.pooling, enc.max_length)
    boundaries = [b_teacher] if b_teacher == b_sentence else [b_teacher, b_sentence]
    texts = {"train": splits.train["text"].tolist(), "val": splits.val["text"].tolist(), "generated": gen_texts}
    paths = ensure_activation_sets(enc.name, texts, boundaries, cache_dir, use_ray=use_ray,
                                   batch_size=enc.batch_size, actors=enc.actors, log=log)
    train_acts, val_acts, gen_acts = (load_activations(paths[name][0]) for name in ("train", "val", "generated"))
    recipe = replace(cfg.recipe, epochs=cfg.teacher.epochs or cfg.recipe.epochs)
    rows = np.arange(len(splits.train))
    labels = splits.train["label"].to_numpy()
    teacher_path = model.model_path(cache_dir, train_acts, rows, labels, cfg.data.num_classes, recipe,
                                    cfg.teacher.seed, mode)
    _adopt_shared_model(teacher_path, Path(cache_dir))
    if use_ray and not teacher_path.exists():
        # A Ray task with a trial's resources: on a cluster it lands on a GPU worker instead of the
        # head node that runs this driver. Its state comes back here, into this node's cache.
        res = cfg.resources
        spec = model.TrainingSpec(train_acts, model.Member(rows, labels, cfg.teacher.seed, mode), cfg.data.num_classes,
                                  recipe)
        model.train_remote([spec], cache_dir, out, cpus=res.cpus_per_trial, gpus=res.gpus_per_trial)
    teacher = model.trained_model(train_acts, rows, labels, cfg.data.num_classes, recipe, cfg.teacher.seed,
                                  cache_dir, mode)
    val_pred = model.predict_proba(teacher, val_acts).argmax(1)
    sentence = {name: load_activations(paths[name][-1]) for name in ("train", "generated")}
    return {
        "labels": model.predict_proba(teacher, gen_acts).argmax(1).astype(int),
        "val_accuracy": float((val_pred == splits.val["label"].to_numpy()).mean()),
        "epochs": recipe.epochs,
        "real_vectors": sentence["train"].dense().numpy(),
        "generated_vectors": sentence["generated"].dense().numpy(),
        "seconds": round(time.perf_counter() - start, 2),
    }


def _adopt_shared_model(path: Path, cache_dir: Path) -> None:
    """The teacher another run trained into the machine's shared cache (same key: same activations,
    rows, labels, recipe and seed), linked under `path` instead of trained again."""
    shared = shared_cache() / path.relative_to(cache_dir)
    if path.exists() or not shared.exists() or shared.resolve() == path.resolve():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    link_or_copy(shared, tmp)
    os.replace(tmp, path)  # whole or not at all: a reader never sees half a model


def _write(gen_dir: Path, rows: pd.DataFrame, summary: GenerationSummary, real: np.ndarray, generated: np.ndarray,
           real_labels: np.ndarray) -> None:
    rows.to_csv(gen_dir / GENERATED, index=False)
    np.savez_compressed(gen_dir / "embeddings.npz", real=real.astype(np.float32), generated=generated.astype(np.float32))
    pd.DataFrame({"label": real_labels}).to_csv(gen_dir / "real_labels.csv", index=False)
    summary.write(gen_dir)  # last: it marks the directory complete
