"""The study's figures, drawn with seaborn and saved as PNG and SVG.

Each function takes the data it plots and an output directory, writes `<name>.png` and
`<name>.svg`, and returns the PNG path. Intervals are the ones in the tables (`stats.mean_ci`),
not seaborn's default bootstrap, so a band on a figure and a number in the report agree.
Every figure built from trials states how many seeds stand behind each point.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the report is written to files, often on a machine without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from raysweep.analysis import stats  # noqa: E402

METRIC_LABELS = {
    "val_accuracy": "validation accuracy",
    "val_macro_f1": "validation macro-F1",
    "train_accuracy": "train accuracy",
}
FRACTION_LABEL = "rows added (\u00d7 |labeled|)"
SERIES_CANDIDATES = ("sweep", "pool", "strategy", "encoder", "pooling", "rounds")
BASELINES = ("random", "real")  # drawn first, so they keep the first colour in every figure
SCATTER_MAX = 4000  # points drawn per scatter panel; statistics always use every row


@contextlib.contextmanager
def _style():
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9), \
            plt.rc_context({"svg.hashsalt": "raysweep", "figure.dpi": 100}):
        yield


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


def _fmt(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _ordered(values) -> list:
    """Sorted values with the baselines first."""
    uniq = sorted(set(values), key=lambda v: (v not in BASELINES, str(v) if not isinstance(v, (int, float)) else v))
    return uniq


def series_labels(trials: pd.DataFrame) -> tuple[pd.Series, str, list[str]]:
    """One label per trial naming its line: the varying columns among sweep/pool/strategy/...

    Returns (labels, legend title, label order). With nothing varying, the strategy names the line.
    """
    cols = [c for c in SERIES_CANDIDATES if c in trials.columns and trials[c].nunique(dropna=False) > 1]
    cols = cols or ["strategy"]
    keys = trials[cols].apply(lambda row: tuple(row), axis=1)
    labels = keys.map(lambda key: " \u00b7 ".join(_fmt(v) for v in key))
    order = [" \u00b7 ".join(_fmt(v) for v in key)
             for key in sorted(set(keys), key=lambda k: tuple((v not in BASELINES, str(v)) for v in k))]
    return labels, " \u00b7 ".join(cols), order


def _freeze_order(trials: pd.DataFrame) -> list[str]:
    known = ["last-linear", "pooler", "last-attention"]  # the study's order: least to most trained
    values = list(dict.fromkeys(trials["freeze"]))
    return [v for v in known if v in values] + sorted(v for v in values if v not in known)


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
    data = trials.dropna(subset=[metric]).copy()
    data["series"], title, order = series_labels(data)
    panels = _freeze_order(data)
    with _style():
        g = sns.relplot(data=data, x="fraction", y=metric, hue="series", hue_order=order, col="freeze",
                        col_order=panels, col_wrap=3 if len(panels) > 3 else None, kind="line",
                        errorbar=_interval, marker="o", markersize=5, height=3.3, aspect=1.15,
                        facet_kws={"sharey": True, "sharex": True})
        g.set_titles("freeze = {col_name}")
        g.set_axis_labels(FRACTION_LABEL, METRIC_LABELS.get(metric, metric))
        fractions = sorted(data["fraction"].unique())
        for ax in g.axes.flat:
            ax.set_xticks(fractions)
        g.legend.set_title(title)
        g.figure.suptitle(f"{METRIC_LABELS.get(metric, metric).capitalize()} vs added rows\n"
                          f"mean over seeds, band: 95% t-interval; {stats.seed_note(data)}", y=1.0, va="bottom")
        return _save(g.figure, out_dir, name)


def train_vs_val(trials: pd.DataFrame, out_dir: Path, name: str = "train_vs_val") -> Path:
    """Train accuracy beside validation accuracy per freeze mode: the over-fitting gap."""
    data = trials.dropna(subset=["train_accuracy", "val_accuracy"]).copy()
    data["series"], title, order = series_labels(data)
    long = data.melt(id_vars=["series", "freeze", "fraction", "seed"], value_vars=["train_accuracy", "val_accuracy"],
                     var_name="split", value_name="accuracy")
    long["split"] = long["split"].map({"train_accuracy": "train", "val_accuracy": "validation"})
    panels = _freeze_order(data)
    with _style():
        g = sns.relplot(data=long, x="fraction", y="accuracy", hue="series", hue_order=order, style="split",
                        style_order=["train", "validation"], col="freeze", col_order=panels,
                        col_wrap=3 if len(panels) > 3 else None, kind="line", errorbar=_interval, marker="o",
                        markersize=4, height=3.3, aspect=1.15)
        g.set_titles("freeze = {col_name}")
        g.set_axis_labels(FRACTION_LABEL, "accuracy")
        for ax in g.axes.flat:
            ax.set_xticks(sorted(data["fraction"].unique()))
        g.legend.set_title("")
        for text in g.legend.texts:  # seaborn writes the hue and style titles as legend entries
            if text.get_text() == "series":
                text.set_text(title)
        g.figure.suptitle("Train vs validation accuracy (the gap is over-fitting)\n"
                          f"mean over seeds, band: 95% t-interval; {stats.seed_note(data)}", y=1.0, va="bottom")
        return _save(g.figure, out_dir, name)


def parameter_plot(trials: pd.DataFrame, param: str, out_dir: Path, metric: str = "val_accuracy",
                   name: str | None = None) -> Path:
    """Every trial's metric against one varying parameter, with the mean and 95% interval per value."""
    data = trials.dropna(subset=[metric]).copy()
    values = sorted(data[param].unique(), key=lambda v: (isinstance(v, str), v))
    data["value"] = data[param].map(_fmt)
    order = [_fmt(v) for v in values]
    hue = "freeze" if param != "freeze" and data["freeze"].nunique() > 1 else None
    width = max(4.5, 0.9 * len(order) + 2.5)
    with _style():
        fig, ax = plt.subplots(figsize=(width, 3.8))
        sns.stripplot(data=data, x="value", y=metric, order=order, hue=hue,
                      hue_order=_freeze_order(data) if hue else None, dodge=bool(hue), alpha=0.55, size=4,
                      jitter=0.2, ax=ax, zorder=1)
        sns.pointplot(data=data, x="value", y=metric, order=order, errorbar=_interval, color="black",
                      linestyle="none", marker="D", markersize=5, capsize=0.15, err_kws={"linewidth": 1.4},
                      ax=ax, label="mean, 95% t-interval")
        ax.set_xlabel(FRACTION_LABEL if param == "fraction" else param)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        if len(order) > 4 and max(len(o) for o in order) > 6:
            ax.tick_params(axis="x", labelrotation=30)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
        ax.legend(title=hue, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        n_seeds = data["seed"].nunique()
        ax.set_title(f"{METRIC_LABELS.get(metric, metric)} by {param}: every trial, pooled over the other "
                     f"parameters\n{len(data)} trials, {n_seeds} seed{'s' if n_seeds != 1 else ''}",
                     fontsize="medium")
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
                    name: str = "llm_vs_teacher") -> tuple[Path, float]:
    """Confusion matrix of the LLM's labels against the teacher's, with the agreement (Fig. 1).

    Returns (figure, agreement) where agreement is the fraction of rows whose labels match.
    """
    data = generated.dropna(subset=["llm_label", "teacher_label"])
    llm, order_llm = label_names(data["llm_label"], class_names)
    teacher, order_t = label_names(data["teacher_label"], class_names)
    order = order_llm if order_llm == order_t else sorted(set(order_llm) | set(order_t), key=str)
    table = pd.crosstab(pd.Categorical(llm, order), pd.Categorical(teacher, order), dropna=False)
    agreement = float((llm.to_numpy() == teacher.to_numpy()).mean()) if len(data) else float("nan")
    size = 1.1 * len(order) + 2.2
    with _style():
        fig, ax = plt.subplots(figsize=(size + 0.8, size))
        sns.heatmap(table, annot=True, fmt="d", cmap="Blues", cbar_kws={"label": "rows"}, ax=ax, square=True)
        ax.set_xlabel("teacher label")
        ax.set_ylabel("LLM label (the label asked for)")
        ax.tick_params(axis="x", labelrotation=30)
        ax.tick_params(axis="y", labelrotation=0)
        ax.set_title(f"LLM vs teacher labels: agreement {agreement:.1%}\n{len(data):,} generated rows",
                     fontsize="medium")
        return _save(fig, out_dir, name), agreement


def label_distribution(real_labels: pd.Series, generated: pd.DataFrame, out_dir: Path,
                       class_names: list[str] | None = None, name: str = "label_distribution") -> Path:
    """Share of each class in the real pool and in the generated rows (Fig. 5)."""
    parts = []
    sources = [("real", real_labels.dropna())]
    sources.append(("generated (LLM label)", generated["llm_label"].dropna()))
    sources.append(("generated (teacher label)", generated["teacher_label"].dropna()))
    order = None
    for source, labels in sources:
        names, order_here = label_names(labels, class_names)
        order = order or order_here
        share = names.value_counts(normalize=True)
        parts.append(pd.DataFrame({"class": share.index, "share": share.to_numpy(),
                                   "source": f"{source}, n = {len(labels):,}"}))
    data = pd.concat(parts, ignore_index=True)
    order = order + sorted(set(data["class"]) - set(order), key=str)
    with _style():
        fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(order) + 2), 3.8))
        sns.barplot(data=data, x="class", y="share", hue="source", order=order, ax=ax)
        ax.set_xlabel("class")
        ax.set_ylabel("share of rows")
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.legend(title=None, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.set_title("Label distribution: real vs generated", fontsize="medium")
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
    panels = _freeze_order(data)
    n_seeds = data["seed"].nunique()
    rng = np.random.default_rng(seed)
    with _style():
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.4, 3.6), squeeze=False,
                                 sharey=True)
        for ax, freeze in zip(axes.flat, panels):
            part = data[data["freeze"] == freeze]
            corr = stats.pearson(part["entropy"], part["sqbc"])
            shown = part.iloc[rng.permutation(len(part))[:SCATTER_MAX]]
            ax.scatter(shown["entropy"], shown["sqbc"], s=14 if len(shown) < 500 else 5, alpha=0.35,
                       linewidths=0, rasterized=True)
            ax.set_title(f"freeze = {freeze}\nr = {corr['r']:.3f} (n = {corr['n']:,})", fontsize="medium")
            ax.set_xlabel("entropy of predicted classes")
        axes.flat[0].set_ylabel("SQBC disagreement")
        fig.tight_layout()  # before the suptitle, which then sits just above the panels
        fig.suptitle(f"Entropy vs SQBC disagreement per pool row; Pearson r over all rows of "
                     f"{n_seeds} seed{'s' if n_seeds != 1 else ''}", y=1.0, va="bottom", fontsize="medium")
        return _save(fig, out_dir, name)


def val_confusion(trials: pd.DataFrame, out_dir: Path, class_names: list[str] | None = None,
                  name: str = "val_confusion") -> Path:
    """Validation confusion matrix (row-normalised, summed over seeds) of each freeze mode's best cell.

    The best cell is the one with the highest mean validation accuracy at the largest fraction.
    """
    data = trials.dropna(subset=["confusion"])
    panels = _freeze_order(data)
    summary = stats.summarize(data[data["fraction"] == data["fraction"].max()], "val_accuracy")
    cells = stats.cell_columns(data)
    with _style():
        mats = []
        for freeze in panels:
            best = summary[summary["freeze"] == freeze].sort_values("mean", ascending=False).iloc[0]
            chosen = data[_matches(data, best, cells)]
            counts = sum(np.asarray(json.loads(c), dtype=float) for c in chosen["confusion"])
            rows = counts.sum(axis=1, keepdims=True)
            label = " \u00b7 ".join(_fmt(best[c]) for c in cells if c in SERIES_CANDIDATES and data[c].nunique() > 1)
            mats.append((freeze, np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0),
                         label or _fmt(best["strategy"]), _fmt(best["fraction"]), len(chosen)))
        k = mats[0][1].shape[0]
        names = class_names if class_names and len(class_names) == k else [str(i) for i in range(k)]
        side = 0.6 * k + 1.4
        fig, axes = plt.subplots(1, len(mats), figsize=(side * len(mats) + 1.0, side + 0.6), squeeze=False)
        for ax, (freeze, mat, label, fraction, n) in zip(axes.flat, mats):
            sns.heatmap(pd.DataFrame(mat, index=names, columns=names), annot=True, fmt=".0%", cmap="Blues",
                        vmin=0, vmax=1, cbar=False, square=True, ax=ax, annot_kws={"fontsize": 8})
            ax.set_title(f"freeze = {freeze}\n{label}, fraction {fraction}, {n} seed{'s' if n != 1 else ''}",
                         fontsize="small")
            ax.set_xlabel("predicted")
            ax.tick_params(axis="x", labelrotation=40)
            ax.tick_params(axis="y", labelrotation=0)
            for lbl in ax.get_xticklabels():
                lbl.set_horizontalalignment("right")
        axes.flat[0].set_ylabel("true label")
        for ax in axes.flat[1:]:
            ax.set_yticklabels([])
        fig.tight_layout()
        fig.suptitle("Validation confusion of each freeze mode's best cell at the largest fraction\n"
                     "(counts summed over seeds; rows sum to 100%)", y=1.02, va="bottom", fontsize="medium")
        return _save(fig, out_dir, name)
