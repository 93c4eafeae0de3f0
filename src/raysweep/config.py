"""Sweep configuration: validated dataclasses loaded from YAML.

A sweep file reads the way the tuning playbook asks: `compare` holds the scientific
parameters (what the study compares), `replicate` the nuisance parameters (seeds), and
everything else is fixed for the whole sweep. Every key is checked: an unknown key or a
value of the wrong type is a one-line `ConfigError` that names the key's path
(`recipe.epochs: expected an integer, got 'ten'`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raysweep.errors import RaysweepError


class ConfigError(RaysweepError, ValueError):
    """A sweep file or override that does not validate; the message names the key path."""


# --------------------------------------------------------------------------- generic loader


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Check `value` against the annotation `tp` and return it in that type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {_describe(value)} fits none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{path}: {_describe(value)} is not one of {choices}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            # A scalar where a list is expected is a one-element list: `seeds: 0` means `[0]`.
            value = [value]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_describe(value)}")
        key_t, val_t = args or (Any, Any)
        return {_coerce(key_t, k, path): _coerce(val_t, v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {_describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}: expected a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {_describe(value)}")
    raise TypeError(f"{path}: unsupported annotation {tp!r}")  # a bug in a dataclass, not in the file


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and bad values.

    After construction the dataclass's own `validate()` (if any) checks cross-field rules;
    it raises ConfigError with a path relative to the dataclass, which is prefixed here.
    """
    where = path or "<top>"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        name = str(key).replace("-", "_")
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{sub}: unknown key (known keys here: {known})")
        kwargs[name] = _coerce(hints[name], value, sub)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ConfigError as exc:
            msg = str(exc)
            raise ConfigError(f"{path}.{msg}" if path else msg) from None
    return obj


def to_dict(obj: Any) -> Any:
    """The plain-YAML form of a config (tuples become lists so that it round-trips)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `key.path=value` overrides (values parsed as YAML) to a raw mapping.

    The result is validated like the file itself, so `--set recipe.epochs=ten` fails the
    same way a bad file would.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected key.path=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML") from None
        node = data
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a mapping")
            node = child
        node[parts[-1]] = value
    return data


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


# --------------------------------------------------------------------------- the sweep

FREEZE_MODES = {
    # name -> (top encoder layers trained, pooler dense trained). One mechanism: "train the
    # top k layers plus pooler plus head"; `top-K` names any k beyond the study's three.
    "last-linear": (0, False),
    "pooler": (0, True),
    "last-attention": (1, True),
}
POOLS = ("real", "llm", "llm_teacher")
POOLINGS = ("pooler", "cls", "mean")


def parse_freeze(name: str) -> tuple[int, bool]:
    """Freeze mode name -> (top layers trained, pooler trained)."""
    if name in FREEZE_MODES:
        return FREEZE_MODES[name]
    if name.startswith("top-") and name[4:].isdigit() and int(name[4:]) >= 1:
        return int(name[4:]), True
    raise ConfigError(f"{name!r} is not a freeze mode ({', '.join(FREEZE_MODES)} or top-K)")


@dataclass
class DataConfig:
    path: str | None = None  # CSV / Parquet / JSONL; None: the SST-5 copy shipped in the package
    text_column: str = "text"
    label_column: str = "label"
    split_column: str = "split"  # rows 'train' and 'dev'; the study's D_val is dev
    num_classes: int = 5
    class_names: list[str] = field(
        default_factory=lambda: ["very negative", "negative", "neutral", "positive", "very positive"]
    )

    def validate(self) -> None:
        _check(self.num_classes >= 2, "num_classes: needs at least 2 classes")
        _check(len(self.class_names) == self.num_classes,
               f"class_names: {len(self.class_names)} names for {self.num_classes} classes")


@dataclass
class SplitConfig:
    labeled_fraction: float = 0.2  # 1 : 4 labeled : unlabeled, as in the study
    stratify: bool = True  # keep label proportions equal in labeled and unlabeled
    seed: int = 0  # fixed across the sweep: every trial sees the same D_labeled

    def validate(self) -> None:
        _check(0.0 < self.labeled_fraction < 1.0, "labeled_fraction: must be between 0 and 1")


@dataclass
class EncoderConfig:
    name: str = "minilm"  # a short name (minilm: the bundled all-MiniLM-L6-v2), a HF name or a local path
    pooling: str = "pooler"  # pooler: [CLS] through the pretrained pooler (the study); cls; mean
    max_length: int = 64  # SST sentences are short: 64 word pieces cover >99% of them
    batch_size: int = 64  # rows per batch when computing frozen activations
    actors: int = 0  # Ray Data actors for frozen activations; 0: one per available CPU/GPU

    def validate(self) -> None:
        _check(self.pooling in POOLINGS, f"pooling: {self.pooling!r} is not one of {', '.join(POOLINGS)}")
        _check(self.max_length >= 8, "max_length: must be at least 8")
        _check(self.batch_size >= 1, "batch_size: must be at least 1")
        _check(self.actors >= 0, "actors: must be 0 (automatic) or more")


@dataclass
class RecipeConfig:
    epochs: int = 50
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    step_size: int = 20  # StepLR: the learning rate is multiplied by gamma every step_size epochs
    gamma: float = 0.5
    batch_size: int = 32
    dropout: float = 0.5  # the head's dropout, before its linear layer

    def validate(self) -> None:
        _check(self.epochs >= 1, "epochs: must be at least 1")
        _check(self.lr > 0, "lr: must be positive")
        _check(all(0 <= b < 1 for b in self.betas), "betas: each must be in [0, 1)")
        _check(self.step_size >= 1, "step_size: must be at least 1")
        _check(0 < self.gamma <= 1, "gamma: must be in (0, 1]")
        _check(self.batch_size >= 1, "batch_size: must be at least 1")
        _check(0 <= self.dropout < 1, "dropout: must be in [0, 1)")


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
            _check(how in POOLINGS, f"pooling[{i}]: {how!r} is not one of {', '.join(POOLINGS)}")
        for name in ("encoder", "pooling"):
            values = getattr(self, name)
            _check(len(set(values)) == len(values), f"{name}: has a repeated value")
        for i, pool in enumerate(self.pool):
            _check(pool in POOLS, f"pool[{i}]: {pool!r} is not one of {', '.join(POOLS)}")
        for i, frac in enumerate(self.fraction):
            _check(frac >= 0, f"fraction[{i}]: must be 0 or more (x |labeled| rows are added)")
        for i, name in enumerate(self.freeze):
            try:
                parse_freeze(name)
            except ConfigError as exc:
                raise ConfigError(f"freeze[{i}]: {exc}") from None
        from raysweep.strategies import REGISTRY, NotImplementedStrategy  # late: strategies import config

        for i, name in enumerate(self.strategy):
            if name not in REGISTRY:
                raise ConfigError(f"strategy[{i}]: unknown strategy {name!r} (known: {', '.join(sorted(REGISTRY))})")
            if isinstance(REGISTRY[name], NotImplementedStrategy):
                raise ConfigError(f"strategy[{i}]: {name!r} is not implemented yet")
        for name in ("pool", "strategy", "fraction", "freeze"):
            values = getattr(self, name)
            _check(len(values) > 0, f"{name}: needs at least one value")
            _check(len(set(values)) == len(values), f"{name}: has a repeated value")


@dataclass
class ReplicateConfig:
    """The nuisance parameters: each cell is run once per seed."""

    seed: list[int] = field(default_factory=lambda: [0, 1, 2])

    def validate(self) -> None:
        _check(len(self.seed) > 0, "seed: needs at least one value")
        _check(len(set(self.seed)) == len(self.seed), "seed: has a repeated value")


@dataclass
class ResourcesConfig:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractional GPUs are fine for the cheap freeze modes
    max_concurrent: int = 0  # 0: as many as the cluster's resources allow

    def validate(self) -> None:
        _check(self.cpus_per_trial > 0, "cpus_per_trial: must be positive")
        _check(self.gpus_per_trial >= 0, "gpus_per_trial: must be 0 or more")
        _check(self.max_concurrent >= 0, "max_concurrent: must be 0 or more")


@dataclass
class SelectionConfig:
    """How the model-based strategies score the pool and acquire rows (`random` reads none of it)."""

    k: int = 5  # sqbc: labeled neighbours whose labels' std ranks a pool row (the study's K)
    mc_samples: int = 10  # bald: MC-dropout forward passes per pool row
    rounds: int = 1  # acquire in R steps, re-training and re-scoring after each; 1: the study's single shot
    actors: int = 0  # Ray Data actors scoring the pool; 0: one per GPU, else one per free CPU
    batch_size: int = 1024  # pool rows per Ray Data block; larger blocks cost less scheduling per row

    def validate(self) -> None:
        _check(self.k >= 1, "k: must be at least 1")
        _check(self.mc_samples >= 2, "mc_samples: needs at least 2 samples to disagree")
        _check(self.rounds >= 1, "rounds: must be at least 1 (1 is single-shot)")
        _check(self.actors >= 0, "actors: must be 0 (automatic) or more")
        _check(self.batch_size >= 1, "batch_size: must be at least 1")


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
        _check(self.epochs is None or self.epochs >= 1, "epochs: must be at least 1")


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
    # The `llm:` section (raysweep.llm.config.LLMConfig). Kept untyped here and validated in
    # `validate` because the LLM package imports this module; after loading it is an LLMConfig.
    llm: Any = None
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
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
    def needs_generation(self) -> bool:
        """Whether a pool of the grid is LLM-generated (so `raysweep generate` runs first)."""
        return any(pool != "real" for pool in self.compare.pool)

    def validate(self) -> None:
        from raysweep.llm.config import LLMConfig, load_llm_config  # late: raysweep.llm imports this module

        _check(bool(self.name.strip()), "name: must not be empty")
        if not isinstance(self.llm, LLMConfig):
            self.llm = load_llm_config(self.llm, "llm")


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    """Read a sweep YAML, apply `--set` overrides, validate into a SweepConfig."""
    return load_config(SweepConfig, path, overrides)


def load_config(cls: type, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Read a YAML file of the dataclass `cls` (a sweep, a `raysweep select` project), apply
    `--set` overrides, validate; every error is one line naming the file and the key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    data = apply_overrides(data, list(overrides))
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
