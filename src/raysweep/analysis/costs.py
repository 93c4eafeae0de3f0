"""The report's cost answer: is LLM data worth it, in dollars?

    priced(results)                 every finished cell with human_labels, llm_labels and cost_usd
    sources(priced, metric)         accuracy (mean, 95% t-interval over seeds) against dollars per
                                    pool, fraction and context
    cheapest(priced, metric, ...)   "the cheapest source to reach X": per target X (what each
                                    fraction of human-labeled rows reaches), each source's cheapest
                                    cell that reaches it, tested against the target's cells (paired
                                    over seeds, over seeds and rows where predictions exist; Holm)
    break_even(priced, metric, ...) the human price per label at which a pool's LLM labels cost as
                                    much as the human labels that reach the same accuracy

The report's sentences, tables and figure built from them are analysis/cost_report.py.

Sources are the pools of the registry (pools/), by who labeled their rows (`labeled_by`): nothing
here names a pool, so a pool added later is priced and compared like the others. Cost is what a
cell's added rows' labels cost (costs.py, the same functions the run prices its records with):
trials.csv's `cost_usd` when it has one, else derived from the same inputs (older outputs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from raysweep import costs, pools
from raysweep.analysis import compare, rows
from raysweep.analysis.results import ResultsError, combined_trials
from raysweep.analysis.stats import cell_columns, mean_ci
from raysweep.config import ConfigError

NO_ROWS = "no rows added"  # fraction 0: the labeled set alone, a source of its own at no label cost
TIE = 1e-9  # dollars closer than this are the same price


# --------------------------------------------------------------------------- pricing the cells


def prices_of(res) -> costs.Prices:
    """One results directory's prices: its sweep.yaml's `costs:` and its steps' summaries. A
    `costs:` that is not a valid one is a ResultsError naming the file and the key."""
    try:
        return costs.prices_of((res.config or {}).get("costs") or {}, res.generation, res.annotation)
    except ConfigError as exc:
        raise ResultsError(f"{res.dir / 'sweep.yaml'}: {exc}") from None


def list_price(res, step: str | None) -> tuple[str, float] | None:
    """(model, dollars) of one LLM row of `step` at the cheapest non-zero list price in the sweep's
    `llm.prices`, from the tokens the step measured; None when nothing is listed or measured."""
    found = costs.list_prices(prices_of(res).steps.get(step or ""), ((res.config or {}).get("llm") or {}).get("prices"))
    return min(found.items(), key=lambda kv: kv[1]) if found else None


def priced(results) -> pd.DataFrame:
    """The finished cells of `results` (analysis.results.Results) with `labeled_by`,
    `human_labels`, `llm_labels`, `cost_usd` and its label parts `human_usd` and `llm_usd` (API
    dollars, and the embedded LLM's compute when priced), and `list_usd`: the LLM rows' measured
    tokens at `list_model`'s list price. `cost_from` is "recorded" (trials.csv has it) or
    "derived" (an older output: the same functions, the same inputs); a pool this version does not
    know is priced at NaN and says so there."""
    parts = []
    for res in results:
        if res.trials is None or not len(res.trials):
            continue
        ok = res.trials[res.trials["status"] == "ok"]
        prices = prices_of(res)
        listed = {step: list_price(res, step) for step in costs.SUMMARY_OF_STEP}
        out = [_price_trial(t, prices, listed) for _, t in ok.iterrows()]
        extra = pd.DataFrame(out, index=ok.index)
        parts.append(pd.concat([ok.drop(columns=[c for c in extra.columns if c in ok.columns]), extra], axis=1)
                     .assign(sweep=res.name))
    if not parts:
        return pd.DataFrame()
    data = pd.concat(parts, ignore_index=True)
    joint = combined_trials(results)["sweep"]
    if len(parts) > 1 and joint.nunique() == 1:  # parts of one grid (results.combined_trials): one sweep here too
        data["sweep"] = joint.iloc[0]
    return data


def _price_trial(t: pd.Series, prices: costs.Prices, listed: dict) -> dict:
    if t["pool"] not in pools.REGISTRY:
        return {"labeled_by": "unknown", "human_labels": math.nan, "llm_labels": math.nan, "cost_usd": math.nan,
                "human_usd": math.nan, "llm_usd": math.nan, "list_usd": math.nan, "list_model": "",
                "cost_from": f"unknown pool {t['pool']!r}"}
    pool = pools.get(t["pool"])
    known = {c: t[c] for c in ("human_labels", "llm_labels", "cost_usd") if c in t.index and not pd.isna(t[c])}
    found = costs.price_cell(prices, pool.name, {"n_added": t.get("n_added"), "trial_s": t.get("trial_s"),
                                                 "human_labels": known.get("human_labels"),
                                                 "llm_labels": known.get("llm_labels")})
    usd = known.get("cost_usd", found["cost_usd"])
    listed = listed.get(pool.step) if found["llm_labels"] else None
    return {"labeled_by": pool.labeled_by, "human_labels": found["human_labels"], "llm_labels": found["llm_labels"],
            "cost_usd": math.nan if usd is None else float(usd),
            "human_usd": found["human_labels"] * prices.human_label_usd,
            "llm_usd": found["llm_labels"] * prices.llm_usd_per_row(pool.step) if found["llm_labels"] else 0.0,
            "list_usd": found["llm_labels"] * listed[1] if listed else (0.0 if not found["llm_labels"] else math.nan),
            "list_model": listed[0] if listed else "", "cost_from": "recorded" if "cost_usd" in known else "derived"}


def table_context(table: pd.DataFrame) -> list[str]:
    """The context columns of a `sources` table (its cell parameters but source and fraction)."""
    return [c for c in table.columns if c in contexts(table.assign(pool="")) and c not in ("source", "fraction")]


def source_of(row) -> str:
    return NO_ROWS if row["fraction"] == 0 else str(row["pool"])


def contexts(data: pd.DataFrame) -> list[str]:
    """The columns a cost comparison holds fixed: every cell parameter but the pool and fraction."""
    return [c for c in cell_columns(data) if c not in ("pool", "fraction")]


# --------------------------------------------------------------------------- accuracy against dollars


def sources(data: pd.DataFrame, metric: str = "val_accuracy") -> pd.DataFrame:
    """Per context, source and fraction: seeds, mean metric with its 95% t-interval over seeds,
    rows added, labels of each kind and mean dollars. Fraction 0 is one source (`NO_ROWS`) per
    context, whichever pool's cells hold it."""
    if not len(data):
        return pd.DataFrame()
    data = data.assign(source=data.apply(source_of, axis=1))
    by = [*contexts(data), "source", "fraction"]
    out = []
    for key, g in data.groupby(by, sort=True, dropna=False):
        if g["source"].iloc[0] == NO_ROWS:  # every pool's fraction-0 cell is the same training: one per seed
            g = g.drop_duplicates("seed")
        mean, low, high = mean_ci(g[metric])
        usd = g["cost_usd"]
        out.append({**dict(zip(by, key)), "n_seeds": int(g[metric].notna().sum()), "mean": mean, "ci_low": low,
                    "ci_high": high, "n_added": float(g["n_added"].mean()) if "n_added" in g else math.nan,
                    "human_labels": float(g["human_labels"].mean()), "llm_labels": float(g["llm_labels"].mean()),
                    "cost_usd": float(usd.mean()) if usd.notna().all() else math.nan,
                    **{c: float(g[c].mean()) if g[c].notna().all() else math.nan for c in ("human_usd", "llm_usd",
                                                                                          "list_usd")},
                    "list_model": g["list_model"].iloc[0],
                    "labeled_by": g["labeled_by"].iloc[0] if g["source"].iloc[0] != NO_ROWS else "none",
                    "cell_ids": ",".join(g["cell_id"].astype(str))})
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- the cheapest source to reach X


def _targets(ctx_rows: pd.DataFrame) -> pd.DataFrame:
    """What each fraction > 0 of human-labeled rows reaches (its mean): the accuracies to buy."""
    human = ctx_rows[(ctx_rows["labeled_by"] == costs.HUMAN) & (ctx_rows["fraction"] > 0)]
    return human.dropna(subset=["mean"]).sort_values(["source", "fraction"])


def _paired_test(data: pd.DataFrame, ids: str, base_ids: str, metric: str, preds, num_classes) -> dict:
    """`ids`' cells minus `base_ids`' cells, paired by seed: over seeds and evaluation rows when
    every cell has predictions (analysis/rows.py), else over seeds only (said so in `inference`)."""
    cells = data.drop_duplicates("cell_id").set_index("cell_id", drop=False)
    a = cells.loc[ids.split(",")].drop_duplicates("seed").set_index("seed")
    b = cells.loc[base_ids.split(",")].drop_duplicates("seed").set_index("seed")
    seeds = sorted(set(a.index) & set(b.index))
    a_ids, b_ids = [a.at[s, "cell_id"] for s in seeds], [b.at[s, "cell_id"] for s in seeds]
    split = "test" if metric.startswith("test_") else "val"
    if (preds is not None and len(seeds) >= 2 and metric.removeprefix(f"{split}_") in rows.ROW_METRICS
            and all(preds.has(split, c) for c in a_ids + b_ids)):
        pairs = pd.DataFrame({"fraction": 0.0, "seed": seeds, "cell_id": a_ids, "cell_id_base": b_ids})
        try:
            tw = rows.two_way(rows.differences(pairs, preds, split, metric, num_classes))
            test = tw.test()
            return {"pair_seeds": len(seeds), "n_rows": tw.n_rows, "inference": rows.INFERENCE_ROWS,
                    "mean_diff": tw.mean, "diff_low": test["ci_low"], "diff_high": test["ci_high"], "p": test["p"]}
        except ValueError:
            pass  # cells scored on different evaluation sets: the seed-only test below
    test = compare.seed_test([a.at[s, metric] - b.at[s, metric] for s in seeds])
    return {"pair_seeds": len(seeds), "n_rows": math.nan, "inference": rows.INFERENCE_SEEDS,
            "mean_diff": test["mean_diff"], "diff_low": test["ci_low"], "diff_high": test["ci_high"], "p": test["p"]}


def cheapest(data: pd.DataFrame, metric: str = "val_accuracy", preds=None, num_classes=None,
             table: pd.DataFrame | None = None, expected=()) -> pd.DataFrame:
    """One row per context, target and source: the source's cheapest cell whose mean reaches the
    target (`reached`), or why none does ("not reached": its best mean; "no cells"; "cost
    unknown"), its dollars and whether it is the cheapest (ties: every source at the lowest price).
    Each reaching cell is tested against the target's cells (mean_diff, its interval, p, Holm over
    the whole table): a "reach" whose difference is within noise is said so by the findings.
    `expected`: pools the sweeps asked for (their `compare.pool`): one without a finished cell
    is a row "no cells", not left out."""
    table = sources(data, metric) if table is None else table
    if not len(table):
        return pd.DataFrame()
    ctx = table_context(table)
    names = [p for p in pools.names()] + sorted(set(table["source"]) - set(pools.names()) - {NO_ROWS})
    out = []
    for key, part in (table.groupby(ctx, sort=True, dropna=False) if ctx else [((), table)]):
        key = key if isinstance(key, tuple) else (key,)
        where = dict(zip(ctx, key))
        for _, target in _targets(part).iterrows():
            goal = target["mean"]
            for source in [NO_ROWS, *names]:
                cand = part[part["source"] == source]
                if not len(cand) and source not in set(data["pool"]) | set(expected):
                    continue  # a registered pool this sweep does not run: said once, not per target
                row = {**where, "target": f"{target['source']} +{int(round(target['n_added']))} rows",
                       "target_fraction": target["fraction"], "target_mean": goal, "source": source}
                if not len(cand):
                    out.append({**row, "status": "no cells"})
                    continue
                reach = cand[cand["mean"] >= goal - 1e-12]
                if not len(reach):
                    best = cand.loc[cand["mean"].idxmax()] if cand["mean"].notna().any() else cand.iloc[0]
                    out.append({**row, "status": "not reached", "fraction": best["fraction"], "mean": best["mean"],
                                "ci_low": best["ci_low"], "ci_high": best["ci_high"], "cost_usd": best["cost_usd"]})
                    continue
                priced_ = reach[reach["cost_usd"].notna()]
                if not len(priced_):
                    first = reach.sort_values("fraction").iloc[0]
                    out.append({**row, "status": "cost unknown", "fraction": first["fraction"], "mean": first["mean"],
                                "ci_low": first["ci_low"], "ci_high": first["ci_high"], "cost_usd": math.nan})
                    continue
                # The cheapest reaching cell; at one price, the higher mean (then fewer rows).
                best = priced_.sort_values(["cost_usd", "mean", "fraction"], ascending=[True, False, True]).iloc[0]
                found = {**row, "status": "reached", "fraction": best["fraction"], "n_added": best["n_added"],
                         "human_labels": best["human_labels"], "llm_labels": best["llm_labels"], "mean": best["mean"],
                         "ci_low": best["ci_low"], "ci_high": best["ci_high"], "cost_usd": best["cost_usd"],
                         "n_seeds": best["n_seeds"]}
                if best["cell_ids"] != target["cell_ids"]:
                    test = _paired_test(data, best["cell_ids"], target["cell_ids"], metric, preds, num_classes)
                    found.update(test)
                out.append(found)
    result = pd.DataFrame(out)
    if not len(result):
        return result
    for c in ("cost_usd", "p", "mean_diff", "diff_low", "diff_high", "inference", "pair_seeds", "n_rows"):
        if c not in result.columns:
            result[c] = math.nan
    result["p_holm"] = compare.holm(result["p"])
    result["significant"] = result["p_holm"] < compare.ALPHA
    keys = [*ctx, "target"]
    low = result[result["status"] == "reached"].groupby(keys, dropna=False)["cost_usd"].transform("min")
    result["cheapest"] = False
    result.loc[low.index, "cheapest"] = (result.loc[low.index, "cost_usd"] - low).abs() <= TIE
    return result


# --------------------------------------------------------------------------- the break-even human price


def _rows_to_reach(curve: pd.DataFrame, goal: float) -> float:
    """Human-labeled rows (interpolated between fractions; 0 is the labeled set alone) whose mean
    reaches `goal`; inf beyond the curve's last point; NaN without a curve or a goal."""
    if not len(curve) or math.isnan(goal):
        return math.nan
    n = compare.first_crossing(curve["n_added"], curve["mean"], goal)
    return math.inf if math.isnan(n) else n


def break_even(table: pd.DataFrame) -> pd.DataFrame:
    """Per context, LLM-labeled source and fraction > 0 (a `sources` table): the human-labeled
    rows whose mean reaches the source's mean (`human_rows`, interpolated on the human curve of the
    same context; its range from the ends of the source's interval), and the human price per label
    above which the source is the cheaper way to that accuracy: its LLM dollars over the human
    labels it saves (human rows minus the human labels it bought itself). `beyond`: the source
    beats every human fraction of the sweep, so its human rows are at least the largest fraction's
    and the break-even is at most the price given. `break_even_list_usd`: the same at the list
    price of the LLM rows' measured tokens (`list_model`), for an LLM whose bill is $0."""
    if not len(table):
        return pd.DataFrame()
    ctx = table_context(table)
    out = []
    for key, part in (table.groupby(ctx, sort=True, dropna=False) if ctx else [((), table)]):
        key = key if isinstance(key, tuple) else (key,)
        zero = part[part["source"] == NO_ROWS]
        llm = part[part["labeled_by"].isin([costs.GENERATE, costs.ANNOTATE]) & (part["fraction"] > 0)]
        for human in sorted(set(part.loc[part["labeled_by"] == costs.HUMAN, "source"])):
            curve = pd.concat([zero, part[part["source"] == human]]).sort_values("n_added").drop_duplicates("n_added")
            most = float(curve["n_added"].max())
            for _, r in llm.iterrows():
                n_h, low, high = (_rows_to_reach(curve, v) for v in (r["mean"], r["ci_low"], r["ci_high"]))
                bought = r["human_labels"]
                out.append({**dict(zip(ctx, key)), "source": r["source"], "fraction": r["fraction"],
                            "n_added": r["n_added"], "llm_labels": r["llm_labels"], "human_labels": bought,
                            "mean": r["mean"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n_seeds": r["n_seeds"],
                            "human_source": human, "human_rows": n_h, "human_rows_low": low, "human_rows_high": high,
                            "beyond": math.isinf(n_h), "human_rows_most": most, "llm_usd": r["llm_usd"], "list_usd": r["list_usd"],
                            "list_model": r["list_model"], "break_even_usd": _price(r["llm_usd"], n_h, bought, most),
                            # more human rows to match (the interval's top) is a lower break-even price
                            "break_even_low": _price(r["llm_usd"], high, bought, most),
                            "break_even_high": _price(r["llm_usd"], low, bought, most),
                            "break_even_list_usd": _price(r["list_usd"], n_h, bought, most)})
    return pd.DataFrame(out)


def _price(llm_usd: float, human_rows: float, bought: float, most: float) -> float:
    """The human price per label at which `human_rows` human labels cost `llm_usd` plus `bought`
    human labels: inf when the source saves no human label (its mean is no better than what
    `bought` human rows alone reach), 0 when its LLM rows cost nothing. Beyond the human curve
    (`human_rows` inf) the rows are at least `most`, so the price is at most that at `most`."""
    if math.isnan(llm_usd) or math.isnan(human_rows) or math.isnan(bought):
        return math.nan
    spare = (most if math.isinf(human_rows) else human_rows) - bought
    if spare <= 0:
        return math.inf
    return llm_usd / spare


# --------------------------------------------------------------------------- one report's answer


@dataclass
class Answer:
    """The cost answer of one report: every table the findings and the section print."""

    priced: pd.DataFrame  # per finished cell (`priced`)
    table: pd.DataFrame  # per source and fraction (`sources`)
    cheapest: pd.DataFrame
    break_even: pd.DataFrame


def answer(run) -> Answer | None:
    """The cost answer for `run` (report.Run), or None when there is no question to answer: no
    finished cell of an LLM-labeled pool (a sweep of `real` alone compares strategies, not sources)."""
    data = priced(run.results)
    if not len(data) or not data["labeled_by"].isin([costs.GENERATE, costs.ANNOTATE]).any():
        return None
    table = sources(data, run.metric)
    expected = {p for res in run.results for p in (((res.config or {}).get("compare") or {}).get("pool") or [])}
    return Answer(data, table, cheapest(data, run.metric, run.predictions, run.num_classes, table, expected),
                  break_even(table))
