"""One report from one or more results directories: report.md, a self-contained report.html,
figures (PNG + SVG) and tables (CSV + Markdown).

`analyze` is the whole pipeline: read (`results`), compute (`stats`, `tables`), draw (`figures`),
write (`document`). Each section of the report is one function below, in the report's order. A
missing input never fails the report: the figure it would feed is listed under "Skipped figures"
with the reason.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from raysweep.analysis import figures, selection, stats, tables
from raysweep.analysis.document import Doc
from raysweep.analysis.results import Results, combined_trials, load_many
from raysweep.analysis.tables import pct_ci, value_str

MAX_REPORT_ROWS = 80  # longer tables are linked (CSV and Markdown) instead of printed in the report


@dataclass
class Run:
    """What the sections share while one report is written."""

    results: list[Results]
    output_dir: Path
    n_boot: int
    seed: int
    doc: Doc
    trials: pd.DataFrame  # every trial, ok or failed
    ok: pd.DataFrame  # the successful ones: every number comes from these
    varying: list[str]  # parameters that take more than one value among `ok`
    figures: list[tuple[Path, str]] = field(default_factory=list)  # (png, caption)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (figure, why)
    cells: pd.DataFrame | None = None  # tables.cell_table(ok)
    paired: pd.DataFrame | None = None  # strategy minus random over seeds and fractions (headline)

    @property
    def fig_dir(self) -> Path:
        return self.output_dir / "figures"

    @property
    def tab_dir(self) -> Path:
        return self.output_dir / "tables"

    @property
    def several(self) -> bool:
        return len(self.results) > 1

    def table(self, raw: pd.DataFrame, shown: pd.DataFrame, name: str, inline: bool = True) -> None:
        """Write a table as CSV + Markdown; print it in the report if it is short enough."""
        tables.write_table(raw, shown, self.tab_dir, name)
        if not inline:
            return
        if len(shown) <= MAX_REPORT_ROWS:
            self.doc.table(shown)
        else:
            self.doc.para(f"{len(shown)} rows: see `tables/{name}.md` and `tables/{name}.csv`.")


def analyze(results_dirs: list[Path], output_dir: Path, n_boot: int = stats.N_BOOT, seed: int = 0) -> Path:
    """Write report.md, report.html, figures/ and tables/ for `results_dirs` into `output_dir`.

    Returns the path of report.md. `seed` seeds the bootstrap and the figures' subsampling.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = load_many([Path(d) for d in results_dirs])
    trials = combined_trials(results)
    ok = trials[trials["status"] == "ok"].copy()
    run = Run(results=results, output_dir=output_dir, n_boot=n_boot, seed=seed,
              doc=Doc(title=f"raysweep report: {', '.join(r.name for r in results)}"),
              trials=trials, ok=ok, varying=stats.varying_parameters(ok) if len(ok) else [])
    if len(ok):
        run.cells = tables.cell_table(ok)

    summary(run)
    headline(run)
    trial_figures(run)
    extras = [sweep_extras(run, res) for res in results]
    run.doc.heading("Figures")
    for png, caption in run.figures:
        run.doc.heading(f"`{png.stem}`", level=3)
        run.doc.figure(png, caption)
    detail_tables(run, extras)
    selection.section(run)  # the rows each strategy chose (analysis/selection.py)
    failed_trials(run)
    skipped_figures(run)
    reproduce(run)
    method(run)

    (output_dir / "report.md").write_text(run.doc.to_markdown(output_dir))
    (output_dir / "report.html").write_text(run.doc.to_html())
    return output_dir / "report.md"


# --------------------------------------------------------------------------- the sections


def summary(run: Run) -> None:
    doc, ok, trials = run.doc, run.ok, run.trials
    doc.heading("Summary")
    low, high = stats.seed_counts(ok)
    n_cells = len(ok.groupby(stats.cell_columns(ok), dropna=False)) if len(ok) else 0
    items = [f"Sweeps: {', '.join(f'**{r.name}** (`{r.dir}`)' for r in run.results)}",
             f"Trials: {len(trials)} ({len(ok)} ok, {len(trials) - len(ok)} failed) in {n_cells} cells with "
             f"results; seeds per cell: {low if low == high else f'{low}-{high}'}",
             "Parameters that vary: " + (", ".join(f"`{p}`" for p in run.varying) or "none")]
    if len(ok) and "wall_s" in ok.columns and ok["wall_s"].notna().any():
        items.append(f"Compute: {ok['wall_s'].sum() / 60:.1f} trial-minutes of wall time")
    doc.bullets(items)
    if run.cells is not None:
        best = stats.best_row(run.cells, "val_accuracy")
        desc = ", ".join(f"{c} = {value_str(best[c])}" for c in stats.cell_columns(ok)
                         if c in run.varying or c in ("strategy", "freeze", "fraction"))
        acc = pct_ci(best["val_accuracy"], best["val_accuracy_ci_low"], best["val_accuracy_ci_high"])
        doc.para(f"Best cell by mean validation accuracy: {desc}: **{acc}%** over {int(best['n_seeds'])} seed(s).")


def headline(run: Run) -> None:
    """AULC per curve with the paired difference to `random`: the study's question in one table."""
    doc, ok = run.doc, run.ok
    doc.heading("Headline: area under the learning curve")
    if not len(ok):
        doc.para("No successful trials, so there is no headline table.")
        return
    aulc = stats.aulc_table(ok)
    paired = run.paired = stats.paired_differences(ok, "strategy", "random", n_boot=run.n_boot, seed=run.seed)
    factor, baseline = "strategy", "random"
    if not len(paired) and "pool" in run.varying and "real" in set(ok["pool"]):
        # One strategy, several pools (the study's Figure 2): the question is LLM rows vs real rows.
        factor, baseline = "pool", "real"
        paired = stats.paired_differences(ok, "pool", "real", n_boot=run.n_boot, seed=run.seed)
    head = tables.headline_table(aulc, paired, run.cells)
    text = ("AULC: trapezoidal area under validation accuracy vs added fraction, divided by the fraction "
            "range (the curve's average height), per seed, then mean over seeds with a 95% t-interval. ")
    if len(paired):
        text += (f"`vs {baseline}`: mean paired difference to the `{baseline}` {factor} over seeds and fractions > 0, "
                 "in percentage points, with a seeded percentile-bootstrap 95% interval; `*` marks an interval "
                 "that excludes 0 (not corrected for multiple comparisons).")
    else:
        text += f"No paired differences: {no_pairs_reason(ok)}."
    doc.para(text)
    if aulc["aulc"].isna().all():
        doc.para("AULC needs at least two fractions per curve and this sweep has one, so only the accuracy is shown.")
    if stats.seed_counts(ok)[1] == 1:
        doc.para("Every cell has one seed, so no row has an interval.")
    run.table(head, tables.show_headline(head, run.varying, has_diff=len(paired) > 0, factor=factor,
                                         baseline=baseline), "headline")


def trial_figures(run: Run) -> None:
    ok, add, skip = run.ok, run.figures.append, run.skipped.append
    if not len(ok):
        reason = "no successful trials" if len(run.trials) else "no trials.csv with rows"
        for name in ("learning_curves", "train_vs_val", "val_confusion", "by_<parameter>"):
            skip((name, reason))
        return
    add((figures.learning_curves(ok, run.fig_dir, "val_accuracy"),
         "Validation accuracy vs added rows per freeze mode (the study's Figures 2 and 3)."))
    if "val_macro_f1" in ok.columns and ok["val_macro_f1"].notna().any():
        add((figures.learning_curves(ok, run.fig_dir, "val_macro_f1", name="learning_curves_macro_f1"),
             "Validation macro-F1 vs added rows per freeze mode."))
    if "train_accuracy" in ok.columns and ok["train_accuracy"].notna().any():
        add((figures.train_vs_val(ok, run.fig_dir), "Train vs validation accuracy: the gap between them is over-fitting."))
    else:
        skip(("train_vs_val", "the trials have no `train_accuracy`"))
    if figures.confusions(ok).notna().any():
        class_names = next((r.class_names for r in run.results if r.class_names), None)
        add((figures.val_confusion(ok, run.fig_dir, class_names),
             "Validation confusion matrices of each freeze mode's best cell at the largest fraction."))
    else:
        skip(("val_confusion", "no trial has a `confusion` matrix"))
    for param in run.varying:
        add((figures.parameter_plot(ok, param, run.fig_dir, seed=run.seed),
             f"Automatic plot for the varying parameter `{param}`: every trial's validation accuracy."))
    if not run.varying:
        skip(("by_<parameter>", "no parameter varies across the successful trials"))


def sweep_extras(run: Run, res: Results) -> dict[str, list[dict]]:
    """The LLM-generation and diagnostics figures of one results directory; returns their table rows."""
    tag = f"{_slug(res.name)}-" if run.several else ""
    where = f" ({res.name})" if run.several else ""
    add, skip = run.figures.append, run.skipped.append
    generation, correlations = [], []
    if res.generated is not None:
        png, agreement = figures.label_confusion(res.generated, run.fig_dir, res.class_names,
                                                 name=f"{tag}llm_vs_teacher")
        add((png, f"LLM label vs teacher label{where} (the study's Figure 1)."))
        generation.append({"sweep": res.name, "key": "agreement (from generated.csv)", "value": f"{agreement:.4f}"})
        real, source = real_labels(res)
        if real is not None:
            add((figures.label_distribution(real, res.generated, run.fig_dir, res.class_names,
                                            name=f"{tag}label_distribution"),
                 f"Label distribution of real (from {source}) vs generated rows{where} (the study's Figure 5)."))
        else:
            skip((f"{tag}label_distribution", source + where))
    else:
        skip((f"{tag}llm_vs_teacher", res.missing["generated.csv"] + where))
        skip((f"{tag}label_distribution", res.missing["generated.csv"] + where))
    for key, value in (res.generation or {}).items():
        if isinstance(value, (int, float, str, bool)) or value is None:
            generation.append({"sweep": res.name, "key": key, "value": value_str(value)})
    if res.embeddings is not None:
        add((figures.embedding_pca(res.embeddings["real"], res.embeddings["generated"], run.fig_dir, seed=run.seed,
                                   name=f"{tag}embeddings_pca"),
             f"Real vs generated sentence embeddings, first two principal components{where} (the study's Figure 4)."))
    else:
        skip((f"{tag}embeddings_pca", res.missing["embeddings.npz"] + where))
    if res.diagnostics is not None:
        add((figures.entropy_vs_sqbc(res.diagnostics, run.fig_dir, seed=run.seed, name=f"{tag}entropy_vs_sqbc"),
             f"Entropy vs SQBC disagreement per pool row{where}; the study found r = 0.161."))
        for freeze, part in res.diagnostics.groupby("freeze", sort=False):
            for s, rows in [("all", part), *part.groupby("seed", sort=True)]:
                correlations.append({"sweep": res.name, "freeze": freeze, "seed": s,
                                     **stats.pearson(rows["entropy"], rows["sqbc"]),
                                     "spearman": stats.spearman(rows["entropy"], rows["sqbc"])})
    else:
        skip((f"{tag}entropy_vs_sqbc", res.missing["diagnostics"] + where))
    return {"generation": generation, "correlations": correlations}


def detail_tables(run: Run, extras: list[dict[str, list[dict]]]) -> None:
    doc, ok, varying = run.doc, run.ok, run.varying
    doc.heading("Tables")
    doc.para("All tables are also written as CSV (raw numbers) and Markdown under `tables/`.")
    if len(ok):
        paired = run.paired
        if len(paired):
            run.table(paired, tables.show_paired(paired, "strategy", varying), "paired_strategy", inline=False)
            by_fraction = stats.paired_differences(ok, "strategy", "random", by_fraction=True,
                                                   n_boot=run.n_boot, seed=run.seed)
            doc.heading("Strategy minus `random`, per fraction", level=3)
            doc.para("Paired on seed at each fraction; percentile-bootstrap 95% interval; `*`: excludes 0.")
            run.table(by_fraction, tables.show_paired(by_fraction, "strategy", varying), "paired_strategy_by_fraction")
        else:
            doc.para(f"No paired strategy differences: {no_pairs_reason(ok)}.")
        if "pool" in varying and "real" in set(ok["pool"]):
            pool_diff = stats.paired_differences(ok, "pool", "real", n_boot=run.n_boot, seed=run.seed)
            doc.heading("Pool minus `real`, over seeds and fractions", level=3)
            doc.para("Each LLM pool's trial minus the `real` trial with the same strategy, seed and fraction > 0; "
                     "percentile-bootstrap 95% interval; `*`: excludes 0.")
            run.table(pool_diff, tables.show_paired(pool_diff, "pool", varying), "paired_pool")
        doc.heading("Every cell", level=3)
        doc.para("Mean over seeds with a 95% t-interval, in percent.")
        run.table(run.cells, tables.show_cells(run.cells, varying), "cells")
    generation = [row for e in extras for row in e["generation"]]
    if generation:
        gen = pd.DataFrame(generation)
        if not run.several:
            gen = gen.drop(columns=["sweep"])
        doc.heading("LLM generation", level=3)
        run.table(gen, gen, "generation")
    correlations = [row for e in extras for row in e["correlations"]]
    if correlations:
        corr = pd.DataFrame(correlations)
        shown = corr.assign(**{c: corr[c].map(lambda v: f"{v:.3f}") for c in ("r", "ci_low", "ci_high", "spearman")},
                            p=corr["p"].map(lambda v: f"{v:.2g}"))
        if not run.several:
            shown = shown.drop(columns=["sweep"])
        doc.heading("Entropy vs SQBC: Pearson correlation", level=3)
        doc.para("Pearson r with a 95% interval (Fisher z) and two-sided p, per freeze mode over all seeds "
                 "and per seed, with Spearman's rank correlation beside it; the study reports Pearson 0.161.")
        run.table(corr, shown, "entropy_sqbc_correlation")


def failed_trials(run: Run) -> None:
    doc, trials = run.doc, run.trials
    failed = trials[trials["status"] != "ok"]
    doc.heading("Failed trials")
    if not len(failed):
        doc.para("None." if len(trials) else "No trials were read.")
        return
    cols = [c for c in ("sweep", "cell_id", *stats.PARAMETERS) if c in failed.columns
            and (c in run.varying or c in ("cell_id", "strategy", "freeze", "fraction", "seed"))]
    shown = failed[cols].map(value_str)
    errors = failed["error"] if "error" in failed.columns else pd.Series("", index=failed.index)
    shown["error"] = errors.map(lambda e: (e[:160] + "...") if len(e) > 160 else e)
    doc.para(f"{len(failed)} trial(s) in {failed['cell_id'].nunique()} cell(s) failed; they are left out of "
             "every number above.")
    run.table(failed, shown, "failed")


def skipped_figures(run: Run) -> None:
    run.doc.heading("Skipped figures")
    if run.skipped:
        run.doc.table(pd.DataFrame(run.skipped, columns=["figure", "why"]))
    else:
        run.doc.para("None: every figure had its inputs.")


def reproduce(run: Run) -> None:
    doc = run.doc
    doc.heading("Sweep config and how to reproduce")
    for res in run.results:
        doc.heading(res.name, level=3)
        if "sweep.yaml" in res.missing:
            doc.para(f"{res.missing['sweep.yaml']}, so the run cannot be reproduced from this directory.")
            continue
        compare = res.config.get("compare") or {}
        replicate = res.config.get("replicate") or {}
        doc.bullets([f"Scientific (compared): {', '.join(f'`{k}`' for k in compare) or 'none'}",
                     f"Nuisance (replicated): {', '.join(f'`{k}`' for k in replicate) or 'none'}",
                     "Fixed: everything else below"])
        doc.code(yaml.safe_dump(res.config, sort_keys=False, default_flow_style=None), "yaml")
        doc.para("Rerun the sweep from its resolved config:")
        doc.code(f"raysweep run {shlex.quote(str(res.dir / 'sweep.yaml'))} --output "
                 f"{shlex.quote(str(res.dir) + '-rerun')}", "sh")
    doc.para("Rebuild this report:")
    doc.code("raysweep analyze " + " ".join(shlex.quote(str(r.dir)) for r in run.results)
             + f" --output {shlex.quote(str(run.output_dir))}", "sh")


def method(run: Run) -> None:
    run.doc.heading("How the numbers are computed")
    run.doc.bullets([
        "Failed trials are left out; a cell is a combination of every parameter but `seed`.",
        "Mean over seeds with a two-sided 95% Student-t interval, mean ± t(0.975, n-1)·sd/√n; none for one seed.",
        "AULC: per seed, the trapezoidal area under the metric vs `fraction`, divided by max − min fraction; "
        "only seeds with every fraction of the curve count; then mean and t-interval over seeds.",
        "Paired differences: a strategy's trial minus the `random` trial with the same seed, fraction and "
        "other parameters; fraction 0 (no rows added) is left out. Interval: percentile bootstrap of the mean "
        f"difference, {run.n_boot:,} resamples of the pairs, seed {run.seed}. `*`: the interval excludes 0.",
        "Figures draw the same mean and t-interval as the tables; each states its number of seeds.",
    ])


# --------------------------------------------------------------------------- helpers


def real_labels(res: Results) -> tuple[pd.Series | None, str]:
    """The real labels for Figure 5 and where they came from (or None and why not).

    generation/real_labels.csv when the generator wrote it, else the train split of the sweep's
    data set (its sweep.yaml `data` section, read with `raysweep.data`).
    """
    if res.real_labels is not None:
        return res.real_labels, "generation/real_labels.csv"
    if res.config is None:
        return None, "no generation/real_labels.csv and no sweep.yaml naming the data set"
    try:
        from raysweep.config import DataConfig, from_dict
        from raysweep.data import load_dataset

        train, _, source = load_dataset(from_dict(DataConfig, res.config.get("data") or {}, "data"))
    except (ImportError, ValueError, OSError) as exc:  # ConfigError and DataError are ValueErrors
        return None, f"no generation/real_labels.csv, and the sweep's data set cannot be read ({exc})"
    return train["label"], f"{source}, train split"


def no_pairs_reason(ok: pd.DataFrame) -> str:
    strategies = set(ok["strategy"])
    if "random" not in strategies:
        return "no `random` strategy among the successful trials"
    if strategies == {"random"}:
        return "`random` is the only strategy, so there is nothing to compare with it"
    return "no other strategy shares a seed and a fraction > 0 with `random`"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "sweep"
