"""`llm_cleaned`: the rows `real` chooses, with the LLM's labels that confident learning flags
dropped, or replaced by the `labeled`-set model's label (`cleaning.flagged`; cleaning.py says how
and why that model).

Its cells add the rows `llm_annotated` adds and start from the same LLM labels (the annotation
step's), so they depend on those labels (`id_key = "labels"`) and on the cleaning mode.
"""

from __future__ import annotations

from raysweep.pools import register
from raysweep.pools.annotated import Annotated


class Cleaned(Annotated):
    name = "llm_cleaned"
    summary = "the rows `real` chooses, LLM labels with confident learning's label issues dropped or replaced"
    labeled_by = "llm_annotate"

    def settings(self, cfg) -> dict:
        return {"flagged": cfg.cleaning.flagged}

    def train_rows(self, cell, inputs, added, recipe):
        from raysweep.cleaning import cleaned  # torch: when a trial trains, not when the registry loads

        return cleaned(cell, inputs, added, recipe, inputs.cleaning.flagged)


register(Cleaned())
