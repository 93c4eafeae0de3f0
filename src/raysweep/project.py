"""A labeling project's settings: `project.yaml` (ProjectConfig), read with a sweep file's settings
and `--set` overrides, and the strategy a finished sweep's results suggest (`select --results`).
labeling.py runs the rounds these settings describe."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from raysweep import strategies
from raysweep.config import (ConfigError, EncoderConfig, RecipeConfig, SelectionConfig, apply_overrides, from_dict,
                             load_config, parse_freeze, to_dict)
from raysweep.data import DataError

PROJECT_FILE = "project.yaml"
FROM_REPORT = "from-report"  # `strategy:` value: take it from a report (analysis/advice.py)
ROUNDS = "rounds"
COLD_STARTS = ("kcenter", "typiclust", "random")
COMMITTEE = 4  # qbc-seeds in select: models of seeds seed+1..seed+4 (4 more trainings; as in a sweep the
# round's own model is no member)
COLD_START_WORDS = {"kcenter": "k-center on the encoder vectors", "typiclust": "TypiClust on the encoder vectors",
                    "random": "random sampling"}


@dataclass
class LabelStudioConfig:
    """`label_studio:` in project.yaml: the live project `select` imports into and pulls from (studio.py)."""

    url: str = ""  # e.g. http://localhost:8080; `--label-studio URL` overrides; empty: files only
    title: str = ""  # the Label Studio project's title; empty: "raysweep <project directory name>"
    token_env: str = "LABEL_STUDIO_API_KEY"  # the variable holding the token (never the token itself)


@dataclass
class ProjectConfig:
    """`project.yaml` (every key optional; `--set key=value` overrides any)."""

    # Label names, in the order the labeler sees them (an ordinal scale keeps its order); empty:
    # the labeled file's labels in order of first appearance, never the alphabet's.
    classes: list[str] = field(default_factory=list)
    labeled: str = "labeled.csv"  # relative to the project directory; absent: start cold
    unlabeled: str = "unlabeled.csv"
    id_column: str = "id"  # kept when the file has it, else made from the row number
    text_column: str = "text"
    label_column: str = "label"
    # `raysweep strategies` lists them; `from-report`: the best that survives in `report` (else random)
    strategy: str = "random"
    report: str | None = None  # with strategy: from-report, a `raysweep analyze` output (relative to the project)
    batch: int = 50  # rows to label per round
    freeze: str = "pooler"  # pooled modes (last-linear, pooler): 100,000+ rows in bounded memory (poolscan.py)
    diverse: bool = False  # no near-duplicates among the batch (see `similarity`)
    similarity: float = 0.95  # with `diverse`: a row this cosine-similar to a row already in the batch is passed over
    # no labeled rows yet: kcenter (cover the encoder's vector space), typiclust (its typical rows) or random
    cold_start: str = "kcenter"
    cv_folds: int = 5  # folds of the accuracy estimate on the labeled rows (fewer when a class has fewer rows)
    budget: int = 0  # total rows you mean to label (labeled file included); 0: no budget. None left: "stop"
    seed: int = 0
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    label_studio: LabelStudioConfig = field(default_factory=LabelStudioConfig)

    def validate(self) -> None:
        problems = [(self.batch < 1, "batch: must be at least 1"),
                    (not 0 < self.similarity <= 1, "similarity: must be in (0, 1]"),
                    (self.cold_start not in COLD_STARTS,
                     f"cold_start: {self.cold_start!r} is not one of {', '.join(COLD_STARTS)}"),
                    (self.cv_folds < 2, "cv_folds: must be at least 2"),
                    (self.budget < 0, "budget: must be 0 (none) or a number of rows"),
                    (len(set(self.classes)) != len(self.classes), "classes: has a repeated name")]
        for bad, message in problems:
            if bad:
                raise ConfigError(message)
        try:
            parse_freeze(self.freeze)
        except ConfigError as exc:
            raise ConfigError(f"freeze: {exc}") from None
        if self.strategy == FROM_REPORT and not self.report:
            raise ConfigError(f"strategy: {FROM_REPORT} needs `report:` (a `raysweep analyze` output directory)")
        if self.strategy not in strategies.REGISTRY and self.strategy != FROM_REPORT:
            raise ConfigError(f"strategy: unknown strategy {self.strategy!r} "
                              f"(known: {', '.join(sorted(strategies.REGISTRY))}, or {FROM_REPORT})")
        if self.strategy != FROM_REPORT and strategies.get(self.strategy).sweep_only:
            raise ConfigError(f"strategy: {self.strategy!r} reads the pool's gold labels, which select never has: "
                              "a sweep's hindsight reference only")


def load_project_config(project_dir: Path, overrides: list[str] | tuple[str, ...] = (),
                        sweep_file: str | None = None) -> ProjectConfig:
    """project.yaml (if any), then the encoder / recipe / selection / freeze / strategy of a sweep
    file (if named; it must compare one strategy and one freeze mode, or the project names them),
    then `--set` overrides."""
    path = project_dir / PROJECT_FILE
    cfg = load_config(ProjectConfig, path) if path.exists() else ProjectConfig()
    data = to_dict(cfg)
    if sweep_file:
        from raysweep.config import load_sweep

        sweep = load_sweep(sweep_file)
        data.update(encoder=to_dict(sweep.encoder), recipe=to_dict(sweep.recipe), selection=to_dict(sweep.selection))
        for key in ("strategy", "freeze"):
            values = getattr(sweep.compare, key)
            if len(values) == 1:
                data[key] = values[0]
    data = apply_overrides(data, list(overrides))
    try:
        return from_dict(ProjectConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{path if path.exists() else 'project'}: {exc}") from None


def strategy_from_results(results_dir: str | Path, freeze: str) -> tuple[str, str]:
    """(strategy, caveat) from a finished sweep's trials.csv: the strategy with the highest mean
    validation accuracy over its cells that added rows (fraction > 0, the project's freeze mode
    when the sweep has it). The caveat says what the choice rests on, to be printed with it."""
    from raysweep.analysis.results import read_trials

    path = Path(results_dir) / "trials.csv"
    if not path.exists():
        raise DataError(f"{path}: no such file (name a finished sweep's results directory)")
    ok = read_trials(path)
    ok = ok[(ok["status"] == "ok") & (ok["fraction"] > 0) & (ok["pool"] == "real")]
    # a hindsight reference (the oracle) reads gold labels of the pool: never a strategy to apply
    ok = ok[~ok["strategy"].map(lambda s: s in strategies.REGISTRY and strategies.get(s).sweep_only)]
    if freeze in set(ok["freeze"]):
        ok = ok[ok["freeze"] == freeze]
    if ok["strategy"].nunique() < 2:
        raise DataError(f"{path}: compares fewer than 2 strategies on the real pool; nothing to choose from")
    means = ok.groupby("strategy")["val_accuracy"].mean().sort_values(ascending=False)
    best = str(means.index[0])
    seeds = ok.loc[ok["strategy"] == best, "seed"].nunique()
    versus = (f"{100 * (means[best] - means['random']):+.1f} points over random"
              if "random" in means.index and best != "random" else f"runner-up {means.index[1]} at "
              f"{100 * means.iloc[1]:.1f}%")
    caveat = (f"strategy {best} from {path}: mean validation accuracy {100 * means[best]:.1f}% ({versus}) over "
              f"{seeds} seed(s) and freeze mode(s) {', '.join(sorted(set(ok['freeze'])))}, on that sweep's data. "
              "A mean difference is not a significant one (see its report's paired intervals), and a strategy "
              "that wins on one data set need not win on yours.")
    return best, caveat
