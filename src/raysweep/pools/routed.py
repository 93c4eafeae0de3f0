"""`llm_routed`: a mixed budget over the rows `real` chooses: the LLM labels them all, and the
`cleaning.route_percent` % whose LLM label the `labeled`-set model trusts least go to a person
(in the sweep: the gold label, charged at the human price). cleaning.py says how.

Its cells add the rows `llm_annotated` adds, from the same LLM labels (`id_key = "labels"`), and
depend on the percent routed. Its records say how many labels a person was paid for.
"""

from __future__ import annotations

from raysweep.pools import register
from raysweep.pools.annotated import Annotated


class Routed(Annotated):
    name = "llm_routed"
    summary = "the rows `real` chooses, LLM labels with the least-confident k% relabeled by a person"
    labeled_by = "llm_annotate"

    def settings(self, cfg) -> dict:
        return {"route_percent": float(cfg.cleaning.route_percent)}

    def train_rows(self, cell, inputs, added, recipe):
        from raysweep.cleaning import routed  # torch: when a trial trains, not when the registry loads

        return routed(cell, inputs, added, recipe, inputs.cleaning.route_percent)


register(Routed())
