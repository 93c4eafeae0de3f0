"""Sweep configuration: validated dataclasses loaded from YAML.

A sweep file reads the way the tuning playbook asks: `compare` holds the scientific
parameters (what the study compares), `replicate` the nuisance parameters (seeds), and
everything else is fixed for the whole sweep. Every key is checked: an unknown key or a
value of the wrong type is a one-line `ConfigError` that names the key's path
(`recipe.epochs: expected an integer, got 'ten'`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from raysweep import pools
from raysweep.freeze import FREEZE_MODES  # noqa: F401 - re-exported: the study's named modes
from raysweep.freeze import parse as parse_mode
from raysweep.llm.config import LLMConfig
from raysweep.loader import (
    ConfigError,
    apply_overrides,
    describe,
    from_dict,
    read_yaml_file,
    require,
    to_dict,
)

__all__ = ["ConfigError", "SweepConfig", "apply_overrides", "from_dict", "load_sweep", "parse_freeze", "to_dict"]


# --------------------------------------------------------------------------- the sweep

POOLINGS = ("pooler", "cls", "mean")


def parse_freeze(name: str) -> tuple[int, bool]:
    """Freeze mode name -> (top layers above its cache boundary, pooler trained); freeze/ parses it.

    For a LoRA mode the "trained" top layers are those that carry adapters: the cache boundary
    (token states entering them) is the same as `top-K`'s, which is what matters here.
    """
    mode = parse_mode(name)
    return mode.top_layers, mode.train_pooler


SST5_CLASS_NAMES = ["very negative", "negative", "neutral", "positive", "very positive"]
# The data sets shipped in the package (provenance in bundled/README.md), selectable as
# `data.name`: their file, task and the columns / classes a sweep need not spell out.
BUNDLED_DATA = {
    "sst5": {"file": "sst5-train-dev.csv.gz", "task": "classify", "label_column": "label", "num_classes": 5,
             "class_names": SST5_CLASS_NAMES},
    "sts": {"file": "sts-train-dev.csv.gz", "task": "pair-regress", "label_column": "score", "num_classes": 1,
            "class_names": []},
    "quora": {"file": "quora-pairs.csv.gz", "task": "pair-classify", "label_column": "label", "num_classes": 2,
              "class_names": ["not duplicate", "duplicate"]},
}
# Keys a single-sentence classification sweep leaves at these values: they stay out of its cell ids
# and cache keys (DataConfig.keyed), which are those of the sweeps written before pairs existed.
_SINGLE_SENTENCE_KEYS = {"name": (None, "sst5"), "task": ("classify",), "text_a_column": ("text_a",),
                         "text_b_column": ("text_b",)}


@dataclass
class DataConfig:
    name: str | None = None  # sst5 | sts | quora: a data set shipped in the package; None: sst5 (or `path`)
    path: str | None = None  # CSV / Parquet / JSONL of your own; None: the named data set
    # classify | pair-classify | regress | pair-regress; None: the named data set's (a file: classify)
    task: str | None = None
    text_column: str = "text"  # the sentence of a single-sentence task
    text_a_column: str = "text_a"  # the two texts of a pair task
    text_b_column: str = "text_b"
    label_column: str | None = None  # the class or score; None: 'label' (sts: 'score')
    split_column: str = "split"  # rows 'train', 'dev' (the study's D_val) and optionally 'test' (held out)
    num_classes: int | None = None  # None: the named data set's (a file: 5, as SST-5); 1 for a regression
    class_names: list[str] | None = None  # None: the named data set's (a file: SST-5's)

    def __post_init__(self):
        # Filled in here, not in validate: a sweep without a `data:` section builds this by default
        # and is never validated, and every reader expects the resolved columns and classes.
        self._resolve()

    def _resolve(self) -> None:
        """Fill what was left None from the named data set (or a file's defaults); the checks are validate's."""
        from raysweep.tasks import TASKS

        if self.name not in (None, *BUNDLED_DATA):
            return  # validate names the problem
        named = BUNDLED_DATA[self.name or "sst5"] if self.path is None else None
        if self.task is None:
            self.task = named["task"] if named else "classify"
        if self.label_column is None:
            self.label_column = named["label_column"] if named else "label"
        if self.task not in TASKS:
            return
        if self.task.endswith("regress"):
            if self.num_classes is None:
                self.num_classes = 1
            if self.class_names is None:
                self.class_names = []
            return
        if self.num_classes is None:
            self.num_classes = named["num_classes"] if named else 5
        if self.class_names is None:
            self.class_names = list(named["class_names"] if named else SST5_CLASS_NAMES)

    def validate(self) -> None:
        from raysweep.tasks import TASKS

        require(self.name is None or self.name in BUNDLED_DATA,
                f"name: {describe(self.name)} is not a shipped data set ({', '.join(BUNDLED_DATA)})")
        require(self.name is None or self.path is None,
                f"name: {self.name!r} is a shipped data set and path a file of your own: give one of them")
        require(self.task in TASKS, f"task: {describe(self.task)} is not one of {', '.join(TASKS)}")
        if self.task.endswith("regress"):
            require(self.num_classes == 1, f"num_classes: a {self.task} task has no classes (its head has "
                                           f"one output), got {self.num_classes}")
            require(not self.class_names, f"class_names: a {self.task} task has no classes")
            return
        require(self.num_classes >= 2, "num_classes: needs at least 2 classes")
        require(len(self.class_names) == self.num_classes,
                f"class_names: {len(self.class_names)} names for {self.num_classes} classes")

    def as_task(self):
        """The `tasks.Task` this data defines (call after validate)."""
        from raysweep.tasks import Task

        return Task(self.task or "classify", self.num_classes or 1)

    def keyed(self) -> dict:
        """This section as cell ids and cache keys hash it: without the pair keys when they are at their
        single-sentence values, so SST-5 and other single-sentence sweeps keep their ids."""
        out = to_dict(self)
        for key, values in _SINGLE_SENTENCE_KEYS.items():
            if key in ("text_a_column", "text_b_column") and self.task and self.task.startswith("pair-"):
                continue
            if out[key] in values:
                del out[key]
        return out


@dataclass
class SplitConfig:
    labeled_fraction: float = 0.2  # 1 : 4 labeled : unlabeled, as in the study
    stratify: bool = True  # keep label proportions equal in labeled and unlabeled
    seed: int = 0  # fixed across the sweep: every trial sees the same D_labeled

    def validate(self) -> None:
        require(0.0 < self.labeled_fraction < 1.0, "labeled_fraction: must be between 0 and 1")
        require(self.seed >= 0, "seed: must be 0 or more")


@dataclass
class EncoderConfig:
    name: str = "minilm"  # a short name (minilm: the bundled all-MiniLM-L6-v2), a HF name or a local path
    pooling: str = "pooler"  # pooler: [CLS] through the pretrained pooler (the study); cls; mean
    max_length: int = 64  # SST sentences are short: 64 word pieces cover >99% of them
    # A pair task's sequence, [CLS] a [SEP] b [SEP], is two sentences: with MiniLM's tokenizer 64
    # tokens hold 96.8% of STS pairs and 97.9% of Quora's, 128 all of STS and 99.98% of Quora
    # (docs/measurements.md); a longer pair loses the end of its longer text.
    pair_max_length: int = 128
    batch_size: int = 64  # rows per batch when computing frozen activations
    actors: int = 0  # Ray Data actors for frozen activations; 0: one per available CPU/GPU

    def validate(self) -> None:
        require(self.pooling in POOLINGS, f"pooling: {self.pooling!r} is not one of {', '.join(POOLINGS)}")
        require(self.max_length >= 8, "max_length: must be at least 8")
        require(self.pair_max_length >= 8, "pair_max_length: must be at least 8")
        require(self.batch_size >= 1, "batch_size: must be at least 1")
        require(self.actors >= 0, "actors: must be 0 (automatic) or more")


@dataclass
class RecipeConfig:
    """How the unfrozen part is trained: the study's recipe unless a sweep says otherwise."""

    epochs: int = 50  # the study's; cached last-linear / pooler trials cost ms per epoch, so 50 is cheap
    lr: float = 1e-3  # Adam's step size, the study's; a head over frozen features tolerates this high a rate
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's moment decays: PyTorch's defaults, as in the study
    weight_decay: float = 0.0  # off in the study: dropout is the head's only regulariser
    step_size: int = 20  # StepLR: the learning rate is multiplied by gamma every step_size epochs
    gamma: float = 0.5  # StepLR's factor: halving every 20 epochs settles the 50-epoch run (the study's)
    batch_size: int = 32  # the study's; small batches give the few hundred labeled rows many updates
    dropout: float = 0.5  # the head's dropout, before its linear layer

    def validate(self) -> None:
        require(self.epochs >= 1, "epochs: must be at least 1")
        require(self.lr > 0, "lr: must be positive")
        require(all(0 <= b < 1 for b in self.betas), "betas: each must be in [0, 1)")
        require(self.step_size >= 1, "step_size: must be at least 1")
        require(0 < self.gamma <= 1, "gamma: must be in (0, 1]")
        require(self.batch_size >= 1, "batch_size: must be at least 1")
        require(0 <= self.dropout < 1, "dropout: must be in [0, 1)")


@dataclass
class CompareConfig:
    """The scientific parameters: every combination is one cell of the grid."""

    pool: list[str] = field(default_factory=lambda: ["real"])
    strategy: list[str] = field(default_factory=lambda: ["random"])
    fraction: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 3.0, 4.0])
    freeze: list[str] = field(default_factory=lambda: ["last-linear", "pooler", "last-attention"])
    # Empty: the sweep's one `encoder.name` / `encoder.pooling`. Listing several compares them.
    encoder: list[str] = field(default_factory=list)
    pooling: list[str] = field(default_factory=list)

    def validate(self) -> None:
        for i, how in enumerate(self.pooling):
            require(how in POOLINGS, f"pooling[{i}]: {how!r} is not one of {', '.join(POOLINGS)}")
        for name in ("encoder", "pooling"):
            values = getattr(self, name)
            require(len(set(values)) == len(values), f"{name}: has a repeated value")
        for i, pool in enumerate(self.pool):
            require(pool in pools.REGISTRY, f"pool[{i}]: {pool!r} is not one of {', '.join(pools.REGISTRY)}")
        for i, frac in enumerate(self.fraction):
            require(frac >= 0, f"fraction[{i}]: must be 0 or more (x |labeled| rows are added)")
        trains: dict[object, int] = {}
        for i, name in enumerate(self.freeze):
            try:
                same = trains.setdefault(parse_mode(name), i)  # equal modes train the same model
            except ConfigError as exc:
                raise ConfigError(f"freeze[{i}]: {exc}") from None
            # Two spellings of one mode (`lora` and `lora-r8-k1`, `last-attention` and `top-1`) would
            # train every cell twice under two names and compare a mode with itself.
            require(same == i, f"freeze[{i}]: {name!r} trains the same model as freeze[{same}] "
                               f"{self.freeze[same]!r}; keep one of them")
        from raysweep.strategies import REGISTRY

        for i, name in enumerate(self.strategy):
            if name not in REGISTRY:
                raise ConfigError(f"strategy[{i}]: unknown strategy {name!r} (known: {', '.join(sorted(REGISTRY))})")
        for name in ("pool", "strategy", "fraction", "freeze"):
            values = getattr(self, name)
            require(len(values) > 0, f"{name}: needs at least one value")
            require(len(set(values)) == len(values), f"{name}: has a repeated value")


@dataclass
class ReplicateConfig:
    """The nuisance parameters: each cell is run once per seed."""

    seed: list[int] = field(default_factory=lambda: [0, 1, 2])

    def validate(self) -> None:
        require(len(self.seed) > 0, "seed: needs at least one value")
        for i, seed in enumerate(self.seed):  # numpy refuses negative seeds, deep inside a trial
            require(seed >= 0, f"seed[{i}]: must be 0 or more")
        require(len(set(self.seed)) == len(self.seed), "seed: has a repeated value")


@dataclass
class FreezeResources:
    """What one freeze mode's trials hold, where it differs from the sweep's `resources:` (unset: the same)."""

    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None  # last-attention wants a whole GPU where pooled heads share one
    pack_size: int | None = None
    bf16: bool | None = None

    def validate(self) -> None:
        require(self.cpus_per_trial is None or self.cpus_per_trial > 0, "cpus_per_trial: must be positive")
        require(self.gpus_per_trial is None or self.gpus_per_trial >= 0, "gpus_per_trial: must be 0 or more")
        require(self.pack_size is None or self.pack_size >= 0, "pack_size: must be 0 (automatic) or more")


@dataclass
class ResourcesConfig:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractional GPUs are fine for the cheap freeze modes
    max_concurrent: int = 0  # 0: as many as the cluster's resources allow
    # A Tune trial trains a pack of cells that share activations and row count, on one device.
    pack_size: int = 0  # most cells per pack; 0: automatic (memory and balance bounds, see grid.pack_size)
    pack_memory_gb: float = 2.0  # what one pack may hold on its device (a GPU's share, or host RAM on CPU)
    # Token-level training under bf16 autocast on a GPU (nothing on CPU). Its results differ from
    # float32 in the last bits, and the cell ids do not tell them apart: set it before a run, not during.
    bf16: bool = False
    # Per freeze mode, what differs from the above: {last-attention: {gpus_per_trial: 1, bf16: true}}
    freeze: dict[str, FreezeResources] = field(default_factory=dict)

    def validate(self) -> None:
        require(self.cpus_per_trial > 0, "cpus_per_trial: must be positive")
        require(self.gpus_per_trial >= 0, "gpus_per_trial: must be 0 or more")
        require(self.max_concurrent >= 0, "max_concurrent: must be 0 or more")
        require(self.pack_size >= 0, "pack_size: must be 0 (automatic) or more")
        require(self.pack_memory_gb > 0, "pack_memory_gb: must be positive")
        for name in self.freeze:
            try:
                parse_freeze(name)
            except ConfigError as exc:
                raise ConfigError(f"freeze.{name}: {exc}") from None
        # Whether the machine or cluster can ever provide this is checked against the data and the
        # cluster before any work (raysweep.preflight), not here: it needs more than the file.

    def of(self, freeze: str) -> ResourcesConfig:
        """The resources of `freeze`'s trials: these, with its own `freeze.<mode>` settings applied."""
        own = self.freeze.get(freeze)
        if own is None:
            return replace(self, freeze={})
        changed = {k: v for k, v in vars(own).items() if v is not None}
        return replace(self, freeze={}, **changed)


@dataclass
class SelectionConfig:
    """How the model-based strategies score the pool and acquire rows (`random` reads none of it)."""

    k: int = 5  # sqbc: labeled neighbours whose labels' std ranks a pool row (the study's K)
    mc_samples: int = 10  # bald: MC-dropout forward passes per pool row
    rounds: int = 1  # acquire in R steps, re-training and re-scoring after each; 1: the study's single shot
    actors: int = 0  # Ray Data actors scoring the pool; 0: one per GPU, else one per free CPU
    batch_size: int = 1024  # pool rows per Ray Data block; larger blocks cost less scheduling per row

    def validate(self) -> None:
        require(self.k >= 1, "k: must be at least 1")
        require(self.mc_samples >= 2, "mc_samples: needs at least 2 samples to disagree")
        require(self.rounds >= 1, "rounds: must be at least 1 (1 is single-shot)")
        require(self.actors >= 0, "actors: must be 0 (automatic) or more")
        require(self.batch_size >= 1, "batch_size: must be at least 1")


@dataclass
class TeacherConfig:
    """The model that relabels LLM-generated rows: trained on all real train rows (labeled and
    unlabeled), with the sweep's encoder, pooling and recipe unless overridden here."""

    freeze: str = "pooler"  # the study's teacher was a fine-tuned encoder; pooler is the cheap middle
    epochs: int | None = None  # None: recipe.epochs
    seed: int = 0

    def validate(self) -> None:
        try:
            parse_freeze(self.freeze)
        except ConfigError as exc:
            raise ConfigError(f"freeze: {exc}") from None
        require(self.epochs is None or self.epochs >= 1, "epochs: must be at least 1")
        require(self.seed >= 0, "seed: must be 0 or more")


# The default human price per label (costs.human_label_usd), and where it comes from: Amazon's
# SageMaker Ground Truth API reference (`PublicWorkforceTaskPrice`, read 2026-12-07) lists $0.012
# as the lowest Mechanical Turk worker price for one text-classification task, and SST's labels
# were each made by 3 judges (Socher et al., 2013): 3 x $0.012. Ground Truth's own per-object fee
# and Mechanical Turk's commission are on top of it, so this is a floor, not a quote.
HUMAN_LABEL_USD = 0.036


@dataclass
class CostsConfig:
    """What labels and compute cost, for the report's accuracy-against-dollars answer. Read at
    analysis time and for each cell's `cost_usd`: never part of a cell id or cache key, so
    changing a price re-prices the cells without running any of them again."""

    human_label_usd: float = HUMAN_LABEL_USD  # one gold label a person is paid for (see HUMAN_LABEL_USD)
    # The machine's price per hour (e.g. the cloud instance the sweep runs on); null: compute is not
    # priced and the report says so. It charges each cell's trial time and the embedded LLM's time.
    compute_usd_per_hour: float | None = None

    def validate(self) -> None:
        require(math.isfinite(self.human_label_usd) and self.human_label_usd >= 0,
                f"human_label_usd: must be a finite price of 0 or more, got {describe(self.human_label_usd)}")
        require(self.compute_usd_per_hour is None or (math.isfinite(self.compute_usd_per_hour)
                                                      and self.compute_usd_per_hour >= 0),
                f"compute_usd_per_hour: must be null or a finite price of 0 or more, got "
                f"{describe(self.compute_usd_per_hour)}")


@dataclass
class CleaningConfig:
    """What the pools llm_cleaned and llm_routed do with the LLM's labels (cleaning.py). Each
    value is part of its pool's cell ids: changing it makes new cells."""

    # llm_cleaned: "drop" the rows whose LLM label confident learning flags, or "replace" the label
    # with the labeled-set model's. drop: confident learning's own remedy (it prunes, then retrains),
    # and a replacement is that model's own guess, which teaches the model nothing it did not know.
    flagged: str = "drop"
    # llm_routed: the % of LLM labels, least-trustworthy first, a person relabels (gold, at the
    # human price). 20: at most a fifth of all-human labeling's cost on top of the LLM's, inside the
    # 50-96% savings Wang et al. 2021 report for GPT-3 + human mixes at equal accuracy.
    route_percent: float = 20.0

    def validate(self) -> None:
        require(self.flagged in ("drop", "replace"), f"flagged: {describe(self.flagged)} is not one of drop, replace")
        require(0 <= self.route_percent <= 100, f"route_percent: {describe(self.route_percent)} is not between 0 and 100")


# ASCII only (re.ASCII: \w-like classes would take any letter), and short: the name is part of
# file names (logs/run-<name>-<time>.log, Tune's trial directories) that must fit in 255 bytes.
SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}", re.ASCII)


@dataclass
class SweepConfig:
    name: str = "sweep"
    description: str = ""
    compare: CompareConfig = field(default_factory=CompareConfig)
    replicate: ReplicateConfig = field(default_factory=ReplicateConfig)
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    # Where generated sentences come from and what they may cost (`llm:`; read only by LLM pools).
    llm: LLMConfig = field(default_factory=LLMConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)  # llm_cleaned / llm_routed (cleaning.py)
    costs: CostsConfig = field(default_factory=CostsConfig)  # prices for the report; no cell id depends on them
    cache_dir: str | None = None  # frozen activations; None: <output>/cache
    # Generated rows, their teacher labels and the paid responses (`raysweep generate`);
    # None: <output>/generation. Pointing several sweeps at one directory pays for it once.
    generation_dir: str | None = None

    @property
    def encoders(self) -> list[str]:
        """The encoders the grid runs: compare.encoder, or the one fixed encoder.name."""
        return self.compare.encoder or [self.encoder.name]

    @property
    def poolings(self) -> list[str]:
        return self.compare.pooling or [self.encoder.pooling]

    @property
    def task(self):
        """What the sweep learns (`tasks.Task`): from `data:`."""
        return self.data.as_task()

    @property
    def max_length(self) -> int:
        """The token budget of one row: `encoder.pair_max_length` for a pair task, else `max_length`."""
        return self.encoder.pair_max_length if self.task.pairs else self.encoder.max_length

    @property
    def steps(self) -> list[str]:
        """The preparation steps the grid's pools need before their cells have ids (pools/)."""
        return pools.steps_of(self.compare.pool)

    @property
    def needs_generation(self) -> bool:
        """Whether a pool of the grid is LLM-generated (so `raysweep generate` runs first)."""
        return "generate" in self.steps

    @property
    def needs_annotation(self) -> bool:
        """Whether a pool of the grid is labeled by the LLM (the chosen real rows, before the trials)."""
        return "annotate" in self.steps

    def validate(self) -> None:
        # The name is a directory of Tune's (<output>/tune/<name>) and of a URI output's generation
        # (~/.cache/raysweep/generation/<name>): a separator or ".." would write outside them.
        require(bool(SAFE_NAME.fullmatch(self.name)) and ".." not in self.name and self.name != ".",
                f"name: {describe(self.name)} is not a safe name (1 to 100 letters, digits, '-', '_' and '.'; "
                "no path separators, no '..')")
        self._check_task()

    def _check_task(self) -> None:
        """Strategies and pools that cannot serve the data's task, before any work."""
        from raysweep.strategies import REGISTRY

        task = self.task
        for i, name in enumerate(self.compare.strategy):
            s = REGISTRY[name]
            if task.target not in s.targets:
                fits = ", ".join(n for n, t in sorted(REGISTRY.items()) if task.target in t.targets)
                raise ConfigError(f"compare.strategy[{i}]: {name!r} ranks by {s.ranks_by} and does not apply to the "
                                  f"{task.name} task of data {self.data.name or self.data.path!r} (use {fits})")
        for i, pool in enumerate(self.compare.pool):
            if pools.get(pool).classification_only and task.name != "classify":
                made = pools.get(pool).llm_does
                raise ConfigError(f"compare.pool[{i}]: the LLM pool {pool!r} {made} single-sentence classification "
                                  f"rows; the {task.name} task of data {self.data.name or self.data.path!r} takes "
                                  "only the 'real' pool")


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    """Read a sweep YAML, apply `--set` overrides, validate into a SweepConfig.

    This checks the file alone; `raysweep.preflight` checks it against the data, the encoder
    and the machine before any work.
    """
    return load_config(SweepConfig, path, overrides)


def load_config(cls: type, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Read a YAML file of the dataclass `cls` (a sweep, a `raysweep select` project), apply
    `--set` overrides, validate; every error is one line (one per problem) naming the file and the key."""
    path = Path(path)
    data = read_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    data = apply_overrides(data, list(overrides))
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError("\n".join(f"{path}: {line}" for line in str(exc).splitlines())) from None
