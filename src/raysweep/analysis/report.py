"""One report from one or more results directories: report.md, a self-contained report.html,
figures (PNG + SVG) and tables (CSV + Markdown).

`analyze` is the whole pipeline: read (`results`), compute (`stats`), draw (`figures`), write.
The report is built once as a list of blocks and rendered twice, so the Markdown and the HTML
always say the same thing. A missing input never fails the report: the figure it would feed is
listed under "Skipped figures" with the reason.
"""

from __future__ import annotations

import base64
import html
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from raysweep.analysis import figures, stats
from raysweep.analysis.results import Results, combined_trials, load_many

MAX_REPORT_ROWS = 80  # longer tables are linked (CSV and Markdown) instead of printed in the report


# --------------------------------------------------------------------------- a tiny document model


def _inline_html(text: str) -> str:
    """The Markdown subset the report uses inline: `code` and **bold**."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of `df` (values printed as they are)."""
    if len(df.columns) == 0:
        return ""
    lines = ["| " + " | ".join(_md_cell(c) for c in df.columns) + " |",
             "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


@dataclass
class Doc:
    """Blocks of a report: (kind, payload). Rendered to Markdown and to HTML."""

    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("para", text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("bullets", list(items)))

    def table(self, df: pd.DataFrame) -> None:
        self.blocks.append(("table", df))

    def code(self, text: str, lang: str = "") -> None:
        self.blocks.append(("code", (lang, text.rstrip("\n"))))

    def figure(self, png: Path, caption: str) -> None:
        self.blocks.append(("figure", (png, caption)))

    def to_markdown(self, base: Path) -> str:
        out = [f"# {self.title}", ""]
        for kind, payload in self.blocks:
            if kind == "heading":
                level, text = payload
                out += ["#" * level + " " + text, ""]
            elif kind == "para":
                out += [payload, ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in payload] + [""]
            elif kind == "table":
                out += [markdown_table(payload), ""]
            elif kind == "code":
                lang, text = payload
                out += [f"```{lang}", text, "```", ""]
            elif kind == "figure":
                png, caption = payload
                rel = png.relative_to(base).as_posix()
                svg = png.with_suffix(".svg").relative_to(base).as_posix()
                out += [f"![{caption}]({rel})", "", f"*{caption}* ([SVG]({svg}))", ""]
        return "\n".join(out).rstrip() + "\n"

    def to_html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, payload in self.blocks:
            if kind == "heading":
                level, text = payload
                anchor = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
                body.append(f'<h{level} id="{anchor}">{_inline_html(text)}</h{level}>')
            elif kind == "para":
                body.append(f"<p>{_inline_html(payload)}</p>")
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in payload) + "</ul>")
            elif kind == "table":
                body.append(payload.to_html(index=False, border=0, classes="table", na_rep=""))
            elif kind == "code":
                body.append(f"<pre><code>{html.escape(payload[1])}</code></pre>")
            elif kind == "figure":
                png, caption = payload
                data = base64.b64encode(png.read_bytes()).decode("ascii")
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                            f"<figcaption>{_inline_html(caption)}</figcaption></figure>")
        return HTML_PAGE.format(title=html.escape(self.title), body="\n".join(body))


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }}
table {{ border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; }}
th {{ background: #f3f3f3; }}
code {{ background: #f3f3f3; padding: 0 0.2em; }}
pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }}
pre code {{ background: none; padding: 0; }}
figure {{ margin: 1em 0 2em; }} figure img {{ max-width: 100%; }}
figcaption {{ font-style: italic; color: #555; }}
</style></head>
<body>
{body}
</body></html>
"""


# --------------------------------------------------------------------------- number formatting


def _pct(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _pct_ci(mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return ""
    if math.isnan(low):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _pp_ci(mean: float, low: float, high: float, significant: bool) -> str:
    if mean is None or math.isnan(mean):
        return ""
    return f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]" + (" *" if significant else "")


def _value(v) -> str:
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else f"{v:g}"
    return str(v)


def _shown_params(df: pd.DataFrame, varying: list[str], always: tuple[str, ...] = ("strategy", "freeze")) -> list[str]:
    """Parameter columns worth a column in a printed table: the varying ones, plus `always`."""
    return [c for c in stats.parameter_columns(df) if c in df.columns and (c in varying or c in always)]


def _baseline_rank(values: pd.Series) -> pd.Series:
    """Sort rank of values with the baselines (random, real) first."""
    order = {v: i for i, v in enumerate(figures._baseline_first(values))}
    return values.map(order)


def _freeze_rank(df: pd.DataFrame) -> pd.Series:
    order = {f: i for i, f in enumerate(figures._freeze_order(df))} if "freeze" in df else {}
    return df["freeze"].map(order) if "freeze" in df else pd.Series(0, index=df.index)


# --------------------------------------------------------------------------- the tables


def cell_table(ok: pd.DataFrame) -> pd.DataFrame:
    """Per cell: seeds, and mean with 95% interval of validation accuracy, macro-F1 and train accuracy."""
    cells = stats.cell_columns(ok)
    out = None
    for metric in ("val_accuracy", "val_macro_f1", "train_accuracy"):
        if metric not in ok.columns or ok[metric].isna().all():
            continue
        s = stats.summarize(ok, metric, by=cells).drop(columns=["sd"])
        s = s.rename(columns={"mean": metric, "ci_low": f"{metric}_ci_low", "ci_high": f"{metric}_ci_high",
                              "n_seeds": f"{metric}_n"})
        out = s if out is None else out.merge(s, on=cells, how="outer")
    out = out.rename(columns={"val_accuracy_n": "n_seeds"})
    return out.drop(columns=[c for c in out.columns if c.endswith("_n")])


def headline_table(aulc: pd.DataFrame, paired: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """AULC, the difference to `random` and the accuracy at the largest fraction, one row per curve."""
    keys = [c for c in aulc.columns if c in stats.parameter_columns(aulc)]
    head = aulc.copy()
    if len(paired):
        diff = paired[[*keys, "n_pairs", "mean_diff", "ci_low", "ci_high", "significant"]].rename(
            columns={"ci_low": "diff_ci_low", "ci_high": "diff_ci_high"})
        head = head.merge(diff, on=keys, how="left")
    last = cells.merge(cells.groupby(keys, dropna=False)["fraction"].max().rename("fraction_max").reset_index(),
                       on=keys)
    last = last[last["fraction"] == last["fraction_max"]][[*keys, "val_accuracy", "val_accuracy_ci_low",
                                                          "val_accuracy_ci_high"]]
    head = head.merge(last.rename(columns={"val_accuracy": "acc_at_max", "val_accuracy_ci_low": "acc_at_max_ci_low",
                                           "val_accuracy_ci_high": "acc_at_max_ci_high"}), on=keys, how="left")
    return head


def _display_headline(head: pd.DataFrame, varying: list[str], has_diff: bool) -> pd.DataFrame:
    cols = _shown_params(head, varying)
    cols = [c for c in cols if c != "fraction"]
    groups = [c for c in cols if c not in ("strategy", "freeze")]  # e.g. pool: its strategies stay together
    ranked = head.assign(_f=_freeze_rank(head), **{f"_{c}": _baseline_rank(head[c]) for c in groups})
    order = ranked.sort_values(["_f", *[f"_{c}" for c in groups], "aulc"],
                               ascending=[True] * (1 + len(groups)) + [False]).index
    rows = []
    for _, r in head.loc[order].iterrows():
        row = {c: _value(r[c]) for c in cols}
        row["seeds"] = int(r["n_seeds"])
        row["AULC % [95% CI]"] = _pct_ci(r["aulc"], r["ci_low"], r["ci_high"])
        if has_diff:
            row["vs random, pp [95% CI]"] = ("baseline" if r.get("strategy") == "random" else
                                             _pp_ci(r.get("mean_diff", math.nan), r.get("diff_ci_low", math.nan),
                                                    r.get("diff_ci_high", math.nan), bool(r.get("significant"))))
        row["acc % at largest fraction [95% CI]"] = _pct_ci(r["acc_at_max"], r["acc_at_max_ci_low"],
                                                             r["acc_at_max_ci_high"])
        rows.append(row)
    return pd.DataFrame(rows)


def _display_paired(paired: pd.DataFrame, factor: str, varying: list[str]) -> pd.DataFrame:
    cols = [c for c in _shown_params(paired, varying) if c != factor]
    if "fraction" in paired.columns:
        cols = [c for c in cols if c != "fraction"] + ["fraction"]
    order = paired.assign(_f=_freeze_rank(paired)).sort_values(
        ["_f", *[c for c in cols if c != "freeze"], factor]).index
    rows = []
    for _, r in paired.loc[order].iterrows():
        row = {c: _value(r[c]) for c in cols}
        row[factor] = r[factor]
        row["pairs"] = int(r["n_pairs"])
        row[f"minus {r['baseline']}, pp [95% CI]"] = _pp_ci(r["mean_diff"], r["ci_low"], r["ci_high"],
                                                             bool(r["significant"]))
        rows.append(row)
    return pd.DataFrame(rows)


def _display_cells(cells: pd.DataFrame, varying: list[str]) -> pd.DataFrame:
    cols = _shown_params(cells, varying, always=("strategy", "freeze", "fraction"))
    order = cells.assign(_f=_freeze_rank(cells)).sort_values(["_f", *[c for c in cols if c != "freeze"]]).index
    rows = []
    for _, r in cells.loc[order].iterrows():
        row = {c: _value(r[c]) for c in cols}
        row["seeds"] = int(r["n_seeds"])
        for metric, label in (("val_accuracy", "val acc %"), ("val_macro_f1", "val macro-F1 %"),
                              ("train_accuracy", "train acc %")):
            if metric in cells.columns:
                row[f"{label} [95% CI]"] = _pct_ci(r[metric], r[f"{metric}_ci_low"], r[f"{metric}_ci_high"])
        rows.append(row)
    return pd.DataFrame(rows)


def _write_table(raw: pd.DataFrame, shown: pd.DataFrame, tables_dir: Path, name: str) -> tuple[Path, Path]:
    tables_dir.mkdir(parents=True, exist_ok=True)
    csv, md = tables_dir / f"{name}.csv", tables_dir / f"{name}.md"
    raw.to_csv(csv, index=False)
    md.write_text(markdown_table(shown) + "\n")
    return csv, md


# --------------------------------------------------------------------------- the pipeline


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "sweep"


def _real_labels(res: Results) -> tuple[pd.Series | None, str]:
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


def analyze(results_dirs: list[Path], output_dir: Path, n_boot: int = stats.N_BOOT, seed: int = 0) -> Path:
    """Write report.md, report.html, figures/ and tables/ for `results_dirs` into `output_dir`.

    Returns the path of report.md. `seed` seeds the bootstrap and the figures' subsampling.
    """
    output_dir = Path(output_dir)
    fig_dir, tab_dir = output_dir / "figures", output_dir / "tables"
    output_dir.mkdir(parents=True, exist_ok=True)
    results = load_many([Path(d) for d in results_dirs])
    trials = combined_trials(results)
    ok = trials[trials["status"] == "ok"].copy()
    failed = trials[trials["status"] != "ok"]
    varying = stats.varying_parameters(ok) if len(ok) else []
    several = len(results) > 1

    names = ", ".join(r.name for r in results)
    doc = Doc(title=f"raysweep report: {names}")
    figs: list[tuple[Path, str]] = []
    skipped: list[tuple[str, str]] = []

    # ---- summary
    doc.heading("Summary")
    seeds_low, seeds_high = stats.seed_counts(ok)
    n_cells = len(ok.groupby(stats.cell_columns(ok), dropna=False)) if len(ok) else 0
    items = [f"Sweeps: {', '.join(f'**{r.name}** (`{r.dir}`)' for r in results)}",
             f"Trials: {len(trials)} ({len(ok)} ok, {len(failed)} failed) in {n_cells} cells with results; "
             f"seeds per cell: {seeds_low if seeds_low == seeds_high else f'{seeds_low}-{seeds_high}'}",
             "Parameters that vary: " + (", ".join(f"`{p}`" for p in varying) or "none")]
    if len(ok) and "wall_s" in ok.columns and ok["wall_s"].notna().any():
        items.append(f"Compute: {ok['wall_s'].sum() / 60:.1f} trial-minutes of wall time")
    doc.bullets(items)

    cells = aulc = paired = None
    if len(ok):
        cells = cell_table(ok)
        best = cells.sort_values("val_accuracy", ascending=False).iloc[0]
        desc = ", ".join(f"{c} = {_value(best[c])}" for c in stats.cell_columns(ok) if c in varying or c in
                         ("strategy", "freeze", "fraction"))
        doc.para(f"Best cell by mean validation accuracy: {desc}: "
                 f"**{_pct_ci(best['val_accuracy'], best['val_accuracy_ci_low'], best['val_accuracy_ci_high'])}%** "
                 f"over {int(best['n_seeds'])} seed(s).")

    # ---- headline
    doc.heading("Headline: area under the learning curve")
    if not len(ok):
        doc.para("No successful trials, so there is no headline table.")
    else:
        aulc = stats.aulc_table(ok)
        paired = stats.paired_differences(ok, "strategy", "random", n_boot=n_boot, seed=seed)
        head = headline_table(aulc, paired, cells)
        if aulc["aulc"].isna().all():
            doc.para("AULC needs at least two fractions per curve; this sweep has one, so the table shows "
                     "only the accuracy.")
        has_diff = len(paired) > 0
        no_diff_reason = _no_pairs_reason(ok)
        shown = _display_headline(head, varying, has_diff)
        _write_table(head, shown, tab_dir, "headline")
        doc.para("AULC: trapezoidal area under validation accuracy vs added fraction, divided by the fraction "
                 "range (the curve's average height), per seed, then mean over seeds with a 95% t-interval. "
                 + ("`vs random`: mean paired difference to `random` over seeds and fractions > 0, in "
                    "percentage points, with a seeded percentile-bootstrap 95% interval; `*` marks an "
                    "interval that excludes 0 (not corrected for multiple comparisons)."
                    if has_diff else f"No paired differences: {no_diff_reason}."))
        if seeds_high == 1:
            doc.para("Every cell has one seed, so no row has an interval.")
        doc.table(shown)

    # ---- figures from trials
    doc.heading("Figures")
    if len(ok):
        figs.append((figures.learning_curves(ok, fig_dir, "val_accuracy"),
                     "Validation accuracy vs added rows per freeze mode (the study's Figures 2 and 3)."))
        if "val_macro_f1" in ok.columns and ok["val_macro_f1"].notna().any():
            figs.append((figures.learning_curves(ok, fig_dir, "val_macro_f1", name="learning_curves_macro_f1"),
                         "Validation macro-F1 vs added rows per freeze mode."))
        if "train_accuracy" in ok.columns and ok["train_accuracy"].notna().any():
            figs.append((figures.train_vs_val(ok, fig_dir),
                         "Train vs validation accuracy: the gap between them is over-fitting."))
        else:
            skipped.append(("train_vs_val", "the trials have no `train_accuracy`"))
        if figures.confusions(ok).notna().any():
            class_names = next((r.class_names for r in results if r.class_names), None)
            figs.append((figures.val_confusion(ok, fig_dir, class_names),
                         "Validation confusion matrices of each freeze mode's best cell at the largest fraction."))
        else:
            skipped.append(("val_confusion", "no trial has a `confusion` matrix"))
        for param in varying:
            figs.append((figures.parameter_plot(ok, param, fig_dir),
                         f"Automatic plot for the varying parameter `{param}`: every trial's validation accuracy."))
        if not varying:
            skipped.append(("by_<parameter>", "no parameter varies across the successful trials"))
    else:
        for name in ("learning_curves", "train_vs_val", "val_confusion", "by_<parameter>"):
            skipped.append((name, "no successful trials" if len(trials) else "no trials.csv with rows"))

    # ---- figures from generation and diagnostics, per sweep
    correlations = []
    generation_rows = []
    for res in results:
        tag = f"{_slug(res.name)}-" if several else ""
        where = f" ({res.name})" if several else ""
        if res.generated is not None:
            png, agreement = figures.label_confusion(res.generated, fig_dir, res.class_names, name=f"{tag}llm_vs_teacher")
            figs.append((png, f"LLM label vs teacher label{where} (the study's Figure 1)."))
            generation_rows.append({"sweep": res.name, "key": "agreement (from generated.csv)",
                                    "value": f"{agreement:.4f}"})
            real, source = _real_labels(res)
            if real is not None:
                figs.append((figures.label_distribution(real, res.generated, fig_dir, res.class_names,
                                                        name=f"{tag}label_distribution"),
                             f"Label distribution of real (from {source}) vs generated rows{where} "
                             "(the study's Figure 5)."))
            else:
                skipped.append((f"{tag}label_distribution", f"{source}{where}"))
        else:
            for name in ("llm_vs_teacher", "label_distribution"):
                skipped.append((f"{tag}{name}", res.missing["generated.csv"] + where))
        if res.generation is not None:
            for key, value in res.generation.items():
                if isinstance(value, (int, float, str, bool)) or value is None:
                    generation_rows.append({"sweep": res.name, "key": key, "value": _value(value)})
        if res.embeddings is not None:
            figs.append((figures.embedding_pca(res.embeddings["real"], res.embeddings["generated"], fig_dir,
                                               seed=seed, name=f"{tag}embeddings_pca"),
                         f"Real vs generated sentence embeddings, first two principal components{where} "
                         "(the study's Figure 4)."))
        else:
            skipped.append((f"{tag}embeddings_pca", res.missing["embeddings.npz"] + where))
        if res.diagnostics is not None:
            figs.append((figures.entropy_vs_sqbc(res.diagnostics, fig_dir, seed=seed, name=f"{tag}entropy_vs_sqbc"),
                         f"Entropy vs SQBC disagreement per pool row{where}; the study found r = 0.161."))
            diag = res.diagnostics
            for freeze, part in diag.groupby("freeze", sort=False):
                correlations.append({"sweep": res.name, "freeze": freeze, "seed": "all",
                                     **stats.pearson(part["entropy"], part["sqbc"])})
                for s, sp in part.groupby("seed", sort=True):
                    correlations.append({"sweep": res.name, "freeze": freeze, "seed": s,
                                         **stats.pearson(sp["entropy"], sp["sqbc"])})
        else:
            skipped.append((f"{tag}entropy_vs_sqbc", res.missing["diagnostics"] + where))

    for png, caption in figs:
        doc.heading(f"`{png.stem}`", level=3)
        doc.figure(png, caption)

    # ---- detail tables
    doc.heading("Tables")
    doc.para("All tables are also written as CSV (raw numbers) and Markdown under `tables/`.")
    if len(ok):
        if len(paired):
            by_fraction = stats.paired_differences(ok, "strategy", "random", by_fraction=True, n_boot=n_boot, seed=seed)
            _write_table(paired, _display_paired(paired, "strategy", varying), tab_dir, "paired_strategy")
            shown = _display_paired(by_fraction, "strategy", varying)
            _write_table(by_fraction, shown, tab_dir, "paired_strategy_by_fraction")
            doc.heading("Strategy minus `random`, per fraction", level=3)
            doc.para("Paired on seed at each fraction; percentile-bootstrap 95% interval; `*`: excludes 0.")
            _table_or_link(doc, shown, "paired_strategy_by_fraction")
        else:
            doc.para(f"No paired strategy differences: {_no_pairs_reason(ok)}.")
        if "pool" in varying and "real" in set(ok["pool"]):
            pool_diff = stats.paired_differences(ok, "pool", "real", n_boot=n_boot, seed=seed)
            shown = _display_paired(pool_diff, "pool", varying)
            _write_table(pool_diff, shown, tab_dir, "paired_pool")
            doc.heading("Pool minus `real`, over seeds and fractions", level=3)
            _table_or_link(doc, shown, "paired_pool")
        shown = _display_cells(cells, varying)
        _write_table(cells, shown, tab_dir, "cells")
        doc.heading("Every cell", level=3)
        doc.para("Mean over seeds with a 95% t-interval, in percent.")
        _table_or_link(doc, shown, "cells")
    if generation_rows:
        gen = pd.DataFrame(generation_rows)
        if not several:
            gen = gen.drop(columns=["sweep"])
        _write_table(gen, gen, tab_dir, "generation")
        doc.heading("LLM generation", level=3)
        doc.table(gen)
    if correlations:
        corr = pd.DataFrame(correlations)
        shown = corr.assign(**{c: corr[c].map(lambda v: f"{v:.3f}") for c in ("r", "ci_low", "ci_high")},
                            p=corr["p"].map(lambda v: f"{v:.2g}"))
        if not several:
            shown = shown.drop(columns=["sweep"])
        _write_table(corr, shown, tab_dir, "entropy_sqbc_correlation")
        doc.heading("Entropy vs SQBC: Pearson correlation", level=3)
        doc.para("r with a 95% interval (Fisher z) and two-sided p; the study reports 0.161.")
        doc.table(shown)

    # ---- failed cells
    doc.heading("Failed trials")
    if len(failed):
        cols = [c for c in ("sweep", "cell_id", *stats.PARAMETERS) if c in failed.columns
                and (c in varying or c in ("cell_id", "strategy", "freeze", "fraction", "seed"))]
        shown = failed[cols].copy()
        shown["error"] = failed["error"].map(lambda e: (e[:160] + "...") if len(e) > 160 else e) \
            if "error" in failed.columns else ""
        shown = shown.map(_value)
        _write_table(failed, shown, tab_dir, "failed")
        doc.para(f"{len(failed)} trial(s) in {failed['cell_id'].nunique()} cell(s) failed; they are left out of "
                 "every number above.")
        _table_or_link(doc, shown, "failed")
    else:
        doc.para("None." if len(trials) else "No trials were read.")

    # ---- skipped
    doc.heading("Skipped figures")
    if skipped:
        doc.table(pd.DataFrame(skipped, columns=["figure", "why"]))
    else:
        doc.para("None: every figure had its inputs.")

    # ---- config and reproduction
    doc.heading("Sweep config and how to reproduce")
    for res in results:
        doc.heading(res.name, level=3)
        missing = res.missing.get("sweep.yaml")
        if missing:
            doc.para(f"{missing}, so the run cannot be reproduced from this directory.")
        else:
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
    doc.code("raysweep analyze " + " ".join(shlex.quote(str(r.dir)) for r in results)
             + f" --output {shlex.quote(str(output_dir))}", "sh")

    doc.heading("How the numbers are computed")
    doc.bullets([
        "Failed trials are left out; a cell is a combination of every parameter but `seed`.",
        "Mean over seeds with a two-sided 95% Student-t interval, mean ± t(0.975, n-1)·sd/√n; none for one seed.",
        "AULC: per seed, the trapezoidal area under the metric vs `fraction`, divided by max − min fraction; "
        "only seeds with every fraction of the curve count; then mean and t-interval over seeds.",
        "Paired differences: a strategy's trial minus the `random` trial with the same seed, fraction and "
        "other parameters; fraction 0 (no rows added) is left out. Interval: percentile bootstrap of the mean "
        f"difference, {n_boot:,} resamples of the pairs, seed {seed}. `*`: the interval excludes 0.",
        "Figures draw the same mean and t-interval as the tables; each states its number of seeds.",
    ])

    (output_dir / "report.md").write_text(doc.to_markdown(output_dir))
    (output_dir / "report.html").write_text(doc.to_html())
    return output_dir / "report.md"


def _no_pairs_reason(ok: pd.DataFrame) -> str:
    strategies = set(ok["strategy"])
    if "random" not in strategies:
        return "no `random` strategy among the successful trials"
    if strategies == {"random"}:
        return "`random` is the only strategy, so there is nothing to compare with it"
    return "no other strategy shares a seed and a fraction > 0 with `random`"


def _table_or_link(doc: Doc, shown: pd.DataFrame, name: str) -> None:
    if len(shown) <= MAX_REPORT_ROWS:
        doc.table(shown)
    else:
        doc.para(f"{len(shown)} rows: see `tables/{name}.md` and `tables/{name}.csv`.")
