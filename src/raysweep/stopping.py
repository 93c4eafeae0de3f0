"""When to stop labeling: one plain line per round of `raysweep select`, and the numbers behind it.

Three signals, each cheap and each already standard:

- **Stabilizing predictions** (Bloodgood & Vijay-Shanker 2009; small-text's `KappaAverage`): the
  model of each round predicts a fixed *stop set* of rows (a seeded sample of the project, the
  same rows every round). Cohen's kappa between two consecutive rounds' predictions says how much
  the last batch changed the model's mind; once the average of the last WINDOW kappas reaches
  KAPPA (small-text's defaults, 0.99 over 3), more labels mostly stop changing predictions.
- **The accuracy trend**: the change of the cross-validated accuracy since the last round, with a
  rough 95% interval from the folds' spread. Divided by the rows it took, this is what another
  batch is likely to buy, so what stopping now costs.
- **The budget** (`budget:` in project.yaml, total rows to label): none left means stop.

The kappa rule decides, the budget overrides it; the accuracy trend is the price tag, not a rule:
with a few hundred labels its interval is wider than the gain, and a rule on it would stop at noise.
"""

from __future__ import annotations

import math

import numpy as np

KAPPA = 0.99  # small-text KappaAverage's default threshold
WINDOW = 3  # ... and its window: consecutive kappas averaged
STOP_SET_ROWS = 2000  # the rows whose predictions are compared; enough for kappa to +-0.01


def stop_set(ids: np.ndarray, seed: int) -> np.ndarray:
    """Positions of the stop set among the project's rows: seeded by the project's seed and drawn
    in the order of the ids, so every round (and a re-run) picks the same rows."""
    order = np.argsort(ids, kind="stable")
    rng = np.random.default_rng([seed, 29])
    take = min(STOP_SET_ROWS, len(ids))
    return np.sort(order[rng.permutation(len(ids))[:take]])


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two label arrays; 1.0 when they agree everywhere (sklearn says nan then)."""
    from sklearn.metrics import cohen_kappa_score

    if np.array_equal(a, b):
        return 1.0
    value = float(cohen_kappa_score(a, b))
    return 0.0 if math.isnan(value) else value


def _interval(acc: float, std: float, folds: int, prev: dict) -> tuple[float, float, float]:
    """(gain, low, high) in points: accuracy now minus at the previous estimate, +-1.96 standard
    errors of the two fold means (rough: folds share rows, so this is if anything too narrow)."""
    se = math.sqrt(std ** 2 / folds + prev["cv_std"] ** 2 / prev["cv_folds"])
    gain = acc - prev["cv_accuracy"]
    return 100 * gain, 100 * (gain - 1.96 * se), 100 * (gain + 1.96 * se)


def assess(history: list[dict], predictions: dict[str, int] | None, labeled: int, batch: int,
           acc: float | None, std: float | None, folds: int, budget: int | None) -> dict:
    """The stopping record of this round (round.json's `stopping`), ending in its `line`.

    `history`: the earlier rounds' round.json, oldest first; `predictions`: this round's model's
    class index per stop-set id (None: no model yet, a cold start). The previous round's
    predictions come in `history[-1]["_stop_set"]` (read by the caller from its file)."""
    out: dict = {"kappa": None, "kappa_average": None, "kappa_threshold": KAPPA, "window": WINDOW,
                 "stop_set_rows": len(predictions) if predictions else 0}
    previous = history[-1].get("_stop_set") if history else None
    if predictions and previous:
        shared = sorted(set(predictions) & set(previous))
        if shared:
            out["kappa"] = round(kappa(np.array([previous[i] for i in shared]),
                                       np.array([predictions[i] for i in shared])), 4)
    kappas = [h.get("stopping", {}).get("kappa") for h in history[-(WINDOW - 1):]] + [out["kappa"]]
    if len(kappas) == WINDOW and all(k is not None for k in kappas):
        out["kappa_average"] = round(float(np.mean(kappas)), 4)
    # The accuracy trend against the last round that had an estimate.
    prev = next((h for h in reversed(history) if h.get("cv_accuracy") is not None and h.get("cv_folds")), None)
    cost = None
    if acc is not None and prev is not None and labeled > prev["labeled"]:
        gain, low, high = _interval(acc, std or 0.0, folds, prev)
        per = batch / (labeled - prev["labeled"])  # scaled to one batch of this project's size
        cost = (gain * per, low * per, high * per)
        out.update(cv_gain_points=round(gain, 2), cv_gain_interval=[round(low, 2), round(high, 2)],
                   since_labeled=prev["labeled"])
    out["cost_points_per_batch"] = [round(c, 2) for c in cost] if cost else None
    out["budget_left"] = None if budget is None else max(0, budget - labeled)
    out["decision"], out["line"] = _line(out, predictions is not None, batch, cost)
    return out


def _line(s: dict, has_model: bool, batch: int, cost) -> tuple[str, str]:
    if not cost:
        price = "what stopping costs is not known yet (it needs two rounds with an accuracy estimate)"
    else:
        rate = f"{cost[0]:+.1f} points per {batch} rows (95% interval {cost[1]:+.1f} to {cost[2]:+.1f})"
        price = (f"stopping now costs roughly {rate} at the recent rate" if cost[1] > 0 else
                 f"stopping now costs nothing measurable: the last labels moved the accuracy estimate by {rate}")
    budget = "" if s["budget_left"] is None else f"; budget: {s['budget_left']} rows left"
    if s["budget_left"] == 0:
        return "stop", f"stop: the labeling budget is spent; {price}"
    if s["kappa_average"] is not None and s["kappa_average"] >= KAPPA:
        return "stop", (f"stop: predictions have settled (kappa {s['kappa_average']:.3f} averaged over the last "
                        f"{WINDOW} rounds, >= {KAPPA}); {price}{budget}")
    if not has_model:
        why = "nothing is labeled yet, so there is no model to judge"
    elif s["kappa"] is None:
        why = "this is the first model, so there is nothing to compare its predictions with yet"
    elif s["kappa_average"] is None:
        why = (f"predictions still move (kappa {s['kappa']:.3f} with the last round; the rule needs {WINDOW} "
               f"rounds averaging >= {KAPPA})")
    else:
        why = (f"predictions still move (kappa {s['kappa']:.3f} with the last round, {s['kappa_average']:.3f} "
               f"averaged over {WINDOW}; stop at >= {KAPPA})")
    return "keep labeling", f"keep labeling: {why}; {price}{budget}"
