"""`llm` and `llm_teacher`: sentences an LLM wrote, with the LLM's own labels or a teacher's.

Their trials read the real train rows followed by the generated ones (one activation entry
assembled from both) and add rows from the generated part only. Their cells depend on the
generated rows and both labels (`id_key = "generated"`), so a new generation makes new cells.
"""

from __future__ import annotations

import numpy as np

from raysweep.pools import Pool, PoolRows, register


class Generated(Pool):
    step = "generate"
    id_key = "generated"
    # Both pools share one scoring pass: the scoring model trains on `labeled` alone, so the
    # generated rows' labels do not change what it says about them.
    scoring_source = "llm"
    classification_only = True
    llm_does = "generates"
    labeled_by = "llm_generate"  # llm_teacher too: its rows are the LLM's (the teacher's labels cost compute only)

    def __init__(self, name: str, label_column: str, summary: str):
        self.name, self.label_column, self.summary = name, label_column, summary

    def reads(self, variant):
        return variant.with_generated()

    def rows(self, context, variant) -> PoolRows:
        extra = context.generated_labels[self.name]
        n_real = len(context.train_labels)
        labels = np.concatenate([context.train_labels, extra])
        return PoolRows(context.artifacts[self.reads(variant)], labels, np.arange(n_real, n_real + len(extra)))

    def size(self, context) -> int:
        return len(context.generated_labels[self.name])

    def planned_size(self, n_real: int | None, cfg) -> int | None:
        return cfg.llm.n_rows


register(Generated("llm", "llm_label", "LLM-written rows, the LLM's labels"))
register(Generated("llm_teacher", "teacher_label", "LLM-written rows, relabeled by a teacher trained on all real rows"))
