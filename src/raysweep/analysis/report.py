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

from raysweep.analysis import (annotation, cleaning, compare, cost_report, costs, figures, findings, rows, selection,
                                stats, tables, variance)
from raysweep.analysis.document import Doc
from raysweep.analysis.results import (Results, ResultsError, combined_trials, load_many, metrics_of, num_classes,
                                       real_labels)
from raysweep.analysis.tables import common_fractions, correlation_table, pct_ci, value_str

MAX_REPORT_ROWS = 80  # longer tables are linked (CSV and Markdown) instead of printed in the report
METRICS = ("val_accuracy", "val_macro_f1")  # SST-5's; a report draws findings on its task's (results.metrics_of)


def test_metric(metric: str) -> str:
    """The same metric on the test split."""
    return "test_" + metric.removeprefix("val_")


@dataclass(frozen=True)
class Comparison:
    """A question the sweep can answer: each level of `factor` against a baseline level."""

    factor: str
    baselines: tuple[str, ...]  # the first present is the baseline; none present: the first value by name
    levels: tuple[str, ...] | None = None  # compare only these levels (default: all others)
    fallback: bool = False  # with none of `baselines` present, compare with the first value by name

    def baseline(self, values) -> str | None:
        present = set(values)
        found = next((b for b in self.baselines if b in present), None)
        return found if found is not None or not self.fallback else stats.baseline_first(present)[0]

    def title(self, baseline: str) -> str:
        what = ", ".join(f"`{v}`" for v in self.levels) if self.levels else f"Each {self.factor}"
        return f"{what} vs `{baseline}`"


# Each table is one family for Holm. The teacher's question (does relabeling change the result?)
# is a table of its own: it is not a question about LLM rows against real rows.
COMPARISONS = {
    "strategy": Comparison("strategy", ("random",)),
    "pool": Comparison("pool", ("real",)),
    "teacher": Comparison("pool", ("llm",), levels=("llm_teacher",)),
    "pooling": Comparison("pooling", ("pooler",), fallback=True),
    "encoder": Comparison("encoder", ("minilm",), fallback=True),
}


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
    sources: list[str] | None = None  # how each result is named (a URI it was copied from); None: its dir
    # factor -> its comparison table (compare.compare, both metrics, with the test split's check)
    comparisons: dict[str, pd.DataFrame] = field(default_factory=dict)
    correlations: pd.DataFrame | None = None  # entropy vs SQBC, per freeze (seed "all") and per seed
    metrics: tuple[str, ...] = METRICS  # the task's validation metrics, headline first (results.metrics_of)
    predictions: rows.Predictions | None = None  # the cells' per-row predictions (predictions.py)
    num_classes: int | None = None  # the task's classes (macro-F1's per-row values), when the configs say
    cost: costs.Answer | None = None  # accuracy against dollars (analysis/costs.py); None: nothing priced

    @property
    def metric(self) -> str:
        """The headline metric: what the summary ranks by and the figures plot."""
        return self.metrics[0]

    def source(self, res: Results) -> str:
        return self.sources[self.results.index(res)] if self.sources else str(res.dir)

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


def analyze(results_dirs: list[Path], output_dir: Path, n_boot: int = compare.LABELS_BOOT, seed: int = 0,
            sources: list[str] | None = None) -> Path:
    """Write report.md, report.html, figures/ and tables/ for `results_dirs` into `output_dir`.

    Returns the path of report.md. `seed` seeds the labels-needed seed bootstrap (`n_boot`
    resamples) and the figures' subsampling. A directory holding nothing the report reads is a
    ResultsError naming it, raised before anything is written. `sources` names each results
    directory in the report where it is a temporary local copy (of a storage URI, in its
    redacted form: `raysweep analyze s3://...`).
    """
    output_dir = Path(output_dir)
    results = load_many([Path(d) for d in results_dirs])
    for i, res in enumerate(results):
        if not has_results(res):
            raise ResultsError(f"{sources[i] if sources else res.dir}: no results to analyze ({res.missing['trials.csv']}, no generation/ "
                               "and no diagnostics/)")
    output_dir.mkdir(parents=True, exist_ok=True)
    trials = combined_trials(results)
    ok = trials[trials["status"] == "ok"].copy()
    run = Run(results=results, output_dir=output_dir, n_boot=n_boot, seed=seed,
              doc=Doc(title=f"raysweep report: {', '.join(r.name for r in results)}"),
              trials=trials, ok=ok, varying=stats.varying_parameters(ok) if len(ok) else [],
              sources=[str(x) for x in sources] if sources else None, metrics=metrics_of(ok))
    run.predictions = rows.Predictions.read([r.dir for r in results])
    run.num_classes = num_classes(results)
    if len(ok):
        run.cells = tables.cell_table(ok, run.metrics)
        run.comparisons = comparisons(ok, run.metrics, run.predictions, run.num_classes)
    run.correlations = correlation_table(results)
    run.cost = costs.answer(run) if len(ok) else None

    findings_section(run)
    variance.section(run)  # which axis matters: seed and row noise beside the compared axes
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
    annotation.section(run)  # the LLM as annotator of chosen rows (analysis/annotation.py)
    cleaning.section(run)  # what llm_cleaned / llm_routed did to the LLM's labels (analysis/cleaning.py)
    cost_report.section(run)  # accuracy against dollars per source (analysis/cost_report.py)
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
    items = [f"Sweeps: {', '.join(f'**{r.name}** (`{run.source(r)}`)' for r in run.results)}",
             f"Trials: {len(trials)} ({len(ok)} ok, {len(trials) - len(ok)} failed) in {n_cells} cells with "
             f"results; seeds per cell: {low if low == high else f'{low}-{high}'}",
             "Parameters that vary: " + (", ".join(f"`{p}`" for p in run.varying) or "none")]
    if len(ok) and "wall_s" in ok.columns and ok["wall_s"].notna().any():
        items.append(f"Compute: {ok['wall_s'].sum() / 60:.1f} trial-minutes of wall time")
    doc.bullets(items)
    if run.cells is not None:
        m = run.metric
        best = stats.best_row(run.cells, m)
        desc = ", ".join(f"{c} = {value_str(best[c])}" for c in stats.cell_columns(ok)
                         if c in run.varying or c in ("strategy", "freeze", "fraction"))
        value = pct_ci(best[m], best[f"{m}_ci_low"], best[f"{m}_ci_high"])
        doc.para(f"Best cell by mean {figures.label(m)}: {desc}: **{value}{figures.unit(m)}** over "
                 f"{int(best['n_seeds'])} seed(s).")


def findings_section(run: Run) -> None:
    """Sentences generated from the comparison tables, then the study's claims checked against them."""
    doc, ok = run.doc, run.ok
    doc.heading("Findings")
    for note in short_pools(run.results):
        doc.para(note)
    if not run.comparisons:
        doc.para(f"No comparison to state: {no_pairs_reason(ok) if len(ok) else 'no successful trials'}.")
    else:
        note = findings.method_note()
        if any("test_mean_diff" in t.columns for t in run.comparisons.values()):
            note += (" Each finding is checked on the `test` split (the same comparison on "
                     f"{' / '.join(test_metric(m) for m in run.metrics)}); it **disagrees** when the test mean has the other sign, or when a finding that "
                     "survives the correction on val has a test interval that includes 0.")
        else:
            note += " The trials have no `test` split, so no finding is checked on held-out rows."
        doc.para(note)
        missing = rows.missing_predictions(ok, run.predictions)
        if len(missing):
            run.table(missing, missing, "cells_without_predictions", inline=False)
            shown = ", ".join(f"`{c}`" for c in missing["cell_id"].head(8))
            doc.para(f"**{len(missing)} of {ok['cell_id'].nunique()} finished cells have no per-row predictions on "
                     f"record** ({shown}{', ...' if len(missing) > 8 else ''}; all in "
                     "`tables/cells_without_predictions.csv`): they finished before raysweep recorded them. Every "
                     "comparison with one of them falls back to the seed-only test, whose interval is for this "
                     "evaluation set only: a difference in which rows two strategies get right is shared by every "
                     "seed, so it may not hold on new rows. Running the sweep into a fresh output records them.")
    for key, table in run.comparisons.items():
        spec = COMPARISONS[key]
        doc.heading(spec.title(table["baseline"].iloc[0]), level=3)
        context = [c for c in table.columns if c in run.varying and c not in (spec.factor, "fraction")]
        doc.bullets(findings.table_sentences(table, spec.factor, context))
    annotation.findings(run)
    cost_report.findings(run)  # is LLM data worth it, in dollars (analysis/cost_report.py)
    claims = findings.claims(run.comparisons, run.correlations, stats.seed_note(ok) if len(ok) else "no seeds")
    doc.heading("The study's claims", level=3)
    if claims:
        doc.bullets(claims)
    else:
        doc.para("This sweep covers none of the study's claims (they need strategies with `random`, an `llm` pool "
                 "with `real`, or entropy / SQBC diagnostics).")


_STOPPED_WHY = {"budget": "generation stopped at its budget (llm.max_cost_usd)",
                "max_requests": "generation stopped at its call cap (llm.max_requests)",
                "no_progress": "a whole round of LLM calls added no row",
                "cancelled": "its LLM batches were cancelled (raysweep generate --cancel)"}


def short_pools(results) -> list[str]:
    """A sentence for each results directory whose LLM generation kept fewer rows than asked:
    its LLM pools are smaller than the sweep says, and a fraction beyond them took them whole."""
    notes = []
    for res in results:
        s = res.generation or {}
        if s.get("complete") is False and "rows_kept" in s:
            why = _STOPPED_WHY.get(s.get("stopped"), "generation ended early")
            notes.append(f"**The LLM pool is short** ({res.name}): {why}, keeping {s['rows_kept']:,} of the "
                         f"{s['rows_target']:,} rows asked for (${s.get('cost_usd', 0):.4f} spent); the `llm` and "
                         f"`llm_teacher` cells added at most {s['rows_kept']:,} rows (their `n_added`).")
    return notes


def headline(run: Run) -> None:
    """AULC per curve over one fraction range, with the fair difference to the baseline."""
    doc, ok = run.doc, run.ok
    doc.heading("Headline: area under the learning curve")
    if not len(ok):
        doc.para("No successful trials, so there is no headline table.")
        return
    head, factor, baseline, common = headline_table(ok, run.comparisons, run.cells, run.metric)
    has_diff = "mean_diff" in head.columns
    if len(common) >= 2:
        text = (f"AULC over the fractions every curve has ({', '.join(f'{f:g}' for f in common)}): trapezoidal area "
                f"under {figures.label(run.metric)} vs added fraction, divided by the fraction range (the curve's average "
                "height), per seed, then mean over seeds with a 95% t-interval. ")
    else:
        text = ("The curves share fewer than two fractions, so each AULC spans its own range (the `fractions` "
                "column) and the areas do not compare across ranges. ")
    if has_diff:
        text += (f"`vs {baseline}`: the mean over seeds of each seed's mean difference to `{baseline}` over the "
                 f"fractions where the two could differ (the Findings say which), in percentage points, with its "
                 f"95% interval on new rows (seeds and evaluation rows, where the cells have predictions on record; "
                 f"else seeds only); `*`: survives Holm within the table (see Findings).")
    else:
        text += f"No paired differences: {no_pairs_reason(ok)}."
    doc.para(text)
    if head["aulc"].isna().all():
        doc.para(f"AULC needs at least two fractions per curve and this sweep has one, so only the "
                 f"{figures.label(run.metric)} is shown.")
    if stats.seed_counts(ok)[1] == 1:
        doc.para("Every cell has one seed, so no row has an interval.")
    run.table(head, tables.show_headline(head, run.varying, has_diff=has_diff, factor=factor,
                                         baseline=baseline, metric=run.metric), "headline")


def trial_figures(run: Run) -> None:
    ok, add, skip = run.ok, run.figures.append, run.skipped.append
    if not len(ok):
        reason = "no successful trials" if len(run.trials) else "no trials.csv with rows"
        for name in ("learning_curves", "train_vs_val", "val_confusion", "by_<parameter>"):
            skip((name, reason))
        return
    m = run.metric
    label = figures.label(m)
    add((figures.learning_curves(ok, run.fig_dir, m),
         f"{label[0].upper() + label[1:]} vs added rows per freeze mode (the study's Figures 2 and 3)."))
    for other in run.metrics[1:]:
        if other in ok.columns and ok[other].notna().any():
            add((figures.learning_curves(ok, run.fig_dir, other, name=f"learning_curves_{other.removeprefix('val_')}"),
                 f"{figures.label(other)[0].upper() + figures.label(other)[1:]} vs added rows per freeze mode."))
    if "strategy" in run.comparisons:
        baseline = run.comparisons["strategy"]["baseline"].iloc[0]
        add((figures.differences(ok, run.fig_dir, m, "strategy", baseline),
             f"Each strategy minus `{baseline}` in {label}, one panel per strategy and freeze mode: "
             "the learning curves' differences without overlapping bands."))
    # The over-fitting gap on the metric the trial reports on its own rows (accuracy, or a regression's MSE).
    gap = next((x for x in ("accuracy", "mse") if f"train_{x}" in ok.columns and ok[f"train_{x}"].notna().any()
                and f"val_{x}" in ok.columns), None)
    if gap is not None:
        add((figures.train_vs_val(ok, run.fig_dir, gap),
             f"Train vs validation {figures.label('val_' + gap).removeprefix('validation ')}: the gap between them "
             "is over-fitting."))
    else:
        skip(("train_vs_val", "the trials have no `train_accuracy`"))
    if figures.confusions(ok).notna().any():
        class_names = next((r.class_names for r in run.results if r.class_names), None)
        add((figures.val_confusion(ok, run.fig_dir, class_names),
             "Validation confusion matrices of each freeze mode's best cell at the largest fraction."))
    else:
        skip(("val_confusion", "no trial has a `confusion` matrix"))
    for param in run.varying:
        add((figures.parameter_plot(ok, param, run.fig_dir, m, seed=run.seed),
             f"Automatic plot for the varying parameter `{param}`: every trial's {label}."))
    if not run.varying:
        skip(("by_<parameter>", "no parameter varies across the successful trials"))


def sweep_extras(run: Run, res: Results) -> dict[str, list[dict]]:
    """The LLM-generation and diagnostics figures of one results directory; returns their table rows."""
    tag = f"{_slug(res.name)}-" if run.several else ""
    where = f" ({res.name})" if run.several else ""
    add, skip = run.figures.append, run.skipped.append
    generation = []
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
    else:
        skip((f"{tag}entropy_vs_sqbc", res.missing["diagnostics"] + where))
    return {"generation": generation}


def detail_tables(run: Run, extras: list[dict[str, list[dict]]]) -> None:
    doc, ok, varying = run.doc, run.ok, run.varying
    doc.heading("Tables")
    doc.para("All tables are also written as CSV (raw numbers) and Markdown under `tables/`.")
    if len(ok):
        for key, table in run.comparisons.items():
            spec = COMPARISONS[key]
            baseline = table["baseline"].iloc[0]
            doc.heading(f"{spec.title(baseline)}: seeds and evaluation rows", level=3)
            doc.para(f"Per comparison and metric: the fractions used and those left out (why), the evaluation rows, "
                     f"the mean of the per-seed mean differences with its 95% interval on new rows (seeds and rows) "
                     f"and on this evaluation set (the {compare.TEST_NAME}), p and Holm p (within each metric's "
                     f"table) on new rows, the seeds needed for 80% power at this evaluation-set size and, where no "
                     f"number of seeds is enough, the evaluation rows that would be, at the observed effect and at "
                     f"{100 * compare.MIN_EFFECT:g} point, and the rows' share of the variance of the difference. "
                     "`*`: survives Holm.")
            run.table(table, tables.show_compare(table, spec.factor, varying), f"compare_{key}")
            if key == "strategy":
                by_fraction = pd.concat([rows.compare_rows(ok, run.predictions, "strategy", baseline, m,
                                                           by_fraction=True, num_classes=run.num_classes)
                                         for m in run.metrics if m in ok.columns and ok[m].notna().any()],
                                        ignore_index=True)
                doc.heading(f"Each strategy vs `{baseline}`, per fraction (secondary)", level=3)
                doc.para("The same test at each usable fraction on its own; Holm within each metric's table.")
                run.table(by_fraction, tables.show_compare(by_fraction, "strategy", varying),
                          "compare_strategy_by_fraction")
        if not run.comparisons:
            doc.para(f"No paired comparisons: {no_pairs_reason(ok)}.")
        labels_needed(run)
        doc.heading("Every cell", level=3)
        doc.para("Mean over seeds with a 95% t-interval, in percent (a correlation x 100; an MSE as it is).")
        run.table(run.cells, tables.show_cells(run.cells, varying), "cells")
    generation = [row for e in extras for row in e["generation"]]
    if generation:
        gen = pd.DataFrame(generation)
        if not run.several:
            gen = gen.drop(columns=["sweep"])
        doc.heading("LLM generation", level=3)
        run.table(gen, gen, "generation")
    if run.correlations is not None:
        corr = run.correlations
        shown = corr.assign(**{c: corr[c].map(lambda v: f"{v:.3f}") for c in ("r", "ci_low", "ci_high", "spearman")},
                            p=corr["p"].map(lambda v: f"{v:.2g}"))
        if not run.several:
            shown = shown.drop(columns=["sweep"])
        doc.heading("Entropy vs SQBC: Pearson correlation", level=3)
        doc.para("Pearson r with a 95% interval (Fisher z) and two-sided p, per freeze mode over all seeds "
                 "and per seed, with Spearman's rank correlation beside it; the study reports Pearson 0.161.")
        run.table(corr, shown, "entropy_sqbc_correlation")


def labels_needed(run: Run) -> None:
    """Rows added until each strategy's curve reaches a share of the best curve's end point."""
    ok, doc = run.ok, run.doc
    factor = "strategy" if "strategy" in run.varying else ("pool" if "pool" in run.varying else None)
    if factor is None or ok["fraction"].nunique() < 2:
        return
    table = pd.concat([compare.labels_needed(ok, m, factor, n_boot=run.n_boot, seed=run.seed,
                                             row_values=rows.row_values_of(run.predictions, m, run.num_classes)
                                             ).assign(metric=m)
                       for m in run.metrics if m in ok.columns and ok[m].notna().any()], ignore_index=True)
    doc.heading("Labels needed", level=3)
    if not len(table):
        doc.para("Not computed: it needs at least two seeds per cell, and this sweep has one (one seed's curve "
                 "is one draw of the noise).")
        return
    doc.para(f"Rows added until a {factor}'s mean learning curve reaches {100 * compare.LABELS_SHARE:g}% of the best "
             f"curve's end point (its value at its largest fraction), interpolating linearly between fractions; "
             f"“not reached” is an answer. Interval: bootstrap ({run.n_boot:,} resamples of the seeds and, where "
             f"every cell has per-row predictions on record, of the evaluation rows too (`resampled`), the same "
             f"draw for every curve of a panel, seed {run.seed}).")
    run.table(table, tables.show_labels_needed(table, factor, run.varying), "labels_needed")


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
        where = run.source(res)
        if "://" in where:  # `raysweep run` reads a local sweep file
            doc.para(f"Rerun the sweep from its resolved config (copy `{where}/sweep.yaml` here first):")
            sweep_file = "sweep.yaml"
        else:
            doc.para("Rerun the sweep from its resolved config:")
            sweep_file = f"{where}/sweep.yaml"
        doc.code(f"raysweep run {shlex.quote(sweep_file)} --output {shlex.quote(where + '-rerun')}", "sh")
    doc.para("Rebuild this report:")
    doc.code("raysweep analyze " + " ".join(shlex.quote(run.source(r)) for r in run.results)
             + f" --output {shlex.quote(str(run.output_dir))}", "sh")


def method(run: Run) -> None:
    run.doc.heading("How the numbers are computed")
    run.doc.bullets([
        "Failed trials are left out; a cell is a combination of every parameter but `seed`.",
        "Mean over seeds with a two-sided 95% Student-t interval, mean ± t(0.975, n-1)·sd/√n; none for one seed.",
        "AULC: per seed, the trapezoidal area under the metric vs `fraction`, divided by max − min fraction; "
        "only seeds with every fraction of the curve count; then mean and t-interval over seeds.",
        "Comparisons (Findings, headline `vs` column, `compare_*` tables): " + findings.method_note()
        + " A pair whose two trials are one training (fraction 0: no rows added; between strategies, a fraction "
        "that takes the whole pool) differs by zero by construction and is left out with its whole fraction; each "
        "table says which fractions it used. Where the trials do not record which training a cell shares, it is "
        "derived: a trial that added fewer rows than it asked for (round(fraction \u00d7 n_labeled)) took the whole "
        "pool, whose size is then its n_added.",
        "Labels needed: see that table; its interval is the only bootstrap in the report (seeds resampled, and "
        "evaluation rows too where every cell has predictions on record), since \u201cnot reached\u201d has no mean "
        "to take a t-interval of.",
        "Figures draw the same mean and t-interval as the tables, and only over the seeds of one cell: a figure "
        "whose points pool cells (by_strategy, by_fraction, ...) or hold one seed draws none and says so; each "
        "states its number of seeds.",
    ])


# --------------------------------------------------------------------------- helpers


def has_results(res: Results) -> bool:
    """Whether a results directory holds anything the report reads: trials, generated rows or diagnostics."""
    return any(x is not None and len(x) for x in (res.trials, res.generated, res.diagnostics))


def comparisons(ok: pd.DataFrame, metrics: tuple[str, ...] = METRICS, predictions: rows.Predictions | None = None,
                num_classes: int | None = None) -> dict[str, pd.DataFrame]:
    """Every comparison the trials can answer (see COMPARISONS), on each of `metrics` (the task's:
    val accuracy and macro-F1 for SST-5), each with the same comparison on the test split beside it
    when the trials have one. The inference counts seeds and evaluation rows where the cells have
    `predictions` (analysis/rows.py), else seeds only."""
    predictions = predictions if predictions is not None else rows.Predictions([])
    out = {}
    varying = stats.varying_parameters(ok)
    for key, spec in COMPARISONS.items():
        if spec.factor not in varying:
            continue
        baseline = spec.baseline(ok[spec.factor])
        if baseline is None or (spec.levels and not set(spec.levels) & set(ok[spec.factor])):
            continue
        parts = []
        for metric in metrics:
            if metric not in ok.columns or ok[metric].isna().all():
                continue
            val = rows.compare_rows(ok, predictions, spec.factor, baseline, metric, levels=spec.levels,
                                    num_classes=num_classes)
            on_test = test_metric(metric)
            if on_test in ok.columns and ok[on_test].notna().any():
                test = compare.compare(ok, spec.factor, baseline, on_test, levels=spec.levels)
                val = rows.with_seed_test_check(val, test.assign(metric=metric))
            parts.append(val)
        table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if len(table):
            out[key] = table
    return out


def headline_table(ok: pd.DataFrame, comparisons_: dict[str, pd.DataFrame] | None = None,
                   cells: pd.DataFrame | None = None, metric: str = "val_accuracy"
                   ) -> tuple[pd.DataFrame, str, str, list[float]]:
    """(table, factor, baseline, common fractions) of the headline: AULC per curve over the fractions
    every curve has, the val-accuracy comparison with `random` (else `real`), the accuracy at the
    largest fraction. `comparisons_` and `cells` are computed here when not given."""
    comparisons_ = comparisons(ok, metrics_of(ok)) if comparisons_ is None else comparisons_
    cells = tables.cell_table(ok, metrics_of(ok)) if cells is None else cells
    common = common_fractions(ok)
    aulc = stats.aulc_table(ok[ok["fraction"].isin(common)] if len(common) >= 2 else ok, metric)
    key = next((k for k in ("strategy", "pool") if k in comparisons_), None)
    diff = comparisons_[key] if key else pd.DataFrame()
    diff = diff[diff["metric"] == metric] if len(diff) else diff
    factor, baseline = (COMPARISONS[key].factor, diff["baseline"].iloc[0]) if len(diff) else ("strategy", "random")
    return tables.headline_table(aulc, diff, cells, metric), factor, baseline, common


def no_pairs_reason(ok: pd.DataFrame) -> str:
    strategies = set(ok["strategy"])
    if "random" not in strategies:
        return "no `random` strategy among the successful trials"
    if strategies == {"random"}:
        return "`random` is the only strategy, so there is nothing to compare with it"
    return "no other strategy shares a seed and a fraction > 0 with `random`"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "sweep"
