"""The report's "Chosen rows" section: what each strategy picked (from <results>/chosen/).

Two views of the record `raysweep.chosen` keeps: the label distribution of each strategy's chosen
rows against the pool's (uncertainty sampling is known to over-pick SST-5's neighbouring classes),
and the rows each strategy ranked highest, with their text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from raysweep.analysis import figures
from raysweep.analysis.figures import label_names
from raysweep.chosen import read_chosen
from raysweep.tasks import shown as shown_text

TOP_K = 10  # a row counts as one of a cell's top picks when it is among its first TOP_K
TOP_SHOWN = 5  # rows shown per strategy in the report's table


def chosen_for(res_dir: Path, trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(chosen rows joined to their cell's parameters, the rows tables) of one results directory.

    Only the real pool's cells that made a choice: fraction > 0 and fewer rows than the whole
    pool (a cell that adds the whole pool picked nothing, and would pull every strategy's
    distribution to the pool's).
    """
    chosen, rows = read_chosen(res_dir)
    if chosen.empty:
        return chosen, rows
    ok = trials[trials["status"] == "ok"]
    params = ok[["cell_id", "pool", "strategy", "fraction", "freeze", "seed"]].drop_duplicates("cell_id")
    data = chosen.merge(params, on="cell_id")
    pool_sizes = rows[~rows["labeled"].astype(bool)].groupby("rows_table").size()
    whole = data.groupby("cell_id")["row"].transform("size") >= data["rows_table"].map(pool_sizes).fillna(float("inf"))
    return data[(data["pool"] == "real") & (data["fraction"] > 0) & ~whole], rows


def is_score(labels: pd.Series) -> bool:
    """Whether gold labels are a regression's scores (STS's 0.0-5.0) rather than class ids."""
    numeric = pd.to_numeric(labels, errors="coerce")
    return bool(numeric.notna().all() and (numeric % 1 != 0).any())


def score_bins(labels: pd.Series, edges: np.ndarray) -> pd.Series:
    """Scores as unit-wide bins ("2-3"), the top edge in the last bin: a class-share figure of scores."""
    names = [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:])]
    at = np.clip(np.searchsorted(edges, labels.to_numpy(dtype=float), side="right") - 1, 0, len(names) - 1)
    return pd.Series(pd.Categorical([names[i] for i in at], names), index=labels.index)


def distribution(data: pd.DataFrame, rows: pd.DataFrame, out_dir: Path, class_names: list[str] | None = None,
                 name: str = "chosen_label_distribution") -> Path:
    """Share of each gold class (a score: each unit-wide bin) among each strategy's chosen rows, beside the pool's."""
    pool = rows[~rows["labeled"].astype(bool) & rows["rows_table"].isin(set(data["rows_table"]))]
    sources = [("pool", pool["label"])] + [(s, g["label"]) for s, g in data.groupby("strategy", sort=True)]
    xlabel = "gold class"
    if is_score(pool["label"]):
        edges = np.arange(np.floor(pool["label"].min()), np.ceil(pool["label"].max()) + 1)
        sources = [(s, score_bins(labels.astype(float), edges).astype(str)) for s, labels in sources]
        class_names, xlabel = [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:])], "gold score"
    return figures.class_shares(sources, out_dir, class_names, "Label distribution of the chosen rows vs the pool",
                                name, xlabel=xlabel)


def top_rows(data: pd.DataFrame, rows: pd.DataFrame, class_names: list[str] | None = None,
             shown: int = TOP_SHOWN) -> pd.DataFrame:
    """Per strategy, the rows most often among its cells' first TOP_K picks, with their text.

    Counted over every cell of the strategy (freeze modes, fractions, seeds), so a row shown is
    one the strategy keeps coming back to, not one seed's accident; ties go to the lower mean rank.
    """
    top = data[data["rank"] < TOP_K]
    out = []
    for strategy, part in top.groupby("strategy", sort=True):
        cells = part["cell_id"].nunique()
        agg = part.groupby(["rows_table", "row"]).agg(cells=("cell_id", "nunique"), mean_rank=("rank", "mean"),
                                                      mean_score=("score", "mean")).reset_index()
        agg = agg.sort_values(["cells", "mean_rank", "row"], ascending=[False, True, True]).head(shown)
        agg = agg.merge(rows[["rows_table", "row", "text", "label"]], on=["rows_table", "row"], how="left")
        labels = agg["label"].dropna()
        gold = labels.map(lambda v: f"{v:.2f}") if is_score(labels) else label_names(labels, class_names)[0]
        agg["gold"] = gold.reindex(agg.index).fillna("")
        agg["in_top"] = agg["cells"].astype(int).astype(str) + f" of {cells}"
        out.append(agg.assign(strategy=strategy))
    columns = ["strategy", "row", "text", "gold", "in_top", "mean_rank", "mean_score"]
    return pd.concat(out, ignore_index=True)[columns] if out else pd.DataFrame(columns=columns)


def section(run) -> None:
    """The report's "Chosen rows" section (`run` is report.Run); says when nothing is on record."""
    doc = run.doc
    doc.heading("Chosen rows")
    parts, recorded, finished = [], 0, 0
    for res in run.results:
        if res.trials is None:
            continue
        ok_ids = set(res.ok.loc[res.ok["fraction"] > 0, "cell_id"])  # a cell adding nothing has nothing to record
        data, rows = chosen_for(res.dir, res.trials)
        recorded += len(ok_ids & set(read_chosen(res.dir)[0]["cell_id"]))
        finished += len(ok_ids)
        if len(data):
            parts.append((res, data, rows))
    if finished and recorded < finished:
        doc.para(f"{finished - recorded} of {finished} finished cells have no chosen rows on record: they "
                 "finished before raysweep recorded the rows each cell adds (or added none).")
    if not parts:
        doc.para("No figure or table here: no cell of the real pool has chosen rows on record "
                 "(with 0 < rows added < the whole pool).")
        return
    for res, data, rows in parts:
        tag = f"{res.name}-" if run.several else ""
        where = f" ({res.name})" if run.several else ""
        png = distribution(data, rows, run.fig_dir, res.class_names, name=f"{tag}chosen_label_distribution")
        doc.figure(png, f"Gold label distribution of each strategy's chosen rows vs the pool{where}, over every "
                        "cell that chose part of the real pool (all freeze modes, fractions and seeds).")
        top = top_rows(data, rows, res.class_names)
        doc.heading(f"Top rows per strategy{where}", level=3)
        doc.para(f"The rows most often among a cell's first {TOP_K} picks (`in_top`: in how many of the "
                 "strategy's cells); `mean_score` is the strategy's own score (empty for random and the "
                 "greedy diversity strategies).")
        shown = top.assign(text=top["text"].fillna("").map(shown_text).map(
                               lambda t: t if len(t) <= 120 else t[:117] + "..."),
                           mean_rank=top["mean_rank"].map(lambda v: f"{v:.1f}"),
                           mean_score=top["mean_score"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}"))
        run.table(top, shown, f"{tag}top_chosen_rows")
