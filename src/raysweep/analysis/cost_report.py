"""The report's cost finding and its "Accuracy against dollars" section, in words and tables.

    findings(run)   "Is LLM data worth it, in dollars?": the prices and where they come from, the
                    cheapest source to reach each target, the break-even human price per label
    section(run)    the accuracy_vs_dollars figure and the three tables (CSV + Markdown)

Every number comes from analysis/costs.py's tables (`run.cost`, an `costs.Answer`), so a
sentence and its table row always agree.
"""

from __future__ import annotations

import math

import pandas as pd

from raysweep import costs as pricing
from raysweep import pools
from raysweep.analysis import rows
from raysweep.analysis.costs import NO_ROWS, TIE, table_context, list_price, prices_of
from raysweep.analysis.findings import interval, points
from raysweep.config import HUMAN_LABEL_USD

MAX_SENTENCES = 12  # per list in the findings; the tables hold them all


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
        file = pricing.SUMMARY_OF_STEP[step]
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
    a = run.cost
    if a is None:
        return
    run.doc.heading("Is LLM data worth it, in dollars?", level=3)
    run.doc.bullets([n for res in run.results for n in price_notes(res, run.several)])
    ctx = [c for c in table_context(a.table) if c in run.varying or c in ("strategy", "freeze")]
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


def section(run) -> None:
    """The report's "Accuracy against dollars" section: the figure and the three tables."""
    from raysweep.analysis import figures

    a = run.cost
    if a is None:
        return
    doc = run.doc
    doc.heading("Accuracy against dollars")
    ctx = [c for c in table_context(a.table) if c in run.varying or c in ("strategy", "freeze")]
    shown_ctx = [c for c in table_context(a.table) if c in run.varying]
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
