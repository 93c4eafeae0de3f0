"""The study's figures, drawn with seaborn and saved as PNG and SVG.

Each function takes the data it plots and an output directory, writes `<name>.png` and
`<name>.svg`, and returns the PNG path. Intervals are the ones in the tables (`stats.mean_ci`),
not seaborn's default bootstrap, so a band on a figure and a number in the report agree.
Every figure built from trials states how many seeds stand behind each point.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the report is written to files, often on a machine without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from raysweep.analysis import compare, stats  # noqa: E402

METRIC_LABELS = {
    "val_accuracy": "validation accuracy",
    "val_macro_f1": "validation macro-F1",
    "val_positive_f1": "validation F1 of the positive class",
    "val_pearson": "validation Pearson correlation",
    "val_spearman": "validation Spearman correlation",
    "val_mse": "validation MSE",
    "train_accuracy": "train accuracy",
    "train_mse": "train MSE",
}


def label(metric: str) -> str:
    """How a figure or sentence names a metric column."""
    return METRIC_LABELS.get(metric, metric)


def unit(metric: str) -> str:
    """What follows a number printed as `tables.pct_ci` prints it: a share in percent, a correlation x 100."""
    return " (x 100)" if metric.endswith(("pearson", "spearman")) else "%"

FRACTION_LABEL = "rows added (\u00d7 |labeled|)"
SERIES_CANDIDATES = ("sweep", "pool", "strategy", "encoder", "pooling", "rounds")
SCATTER_MAX = 4000  # points drawn per scatter panel; statistics always use every row
MANY_LINES = 4  # more lines than this in one panel: no bands there (they overlap), differences drawn apart


@contextlib.contextmanager
def _style():
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9), \
            plt.rc_context({"svg.hashsalt": "raysweep", "figure.dpi": 100}):
        yield


@contextlib.contextmanager
def _global_seed(seed: int):
    """seaborn's strip-plot jitter draws from numpy's global generator: seed it for the figure,
    so the same results give the same file, and give the caller's state back afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _save(fig, out_dir: Path, name: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    fig.savefig(png, dpi=150, bbox_inches="tight", metadata={"Software": None})
    # No date in the SVG: the same results give byte-identical figures.
    fig.savefig(out_dir / f"{name}.svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return png


def _interval(values) -> tuple[float, float]:
    """seaborn `errorbar` callable: the 95% t-interval, or no band for a single seed."""
    mean, low, high = stats.mean_ci(values)
    return (mean, mean) if np.isnan(low) else (low, high)


def _band_note(trials: pd.DataFrame) -> str:
    low, high = stats.seed_counts(trials)
    if high == 1:
        return "1 seed per point, so no interval"
    return (f"mean over seeds, band: 95% t-interval; {stats.seed_note(trials)}"
            + ("; none for a point of one seed" if low == 1 else ""))


def _pooled_columns(data: pd.DataFrame, lines: Lines) -> list[str]:
    """Parameters that vary but have no line, panel or axis of their own: a point would pool
    several cells, and an interval over them would not be one over the seeds of one cell."""
    own = {lines.hue, "freeze", "fraction", *([c for c in SERIES_CANDIDATES] if lines.row else [])}
    return [c for c in stats.cell_columns(data) if c not in own and data[c].nunique(dropna=False) > 1]


def _fmt(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass
class Lines:
    """How the trials of a learning-curve figure are split into lines and rows of panels."""

    hue: str  # the column that colours the lines
    hue_order: list
    palette: dict
    row: str | None  # a column whose values get one row of panels each, or None
    row_title: str
    row_order: list


def lines_for(data: pd.DataFrame) -> tuple[pd.DataFrame, Lines]:
    """Colour by strategy (else by pool, else by what varies); every other varying column among
    sweep/pool/encoder/pooling/rounds becomes a row of panels, so no panel holds more lines than
    there are strategies."""
    vary = [c for c in SERIES_CANDIDATES if c in data.columns and data[c].nunique(dropna=False) > 1]
    hue = next((c for c in ("strategy", "pool") if c in vary), vary[-1] if vary else "strategy")
    rest = [c for c in vary if c != hue]
    data = data.copy()
    data[hue] = data[hue].map(_fmt)
    hue_order = stats.baseline_first(data[hue])
    palette = dict(zip(hue_order, sns.color_palette("tab10" if len(hue_order) <= 10 else "husl", len(hue_order))))
    row, row_title, row_order = None, "", []
    if rest:
        row, row_title = "_row", " \u00b7 ".join(rest)
        keys = data[rest].apply(tuple, axis=1)
        data[row] = keys.map(lambda k: " \u00b7 ".join(_fmt(v) for v in k))
        row_order = [" \u00b7 ".join(_fmt(v) for v in k)
                     for k in sorted(set(keys), key=lambda k: tuple((v not in stats.BASELINES, str(v)) for v in k))]
    return data, Lines(hue, hue_order, palette, row, row_title, row_order)


def _facet_kws(lines: Lines, panels: list[str]) -> dict:
    kws = {"col": "freeze", "col_order": panels, "hue": lines.hue, "hue_order": lines.hue_order,
           "palette": lines.palette}
    if lines.row:
        kws.update(row=lines.row, row_order=lines.row_order)
    else:
        kws["col_wrap"] = 3 if len(panels) > 3 else None
    return kws


def _titles(g, lines: Lines) -> None:
    if lines.row:
        g.set_titles(f"{lines.row_title} = {{row_name}}, freeze = {{col_name}}")
    else:
        g.set_titles("freeze = {col_name}")


def _matches(data: pd.DataFrame, row: pd.Series, cols: list[str]) -> np.ndarray:
    """Rows of `data` equal to `row` in `cols` (a missing value matches a missing value)."""
    mask = np.ones(len(data), dtype=bool)
    for c in cols:
        col = data[c]
        mask &= col.isna().to_numpy() if pd.isna(row[c]) else (col == row[c]).to_numpy()
    return mask


def learning_curves(trials: pd.DataFrame, out_dir: Path, metric: str = "val_accuracy",
                    name: str = "learning_curves") -> Path:
    """Metric vs added fraction, one panel per freeze mode, one line per strategy/pool (Figs. 2-3)."""
    data, lines = lines_for(trials.dropna(subset=[metric]))
    panels = stats.freeze_order(data)
    many = len(lines.hue_order) > MANY_LINES
    pooled = _pooled_columns(data, lines)
    note = (f"mean over seeds; {stats.seed_note(trials)}; {len(lines.hue_order)} lines, so no bands "
            f"(intervals: the differences figure)" if many else
            f"mean over the trials of every {', '.join(pooled)}, so no band (a band is over the seeds of one cell)"
            if pooled else _band_note(trials))
    banded = not (many or pooled or stats.seed_counts(data)[1] == 1)
    with _style():
        g = sns.relplot(data=data, x="fraction", y=metric, kind="line", errorbar=_interval if banded else None,
                        marker="o",
                        markersize=5, height=3.3, aspect=1.15, facet_kws={"sharey": True, "sharex": True},
                        **_facet_kws(lines, panels))
        _titles(g, lines)
        g.set_axis_labels(FRACTION_LABEL, METRIC_LABELS.get(metric, metric))
        for ax in g.axes.flat:
            ax.set_xticks(sorted(data["fraction"].unique()))
        label = METRIC_LABELS.get(metric, metric)
        g.figure.suptitle(f"{label[0].upper() + label[1:]} vs added rows\n{note}", y=1.0, va="bottom")
        return _save(g.figure, out_dir, name)


def differences(trials: pd.DataFrame, out_dir: Path, metric: str = "val_accuracy", factor: str = "strategy",
                baseline: str = "random", name: str = "learning_curves_vs_random") -> Path:
    """Small multiples: each level of `factor` minus `baseline` at each fraction, one panel per
    (level, context), so many strategies do not overlap. Each dot is one seed's paired difference;
    the line is their mean with a 95% t-interval band. Pairs that are one training (fraction 0, the
    whole pool) are drawn hollow on the zero line: they are left out of every test."""
    data = trials.dropna(subset=[metric]).assign(_training=compare.training_keys(trials.dropna(subset=[metric])))
    context = [c for c in stats.cell_columns(data) if c not in (factor, "fraction")
               and data[c].nunique(dropna=False) > 1]
    pairs = []
    groups = data.groupby(context, sort=False, dropna=False) if context else [((), data)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        base = group[group[factor] == baseline]
        for level in sorted(set(group[factor]) - {baseline}, key=str):
            other = group[group[factor] == level]
            p = other.merge(base, on=["fraction", "seed"], suffixes=("", "_b"))[
                ["fraction", "seed", metric, f"{metric}_b", "_training", "_training_b"]]
            p["diff"] = 100 * (p[metric] - p[f"{metric}_b"])
            p["shared"] = p["_training"] == p["_training_b"]
            p["row"] = " \u00b7 ".join(_fmt(v) for v in key) if key else ""
            p["col"] = level
            pairs.append(p)
    table = pd.concat(pairs, ignore_index=True)
    rows = list(dict.fromkeys(table["row"]))
    if "freeze" in context:  # the study's order of freeze modes, top to bottom
        rank = {f: i for i, f in enumerate(stats.FREEZE_ORDER)}
        rows.sort(key=lambda r: rank.get(r.split(" \u00b7 ")[context.index("freeze")], len(rank)))
    cols = stats.baseline_first(table["col"])
    with _style():
        fig, axes = plt.subplots(len(rows), len(cols), figsize=(max(5.0, 2.3 * len(cols) + 0.8), 2.2 * len(rows) + 1.2),
                                 sharex=True, sharey=True, squeeze=False)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                ax = axes[i][j]
                part = table[(table["row"] == r) & (table["col"] == c)]
                ax.axhline(0, color="0.5", linewidth=0.8, linestyle="--")
                used, shared = part[~part["shared"]], part[part["shared"]]
                ax.scatter(used["fraction"], used["diff"], s=10, alpha=0.5, color="C0")
                ax.scatter(shared["fraction"], shared["diff"], s=14, facecolors="none", edgecolors="0.5")
                curve = used.groupby("fraction")["diff"].agg(list).sort_index()
                if len(curve):
                    mean = [stats.mean_ci(v)[0] for v in curve]
                    band = [_interval(v) for v in curve]
                    ax.plot(curve.index, mean, color="C0", marker="o", markersize=4)
                    if any(len(v) > 1 for v in curve):  # one seed's difference has no interval to draw
                        ax.fill_between(curve.index, [b[0] for b in band], [b[1] for b in band], color="C0",
                                        alpha=0.2)
                ax.set_title(f"{c} \u2212 {baseline}" + (f"\n{r}" if r else ""), fontsize="small")
                ax.set_xticks(sorted(table["fraction"].unique()))
                if i == len(rows) - 1:
                    ax.set_xlabel(FRACTION_LABEL)
        fig.supylabel(f"\u0394 {METRIC_LABELS.get(metric, metric)}, points")
        band = ("line: the one seed's difference, so no band" if stats.seed_counts(trials)[1] == 1
                else "line, band: mean, 95% t-interval (none for one seed)")
        fig.suptitle(f"Each {factor} minus {baseline}, paired on seed ({stats.seed_note(trials)})\n"
                     f"dots: seeds; {band}\nhollow: one training, left out of every test",
                     fontsize="medium")
        fig.tight_layout()
        return _save(fig, out_dir, name)


def train_vs_val(trials: pd.DataFrame, out_dir: Path, what: str = "accuracy", name: str = "train_vs_val") -> Path:
    """Train `what` (accuracy, or a regression's mse) beside validation's per freeze mode: the over-fitting gap."""
    train, val = f"train_{what}", f"val_{what}"
    data, lines = lines_for(trials.dropna(subset=[train, val]))
    keep = [c for c in (lines.hue, lines.row, "freeze", "fraction", "seed") if c]
    long = data.melt(id_vars=keep, value_vars=[train, val], var_name="split", value_name=what)
    long["split"] = long["split"].map({train: "train", val: "validation"})
    panels = stats.freeze_order(data)
    shown = "MSE" if what == "mse" else what
    pooled = _pooled_columns(data, lines)
    note = (f"mean over the trials of every {', '.join(pooled)}, so no band (a band is over the seeds of one cell)"
            if pooled else _band_note(trials))
    with _style():
        g = sns.relplot(data=long, x="fraction", y=what, style="split", style_order=["train", "validation"],
                        kind="line", errorbar=None if pooled or stats.seed_counts(data)[1] == 1 else _interval,
                        marker="o", markersize=4, height=3.3,
                        aspect=1.15, **_facet_kws(lines, panels))
        _titles(g, lines)
        g.set_axis_labels(FRACTION_LABEL, shown)
        for ax in g.axes.flat:
            ax.set_xticks(sorted(data["fraction"].unique()))
        g.figure.suptitle(f"Train vs validation {shown} (the gap is over-fitting)\n{note}", y=1.0, va="bottom")
        return _save(g.figure, out_dir, name)


def parameter_plot(trials: pd.DataFrame, param: str, out_dir: Path, metric: str = "val_accuracy",
                   name: str | None = None, seed: int = 0) -> Path:
    """Every trial's metric against one varying parameter, with the mean per value.

    A value's trials pool every other parameter's cells (one seed each, or several): they are not
    seeds of one cell, so no interval is drawn (the learning curves and tables have those). A
    training several cells of one value share (`training`) counts once."""
    data = trials.dropna(subset=[metric]).copy()
    if "training" in data.columns and data["training"].notna().all():
        data = data.drop_duplicates(subset=[param, "training"])
    data["value"] = data[param].map(_fmt)
    if param == "freeze":
        order = stats.freeze_order(data)
    elif pd.api.types.is_numeric_dtype(data[param]):
        order = [_fmt(v) for v in sorted(data[param].unique())]
    else:
        order = stats.baseline_first(data["value"])
    hue = "freeze" if param != "freeze" and data["freeze"].nunique() > 1 else None
    width = max(4.5, 0.9 * len(order) + 2.5)
    with _style(), _global_seed(seed):
        fig, ax = plt.subplots(figsize=(width, 3.8))
        # The mean is a hollow diamond drawn under the dots, so it never hides a trial.
        sns.pointplot(data=data, x="value", y=metric, order=order, errorbar=None, color="black",
                      linestyle="none", marker="D", markersize=7, markerfacecolor="none", markeredgewidth=1.4,
                      ax=ax, label="mean of the trials", zorder=1)
        sns.stripplot(data=data, x="value", y=metric, order=order, hue=hue,
                      hue_order=stats.freeze_order(data) if hue else None, dodge=bool(hue), alpha=0.6, size=4,
                      jitter=0.2, ax=ax, zorder=3)
        ax.set_xlabel(FRACTION_LABEL if param == "fraction" else param)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        if len(order) > 4 and max(len(o) for o in order) > 6:
            ax.tick_params(axis="x", labelrotation=30)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
        handles, labels = ax.get_legend_handles_labels()
        mean = labels.index("mean of the trials")
        handles.append(handles.pop(mean))
        labels.append(labels.pop(mean))
        labels = [f"{hue} = {lbl}" if hue and i < len(labels) - 1 else lbl for i, lbl in enumerate(labels)]
        ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        n_seeds = data["seed"].nunique()
        ax.set_title(f"{METRIC_LABELS.get(metric, metric)} by {param}: every trial, pooled over the other "
                     f"parameters\n{len(data)} trials, {n_seeds} seed{'s' if n_seeds != 1 else ''}; no interval: "
                     f"the trials of a value are not seeds of one cell", fontsize="medium")
        return _save(fig, out_dir, name or f"by_{param}")


def label_names(labels: pd.Series, class_names: list[str] | None) -> tuple[pd.Series, list[str]]:
    """Labels as display names with their order: integer ids become class names when known."""
    numeric = pd.to_numeric(labels, errors="coerce")
    if class_names and numeric.notna().all() and numeric.between(0, len(class_names) - 1).all() \
            and (numeric % 1 == 0).all():
        return numeric.astype(int).map(dict(enumerate(class_names))), list(class_names)
    as_str = labels.astype(str)
    if class_names and set(as_str) <= set(class_names):
        return as_str, list(class_names)
    if numeric.notna().all():
        return numeric.astype(int).astype(str), [str(v) for v in sorted(numeric.astype(int).unique())]
    return as_str, sorted(set(as_str))


def label_confusion(generated: pd.DataFrame, out_dir: Path, class_names: list[str] | None = None,
                    name: str = "llm_vs_teacher", against: str = "teacher_label", against_name: str = "teacher",
                    rows_name: str = "generated rows") -> tuple[Path, float]:
    """Confusion matrix of the LLM's labels against the teacher's, with the agreement (Fig. 1);
    or against another column (`against`: the gold labels of the rows the LLM annotated).

    Returns (figure, agreement) where agreement is the fraction of rows whose labels match.
    """
    data = generated.dropna(subset=["llm_label", against])
    llm, order_llm = label_names(data["llm_label"], class_names)
    teacher, order_t = label_names(data[against], class_names)
    order = order_llm if order_llm == order_t else sorted(set(order_llm) | set(order_t), key=str)
    table = pd.crosstab(pd.Categorical(llm, order), pd.Categorical(teacher, order), dropna=False)
    agreement = float((llm.to_numpy() == teacher.to_numpy()).mean()) if len(data) else float("nan")
    size = 1.1 * len(order) + 2.2
    with _style():
        fig, ax = plt.subplots(figsize=(size + 0.8, size))
        sns.heatmap(table, annot=True, fmt="d", cmap="Blues", cbar_kws={"label": "rows"}, ax=ax, square=True)
        ax.set_xlabel(f"{against_name} label")
        ax.set_ylabel("LLM label")
        ax.tick_params(axis="x", labelrotation=30)
        ax.tick_params(axis="y", labelrotation=0)
        ax.set_title(f"LLM vs {against_name} labels: agreement {agreement:.1%}\n{len(data):,} {rows_name}",
                     fontsize="medium")
        return _save(fig, out_dir, name), agreement


def label_distribution(real_labels: pd.Series, generated: pd.DataFrame, out_dir: Path,
                       class_names: list[str] | None = None, name: str = "label_distribution") -> Path:
    """Share of each class in the real pool and in the generated rows (Fig. 5)."""
    sources = [("real", real_labels.dropna()), ("generated (LLM label)", generated["llm_label"].dropna()),
               ("generated (teacher label)", generated["teacher_label"].dropna())]
    return class_shares(sources, out_dir, class_names, "Label distribution: real vs generated", name)


def class_shares(sources: list[tuple[str, pd.Series]], out_dir: Path, class_names: list[str] | None, title: str,
                 name: str, xlabel: str = "class") -> Path:
    """Bars of each class's share of the labels of each (source, labels), side by side per class."""
    parts = []
    order = None
    for source, labels in sources:
        names, order_here = label_names(labels.reset_index(drop=True), class_names)
        order = order or order_here
        share = names.value_counts(normalize=True)
        parts.append(pd.DataFrame({"class": share.index, "share": share.to_numpy(),
                                   "source": f"{source}, n = {len(labels):,}"}))
    data = pd.concat(parts, ignore_index=True)
    order = order + sorted(set(data["class"]) - set(order), key=str)
    with _style():
        fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(order) + 2), 3.8))
        sns.barplot(data=data, x="class", y="share", hue="source", order=order, ax=ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("share of rows")
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.legend(title=None, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.set_title(title, fontsize="medium")
        return _save(fig, out_dir, name)


def embedding_pca(real: np.ndarray, generated: np.ndarray, out_dir: Path, seed: int = 0,
                  name: str = "embeddings_pca") -> Path:
    """Real and generated sentence vectors projected on the first two principal components (Fig. 4).

    The projection is fitted on all rows of both sets; at most SCATTER_MAX rows per set are drawn.
    """
    from sklearn.decomposition import PCA

    both = np.vstack([real, generated]).astype(float)
    pca = PCA(n_components=2, random_state=seed).fit(both)
    rng = np.random.default_rng(seed)
    with _style():
        fig, ax = plt.subplots(figsize=(6.2, 5.0))
        for label, vecs, color in (("real", real, "C0"), ("generated", generated, "C1")):
            idx = rng.permutation(len(vecs))[:SCATTER_MAX]
            xy = pca.transform(np.asarray(vecs, dtype=float)[idx])
            shown = f" ({len(idx):,} of {len(vecs):,} shown)" if len(idx) < len(vecs) else f" ({len(vecs):,})"
            ax.scatter(xy[:, 0], xy[:, 1], s=14 if len(idx) < 500 else 6, alpha=0.45, color=color, label=label + shown, rasterized=True,
                       linewidths=0)
        ratio = pca.explained_variance_ratio_
        ax.set_xlabel(f"PC1 ({ratio[0]:.1%} of variance)")
        ax.set_ylabel(f"PC2 ({ratio[1]:.1%} of variance)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, markerscale=2)
        ax.set_title("Sentence embeddings: real vs generated (PCA)", fontsize="medium")
        return _save(fig, out_dir, name)


def entropy_vs_sqbc(diagnostics: pd.DataFrame, out_dir: Path, seed: int = 0,
                    name: str = "entropy_vs_sqbc") -> Path:
    """Entropy against SQBC disagreement per pool row, one panel per freeze mode, Pearson r in each."""
    data = diagnostics.dropna(subset=["entropy", "sqbc"])
    panels = stats.freeze_order(data)
    n_seeds = data["seed"].nunique()
    rng = np.random.default_rng(seed)
    with _style():
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.4, 3.8), squeeze=False,
                                 sharey=True, layout="constrained")
        for ax, freeze in zip(axes.flat, panels):
            part = data[data["freeze"] == freeze]
            corr = stats.pearson(part["entropy"], part["sqbc"])
            shown = part.iloc[rng.permutation(len(part))[:SCATTER_MAX]]
            ax.scatter(shown["entropy"], shown["sqbc"], s=14 if len(shown) < 500 else 5, alpha=0.35,
                       linewidths=0, rasterized=True)
            ax.set_title(f"freeze = {freeze}\nr = {corr['r']:.3f} (n = {corr['n']:,})", fontsize="medium")
            ax.set_xlabel("entropy of predicted classes")
        axes.flat[0].set_ylabel("SQBC disagreement")
        fig.suptitle(f"Entropy vs SQBC disagreement per pool row; Pearson r over all rows of "
                     f"{n_seeds} seed{'s' if n_seeds != 1 else ''}", fontsize="medium")
        return _save(fig, out_dir, name)


def confusions(trials: pd.DataFrame) -> pd.Series:
    """The `confusion` column parsed into square count matrices; None where it is empty or not a matrix."""
    def parse(text):
        if not isinstance(text, str) or not text.strip():
            return None
        try:
            mat = np.asarray(json.loads(text), dtype=float)
        except (ValueError, TypeError):
            return None
        return mat if mat.ndim == 2 and mat.shape[0] == mat.shape[1] and mat.size else None

    if "confusion" not in trials.columns:
        return pd.Series(None, index=trials.index, dtype=object)
    return trials["confusion"].map(parse)


def val_confusion(trials: pd.DataFrame, out_dir: Path, class_names: list[str] | None = None,
                  name: str = "val_confusion") -> Path:
    """Validation confusion matrix (row-normalised, summed over seeds) of each freeze mode's best cell.

    The best cell is the one with the highest mean validation accuracy at the largest fraction.
    """
    data = trials.assign(_confusion=confusions(trials)).dropna(subset=["_confusion"])
    panels = stats.freeze_order(data)
    # Each freeze mode's own largest fraction: a sweep still running may not have reached the grid's in every mode.
    largest = data.groupby("freeze")["fraction"].transform("max")
    summary = stats.summarize(data[data["fraction"] == largest], "val_accuracy")
    cells = stats.cell_columns(data)
    with _style():
        mats = []
        for freeze in panels:
            best = stats.best_row(summary[summary["freeze"] == freeze], "mean")
            chosen = data[_matches(data, best, cells)]
            counts = np.sum(np.stack(list(chosen["_confusion"])), axis=0)
            rows = counts.sum(axis=1, keepdims=True)
            label = " \u00b7 ".join(_fmt(best[c]) for c in cells if c in SERIES_CANDIDATES and data[c].nunique() > 1)
            mats.append((freeze, np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0),
                         label or _fmt(best["strategy"]), _fmt(best["fraction"]), len(chosen)))
        k = mats[0][1].shape[0]
        names = class_names if class_names and len(class_names) == k else [str(i) for i in range(k)]
        side = 0.6 * k + 1.4
        height = side + 1.0
        fig, axes = plt.subplots(1, len(mats), figsize=(side * len(mats) + 1.0, height), squeeze=False)
        for ax, (freeze, mat, label, fraction, n) in zip(axes.flat, mats):
            sns.heatmap(pd.DataFrame(mat, index=names, columns=names), annot=True, fmt=".0%", cmap="Blues",
                        vmin=0, vmax=1, cbar=False, square=True, ax=ax, annot_kws={"fontsize": 8})
            ax.set_title(f"freeze = {freeze}\n{label}, fraction {fraction}, {n} seed{'s' if n != 1 else ''}",
                         fontsize="small")
            ax.set_xlabel("predicted")
            ax.tick_params(axis="y", labelrotation=0)
            if max(len(n) for n in names) > 3:
                ax.tick_params(axis="x", labelrotation=40)
                for lbl in ax.get_xticklabels():
                    lbl.set_horizontalalignment("right")
            else:
                ax.tick_params(axis="x", labelrotation=0)
        axes.flat[0].set_ylabel("true label")
        for ax in axes.flat[1:]:
            ax.set_yticklabels([])
        # Square heatmaps defeat constrained layout: keep 0.75 inch free at the top for the title.
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.75 / height))
        fig.suptitle("Validation confusion of each freeze mode's best cell at the largest fraction\n"
                     "(counts summed over seeds; rows sum to 100%)", y=1 - 0.1 / height, va="top",
                     fontsize="medium")
        return _save(fig, out_dir, name)


def variance_components(table: pd.DataFrame, out_dir: Path, metric: str = "val_accuracy",
                        name: str = "variance_components") -> Path:
    """Each source's share of the spread of `metric` (analysis/variance.py's table), one bar each."""
    with _style():
        fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(table) + 1.2))
        colors = ["#c44e52" if k in ("seed", "evaluation rows") else "#4c72b0" for k in table["kind"]]
        ax.barh(table["component"], 100 * table["share"], color=colors)
        ax.invert_yaxis()
        for y, (share, sd) in enumerate(zip(table["share"], table["sd_pp"])):
            ax.text(100 * share, y, f" {100 * share:.0f}% (sd {sd:.2f} pp)", va="center", fontsize=8)
        ax.set_xlim(0, 118)
        ax.set_xlabel(f"share of the variance of {label(metric)} (%)")
        ax.set_title("Which axis matters: compared axes (blue), seed and evaluation-row noise (red)")
        return _save(fig, out_dir, name)


def accuracy_vs_dollars(table: pd.DataFrame, out_dir: Path, metric: str = "val_accuracy", name: str = "accuracy_vs_dollars",
                        context: list[str] | None = None) -> Path:
    """Each source's mean `metric` (95% t-interval over seeds as error bars) against what its added
    labels cost, one line per source from its fraction 0 (the labeled set, $0) up; one panel per
    value of `context` (freeze, strategy, ...). The x axis is symmetric-log: $0 (an LLM that bills
    nothing) stays on it beside cents and dollars. `table`: analysis.costs.sources."""
    context = context or []
    panel = table[context].astype(str).agg(", ".join, axis=1) if context else pd.Series("", index=table.index)
    panels = list(dict.fromkeys(panel))
    with _style():
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False, sharey=True)
        for ax, key in zip(axes[0], panels):
            part = table[panel == key]
            zero = part[part["fraction"] == 0]
            # Every line starts at the labeled set alone (fraction 0, its own source in the table).
            for i, source in enumerate(s for s in dict.fromkeys(part["source"]) if s not in set(zero["source"])):
                line = pd.concat([zero, part[part["source"] == source]]).drop_duplicates("fraction")
                line = line.dropna(subset=["cost_usd"]).sort_values(["cost_usd", "fraction"])
                err = np.vstack([line["mean"] - line["ci_low"], line["ci_high"] - line["mean"]])
                err = np.where(np.isnan(err), 0, err)
                ax.errorbar(line["cost_usd"], line["mean"], yerr=err, marker="o", markersize=4, capsize=3,
                            label=source, color=sns.color_palette()[i % 10])
            # Linear below the smallest price drawn, so $0 and the cheapest source are both apart.
            positive = table["cost_usd"][table["cost_usd"] > 0]
            ax.set_xscale("symlog", linthresh=10 ** np.floor(np.log10(positive.min())) if len(positive) else 0.01)
            ax.set_xlabel("dollars for the added rows' labels")
            ax.set_title(key, fontsize=9)
        axes[0][0].set_ylabel(label(metric))
        axes[0][-1].legend(fontsize=8, loc="best")
        fig.suptitle(f"{label(metric).capitalize()} against dollars per source\n{_band_note_of(table)}", y=1.0,
                     va="bottom")
        return _save(fig, out_dir, name)


def _band_note_of(table: pd.DataFrame) -> str:
    low, high = int(table["n_seeds"].min()), int(table["n_seeds"].max())
    seeds = f"{low}" if low == high else f"{low}-{high}"
    return f"mean over {seeds} seeds, bars: 95% t-interval" + ("; none for a point of one seed" if low == 1 else "")
