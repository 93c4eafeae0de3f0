"""What a cell's added rows cost in dollars: human labels, LLM rows and (when priced) compute.

    prices_of(config, generation, annotation) -> Prices   from the sweep's `costs:` and `llm:` and
                                                          the steps' generation.json / annotation.json
    label_counts(pool, n_added, human, llm)   -> (human, llm)   how many added labels each kind paid
    cell_cost(prices, pool, human, llm, trial_s) -> dict        cost_usd and its parts

The run prices every cell with these (records.py) and the report prices old records that lack
`cost_usd` with the very same functions from the same inputs (analysis/costs.py), so the two
never disagree. Prices are analysis-time inputs: nothing here is part of a cell id or a cache key.

Who labeled a pool's rows is the pool's `labeled_by` (pools/): "human" rows cost the human price
per label; "llm_generate" and "llm_annotate" rows cost what the pool's step (`generate`,
`annotate`) spent per usable row, measured in generation.json / annotation.json. A pool whose
cells buy some human labels (llm_routed) says how many per cell (`human_labels`, `llm_labels` on
the record); the rest is derived from `labeled_by` and the rows added.

The embedded LLM is billed $0 by nobody: its API dollars are 0, and what it does cost is this
machine's time, priced only with `costs.compute_usd_per_hour` (its step's wall time per row).
An LLM whose model has no price in `llm.prices` (`unpriced_requests` > 0) has unknown dollars:
NaN, never 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

HUMAN, GENERATE, ANNOTATE = "human", "llm_generate", "llm_annotate"
LABELED_BY = (HUMAN, GENERATE, ANNOTATE)
SUMMARY_OF_STEP = {"generate": "generation.json", "annotate": "annotation.json"}


@dataclass(frozen=True)
class StepPrice:
    """What one LLM step (generate or annotate) spent per usable row."""

    api_usd_per_row: float  # the provider's bill over the rows it produced; NaN: unpriced model
    seconds_per_row: float  # the step's wall time over its rows (the embedded LLM's compute)
    embedded: bool  # the LLM ran on this machine: its time is compute this machine paid for
    rows: int
    prompt_tokens_per_row: float = math.nan
    completion_tokens_per_row: float = math.nan


@dataclass(frozen=True)
class Prices:
    human_label_usd: float
    compute_usd_per_hour: float | None = None
    steps: dict[str, StepPrice] = field(default_factory=dict)  # "generate" / "annotate" -> its price

    def llm_usd_per_row(self, step: str | None) -> float:
        """Dollars per LLM row of `step`: its API bill, plus its compute when it ran here and compute
        is priced. NaN when the step's summary is missing (nothing measured: nothing claimed)."""
        price = self.steps.get(step or "")
        if price is None:
            return math.nan
        usd = price.api_usd_per_row
        if price.embedded and self.compute_usd_per_hour is not None:
            usd += price.seconds_per_row * self.compute_usd_per_hour / 3600
        return usd


def step_price(summary: dict | None, rows_key: str) -> StepPrice | None:
    """A step's price per row from its summary (generation.json: `rows_kept`; annotation.json:
    `rows_labeled`), or None when there is no summary or it produced no row."""
    if not isinstance(summary, dict):
        return None
    rows = _number(summary.get(rows_key))
    if not rows or rows <= 0 or math.isnan(rows):
        return None
    cost = _number(summary.get("cost_usd"))
    if cost < 0 or _number(summary.get("unpriced_requests")) > 0:
        cost = math.nan  # the model has no price: its dollars are unknown, not zero
    # generation: the LLM and the teacher's relabeling. A resumed step's summary times its last
    # run only (the dollars are the whole store's), so its seconds a row are then a floor.
    seconds = _number(summary.get("total_s"))
    if math.isnan(seconds):
        seconds = _number(summary.get("elapsed_s"))
    return StepPrice(api_usd_per_row=cost / rows, seconds_per_row=seconds / rows,
                     embedded=summary.get("endpoint") == "embedded", rows=int(rows),
                     prompt_tokens_per_row=_number(summary.get("prompt_tokens")) / rows,
                     completion_tokens_per_row=_number(summary.get("completion_tokens")) / rows)


def prices_of(costs, generation: dict | None = None, annotation: dict | None = None) -> Prices:
    """The prices of one sweep: `costs` is its CostsConfig (or the `costs:` mapping of a
    sweep.yaml, or None for the defaults); the summaries are generation.json / annotation.json."""
    from raysweep.config import CostsConfig, from_dict  # a results dir's mapping: validated as a sweep's is

    if costs is None or isinstance(costs, dict):
        costs = from_dict(CostsConfig, costs or {}, "costs")
    steps = {}
    for step, summary, rows_key in (("generate", generation, "rows_kept"), ("annotate", annotation, "rows_labeled")):
        price = step_price(summary, rows_key)
        if price is not None:
            steps[step] = price
    return Prices(costs.human_label_usd, costs.compute_usd_per_hour, steps)


def label_counts(labeled_by: str, n_added, human=None, llm=None) -> tuple[int, int]:
    """(human labels, LLM labels) among a cell's added rows: the pool's own counts when its cells
    record them, else all of them of the pool's kind."""
    if human is not None or llm is not None:
        human = 0 if _missing(human) else int(human)
        llm = 0 if _missing(llm) else int(llm)
        return human, llm
    n = 0 if _missing(n_added) else int(n_added)
    return (n, 0) if labeled_by == HUMAN else (0, n)


def cell_cost(prices: Prices, step: str | None, human: int, llm: int, trial_s=None) -> dict:
    """cost_usd of one cell and its parts: its human labels, its LLM rows (API dollars and the
    embedded LLM's compute) and, when compute is priced, its own trial's time."""
    human_usd = human * prices.human_label_usd
    llm_usd = llm * prices.llm_usd_per_row(step) if llm else 0.0  # no LLM row: nothing to price
    trial_usd = 0.0
    if prices.compute_usd_per_hour is not None and not _missing(trial_s):
        trial_usd = float(trial_s) * prices.compute_usd_per_hour / 3600
    return {"cost_usd": human_usd + llm_usd + trial_usd, "human_usd": human_usd, "llm_usd": llm_usd,
            "trial_compute_usd": trial_usd}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def price_cell(prices: Prices | None, pool_name: str, metrics: dict) -> dict:
    """A finished cell's `human_labels`, `llm_labels` (its metrics' own counts, which a pool that
    buys some human labels records, else derived from the rows it added) and, with `prices`, its
    `cost_usd` and that sum's parts in `cost`."""
    from raysweep import pools

    pool = pools.get(pool_name)
    human, llm = label_counts(pool.labeled_by, metrics.get("n_added"), metrics.get("human_labels"),
                              metrics.get("llm_labels"))
    out = {"human_labels": human, "llm_labels": llm}
    if prices is not None:
        parts = cell_cost(prices, pool.step, human, llm, metrics.get("trial_s"))
        out["cost_usd"] = _json_number(parts.pop("cost_usd"))
        out["cost"] = {k: _json_number(v) for k, v in parts.items()}
    return out


def _json_number(value: float) -> float | None:
    """NaN (an unpriced LLM) as JSON's null: unknown, and never written as an invalid `NaN`."""
    return None if math.isnan(value) else round(value, 8)


def list_prices(step: StepPrice | None, table: dict | None) -> dict[str, float]:
    """What one LLM row of `step` would cost at each model's list price in `table` (`llm.prices`:
    model -> {prompt, completion} dollars per million tokens), from the tokens it measured: the
    honest way to price an LLM that bills nothing (the embedded one). Models priced at 0 and a
    step without token counts give nothing."""
    if step is None or math.isnan(step.prompt_tokens_per_row) or not isinstance(table, dict):
        return {}
    out = {}
    for model, price in table.items():
        price = price if isinstance(price, dict) else vars(price)  # a sweep.yaml's mapping, or a PriceConfig
        prompt, completion = _number(price.get("prompt")), _number(price.get("completion"))
        if prompt > 0 or completion > 0:
            completion_tokens = 0.0 if math.isnan(step.completion_tokens_per_row) else step.completion_tokens_per_row
            out[str(model)] = (step.prompt_tokens_per_row * prompt + completion_tokens * completion) / 1e6
    return out
