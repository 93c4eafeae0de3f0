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
    findings(run) / section(run)    the report's sentences, tables and figure

Sources are the pools of the registry (pools/), by who labeled their rows (`labeled_by`): nothing
here names a pool, so a pool added later is priced and compared like the others. Cost is what a
cell's added rows' labels cost (costs.py, the same functions the run prices its records with):
trials.csv's `cost_usd` when it has one, else derived from the same inputs (older outputs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from raysweep import costs, pools
from raysweep.analysis.results import ResultsError, combined_trials
from raysweep.config import HUMAN_LABEL_USD, ConfigError
from raysweep.analysis import compare, rows
from raysweep.analysis.findings import interval, points
from raysweep.analysis.stats import cell_columns, mean_ci

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


def _table_context(table: pd.DataFrame) -> list[str]:
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
    ctx = _table_context(table)
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
    ctx = _table_context(table)
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


# --------------------------------------------------------------------------- the report


@dataclass
class Answer:
    """The cost answer of one report: every table the findings and the section print."""

    priced: pd.DataFrame  # per finished cell (`priced`)
    table: pd.DataFrame  # per source and fraction (`sources`)
    cheapest: pd.DataFrame
    break_even: pd.DataFrame
    notes: list[str]  # what the prices are and where they come from, per sweep


def answer(run) -> Answer | None:
    """The cost answer for `run` (report.Run), or None when there is no question to answer: no
    finished cell of an LLM-labeled pool (a sweep of `real` alone compares strategies, not sources)."""
    data = priced(run.results)
    if not len(data) or not data["labeled_by"].isin([costs.GENERATE, costs.ANNOTATE]).any():
        return None
    table = sources(data, run.metric)
    expected = {p for res in run.results for p in (((res.config or {}).get("compare") or {}).get("pool") or [])}
    return Answer(data, table, cheapest(data, run.metric, run.predictions, run.num_classes, table, expected),
                  break_even(table), [n for res in run.results for n in price_notes(res, run.several)])


def price_notes(res, several: bool = False) -> list[str]:
    """What one sweep's prices are, in words: the human price and its source, each LLM step's bill
    and measured tokens per row, and what an LLM that bills nothing costs instead."""
    prices = prices_of(res)
    where = f" ({res.name})" if several else ""
    default = abs(prices.human_label_usd - HUMAN_LABEL_USD) < TIE
    notes = [f"A human label costs **${prices.human_label_usd:.4g}**{where} (`costs.human_label_usd`"
             + (": the default, 3 crowd judges as SST used, each at Amazon SageMaker Ground Truth's lowest listed "
                "Mechanical Turk price for a text-classification task, $0.012; a floor: the service's own fees "
                "are on top" if default else ", set by the sweep") + "). "
             + ("Compute is not priced (`costs.compute_usd_per_hour` is unset): trial time and an embedded LLM's "
                "time count $0." if prices.compute_usd_per_hour is None else
                f"Compute costs ${prices.compute_usd_per_hour:.4g} an hour (`costs.compute_usd_per_hour`): each "
                "cell's trial time and an embedded LLM's time per row are in its dollars.")]
    summaries = {"generate": res.generation, "annotate": res.annotation}
    for step, price in prices.steps.items():
        s = summaries[step] or {}
        file = costs.SUMMARY_OF_STEP[step]
        text = (f"`{step}`{where}: {s.get('model', 'the LLM')}"
                + (f" ({s['endpoint']})" if s.get("endpoint") else "") + f" produced {price.rows:,} usable rows")
        if not math.isnan(price.api_usd_per_row):
            text += f" for ${_number(s.get('cost_usd')):.4g} in API dollars (${price.api_usd_per_row:.4g} a row)"
        if not math.isnan(price.prompt_tokens_per_row):
            text += (f", {price.prompt_tokens_per_row:,.0f} prompt + {price.completion_tokens_per_row:,.0f} "
                     "completion tokens a row")
        if not math.isnan(price.seconds_per_row):
            text += f", {price.seconds_per_row:.3g} s a row"
        if "cost_usd" not in s:
            text += f"; its {file} records no dollars (an older run), so its rows' dollars are unknown, not $0"
        elif math.isnan(price.api_usd_per_row):
            text += "; its model has no price in `llm.prices`, so its rows' dollars are unknown, not $0"
        elif price.api_usd_per_row == 0:
            listed = list_price(res, step)
            text += ("; it bills nothing because it ran on this machine" if price.embedded else "; its bill is $0")
            text += (f", which is not free: its {price.seconds_per_row:.3g} s a row of this machine are "
                     + ("unpriced here" if prices.compute_usd_per_hour is None else
                        f"${price.seconds_per_row * prices.compute_usd_per_hour / 3600:.4g} a row at the compute price"))
            if listed:
                text += (f", and its measured tokens at {listed[0]}'s list price (`llm.prices`) would cost "
                         f"${listed[1]:.4g} a row")
        notes.append(text + ".")
    return notes


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _usd(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    if math.isinf(value):
        return "none"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4g}"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"


def _where(row: pd.Series, ctx: list[str]) -> str:
    return ", ".join(f"{c} {row[c]:g}" if isinstance(row[c], float) else f"{c} {row[c]}" for c in ctx)


def cheapest_sentences(table: pd.DataFrame, ctx: list[str]) -> list[str]:
    """Per context and target: the cheapest source that reaches it, tested against the target's
    cells (Holm over the table), and the sources that do not reach it."""
    if not len(table):
        return []
    m = int(table["p"].notna().sum())
    out = []
    for _, part in table.groupby([*ctx, "target"], sort=False, dropna=False):
        head = part.iloc[0]
        best = part[part["cheapest"]]
        where = _where(head, ctx)
        text = f"**To reach {_pct(head['target_mean'])}** (what {head['target']} reach{'; ' + where if where else ''}): "
        if not len(best):
            text += "no source with a known price reaches it"
        else:
            names = " = ".join(f"`{b['source']}`" + (f" +{int(round(b['n_added']))} rows" if b["source"] != NO_ROWS
                                                     else "") for _, b in best.iterrows())
            b = best.iloc[0]
            text += (f"cheapest is {names} at {_usd(b['cost_usd'])}" + (" (a tie)" if len(best) > 1 else "")
                     + f", mean {_pct(b['mean'])} {_ci_pct(b['ci_low'], b['ci_high'])}")
            if not pd.isna(b["p"]):
                verdict = ("above it, surviving Holm" if b["significant"] and b["mean_diff"] > 0 else
                           "below it, surviving Holm" if b["significant"] else
                           "within noise of it: it reaches the target in the means only")
                evidence = (f"on new rows: {int(b['n_rows']):,} evaluation rows and {int(b['pair_seeds'])} seeds"
                            if b["inference"] == rows.INFERENCE_ROWS else
                            f"{int(b['pair_seeds'])} seeds only, no predictions on record: for this evaluation set")
                text += (f"; against the target's cells {points(b['mean_diff'])} points "
                         f"{interval(b['diff_low'], b['diff_high'])}, Holm p {_p(b['p_holm'])} over {m} "
                         f"comparison{'s' if m != 1 else ''} ({evidence}): {verdict}")
        others = part[~part["cheapest"]]
        short = [f"`{r['source']}` ({'no cells' if r['status'] == 'no cells' else r['status'] + (', best ' + _pct(r['mean']) if r['status'] == 'not reached' else '')})"
                 for _, r in others.iterrows() if r["status"] != "reached"]
        dearer = [f"`{r['source']}` {_usd(r['cost_usd'])}" for _, r in others.iterrows() if r["status"] == "reached"]
        if dearer:
            text += "; dearer: " + ", ".join(dearer)
        if short:
            text += "; " + ", ".join(short)
        out.append(text + ".")
    return out


def _p(p: float) -> str:
    return "n/a" if pd.isna(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def _count(v: float) -> str:
    return "" if pd.isna(v) else f"{v:,.0f}"


def _ci_pct(low: float, high: float) -> str:
    return "[no interval]" if math.isnan(low) else f"[{100 * low:.1f}, {100 * high:.1f}]"


def break_even_sentences(table: pd.DataFrame, ctx: list[str], human_usd: float | None) -> list[str]:
    """Per context and LLM-labeled source, at its largest fraction: the human rows it matches and
    the human price per label at which its labels break even, with the range its interval gives."""
    if not len(table):
        return []
    out = []
    last = table.sort_values("fraction").groupby([*ctx, "source", "human_source"], sort=False, dropna=False).tail(1)
    for _, r in last.iterrows():
        where = _where(r, ctx)
        text = (f"**`{r['source']}` +{int(round(r['n_added']))} rows** ({_pct(r['mean'])} "
                f"{_ci_pct(r['ci_low'], r['ci_high'])}, {int(r['n_seeds'])} seeds{'; ' + where if where else ''}): ")
        be = r["break_even_usd"]
        if math.isnan(r["human_rows"]):
            out.append(text + f"no `{r['human_source']}` curve to match it against.")
            continue
        if math.isinf(be):
            out.append(text + "no human price makes its labels worth buying: its mean is no better than the "
                       "labeled set's alone (no row added)." if not r["human_labels"] else
                       text + f"no break-even: it bought {int(r['human_labels'])} human labels, as many as "
                       f"`{r['human_source']}` rows alone need to reach its mean.")
            continue
        if r["beyond"]:
            text += f"beats every fraction of `{r['human_source']}` (its most: {int(r['human_rows_most'])} rows)"
        else:
            text += f"matches what {r['human_rows']:.0f} `{r['human_source']}` rows reach"
        text += (f" ({_rows_range(r['human_rows_low'], r['human_rows_high'])} from its interval); its LLM labels cost "
                 f"{_usd(r['llm_usd'])}")
        if r["llm_usd"] == 0:
            text += (", so any human price is above break-even: its LLM bill is $0, which prices neither this "
                     "machine's time (unless `costs.compute_usd_per_hour` is set) nor the tokens")
            if not math.isnan(r["break_even_list_usd"]):
                text += (f"; at {r['list_model']}'s list price its measured tokens ({_usd(r['list_usd'])}) break even "
                         f"at {'most ' if r['beyond'] else ''}{_usd(r['break_even_list_usd'])} a human label")
        else:
            text += (f": break-even at {'most ' if r['beyond'] else ''}{_usd(be)} a human label "
                     f"[{_usd(r['break_even_low'])}, {_usd(r['break_even_high'])}]")
            if human_usd is not None and not math.isnan(be):
                text += (f"; at the human price here ({_usd(human_usd)}) its labels are "
                         + ("the cheaper way to that accuracy" if human_usd > be else "dearer than human labels"))
        out.append(text + ".")
    return out


def _rows_range(low: float, high: float) -> str:
    def one(v):
        return "n/a" if math.isnan(v) else ("beyond the sweep" if math.isinf(v) else f"{v:.0f}")
    return f"{one(low)} to {one(high)} rows"


def findings(run) -> None:
    """The report's cost finding (`run` is report.Run; `run.cost` is `answer(run)`)."""
    a = getattr(run, "cost", None)
    if a is None:
        return
    run.doc.heading("Is LLM data worth it, in dollars?", level=3)
    run.doc.bullets(a.notes)
    ctx = [c for c in _table_context(a.table) if c in run.varying or c in ("strategy", "freeze")]
    cheap = cheapest_sentences(a.cheapest, ctx)
    if cheap:
        run.doc.para("The cheapest source to reach each accuracy that human-labeled rows reach (a source reaches "
                     "a target when its mean does; each is then tested against the target's cells, paired by seed, "
                     "over seeds and evaluation rows where the cells' predictions are on record; Holm over the table):")
        run.doc.bullets(cheap[:MAX_SENTENCES] + ([f"... {len(cheap) - MAX_SENTENCES} more in `tables/cost_cheapest.csv`."]
                                                 if len(cheap) > MAX_SENTENCES else []))
    else:
        run.doc.para("No cheapest-source answer: the sweep needs a human-labeled pool (`real`) at a fraction above 0.")
    prices = {prices_of(res).human_label_usd for res in run.results}
    even = break_even_sentences(a.break_even, ctx, prices.pop() if len(prices) == 1 else None)
    if even:
        run.doc.para("The human price per label at which each LLM-labeled source breaks even (its LLM dollars over "
                     "the human labels it saves, at its largest fraction; the range comes from the ends of its "
                     "accuracy interval):")
        run.doc.bullets(even[:MAX_SENTENCES])
    missing = [p for p in pools.names() if p not in set(a.priced["pool"]) | set(a.cheapest.get("source", []))]
    if missing:
        run.doc.para("Registered pools this sweep did not run, so nothing prices them: "
                     + ", ".join(f"`{p}`" for p in missing) + ".")


MAX_SENTENCES = 12


def section(run) -> None:
    """The report's "Accuracy against dollars" section: the figure and the three tables."""
    from raysweep.analysis import figures

    a = getattr(run, "cost", None)
    if a is None:
        return
    doc = run.doc
    doc.heading("Accuracy against dollars")
    ctx = [c for c in _table_context(a.table) if c in run.varying or c in ("strategy", "freeze")]
    shown_ctx = [c for c in _table_context(a.table) if c in run.varying]
    png = figures.accuracy_vs_dollars(a.table, run.fig_dir, run.metric, context=shown_ctx)
    doc.figure(png, "Each source's mean accuracy against the dollars its added labels cost, from the labeled set "
                    "alone ($0) up; bars: 95% t-interval over seeds. An LLM source at $0 bills nothing (an embedded "
                    "model): the findings give its tokens and time instead.")
    t = a.table
    shown = pd.DataFrame({**{c: t[c] for c in ctx}, "source": t["source"], "fraction": t["fraction"],
                          "rows": t["n_added"].map(_count), "human labels": t["human_labels"].map(_count),
                          "LLM labels": t["llm_labels"].map(_count), "seeds": t["n_seeds"],
                          "accuracy": [f"{_pct(m)} {_ci_pct(lo, hi)}" for m, lo, hi in zip(t["mean"], t["ci_low"], t["ci_high"])],
                          "dollars": t["cost_usd"].map(_usd),
                          "LLM rows at list price": [_usd(v) if n else "" for v, n in zip(t["list_usd"], t["llm_labels"])]})
    run.table(t, shown, "cost_sources")
    if len(a.cheapest):
        c = a.cheapest
        shown = pd.DataFrame({**{k: c[k] for k in ctx}, "target": c["target"], "target mean": c["target_mean"].map(_pct),
                              "source": c["source"], "status": c["status"],
                              "fraction": c.get("fraction"), "dollars": c["cost_usd"].map(_usd),
                              "mean": c["mean"].map(_pct) if "mean" in c else "",
                              "vs target": [("" if pd.isna(d) else f"{points(d)} {interval(lo, hi)}")
                                            for d, lo, hi in zip(c["mean_diff"], c["diff_low"], c["diff_high"])],
                              "Holm p": c["p_holm"].map(lambda v: "" if pd.isna(v) else _p(v)),
                              "cheapest": c["cheapest"].map(lambda v: "yes" if v else "")})
        doc.heading("The cheapest source to reach each target", level=3)
        run.table(c, shown, "cost_cheapest")
    if len(a.break_even):
        b = a.break_even
        shown = pd.DataFrame({**{k: b[k] for k in ctx}, "source": b["source"], "fraction": b["fraction"],
                              "rows": b["n_added"].map(_count), "accuracy": b["mean"].map(_pct),
                              "human rows matched": [f"> {most:.0f}" if beyond else "n/a" if math.isnan(n) else f"{n:.0f}"
                                                     for n, beyond, most in zip(b["human_rows"], b["beyond"],
                                                                                b["human_rows_most"])],
                              "LLM dollars": b["llm_usd"].map(_usd), "break-even $/label": b["break_even_usd"].map(_usd),
                              "range": [f"[{_usd(lo)}, {_usd(hi)}]" for lo, hi in zip(b["break_even_low"], b["break_even_high"])],
                              "at list price": b["break_even_list_usd"].map(_usd)})
        doc.heading("The human price per label at which LLM labels break even", level=3)
        run.table(b, shown, "cost_break_even")
