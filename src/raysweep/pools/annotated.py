"""`llm_annotated`: the real rows a strategy chooses, labeled by the LLM instead of by hand.

A cell adds exactly the rows its `real` counterpart adds (chosen with gold labels, as there),
and trains on the LLM's labels of them: the two pools differ in the labels alone. Its cells
depend on those labels (`id_key = "labels"`), known once the annotation step has run.
"""

from __future__ import annotations

from raysweep.pools import Pool, PoolRows, register


class Annotated(Pool):
    name = "llm_annotated"
    summary = "the rows `real` chooses, labeled by the LLM"
    step = "annotate"
    id_key = "labels"
    counterpart = "real"  # the pool whose cell chooses its rows
    scoring_source = "real"
    classification_only = True
    llm_does = "labels"
    labeled_by = "llm_annotate"

    def rows(self, context, variant) -> PoolRows:
        return PoolRows(context.artifacts[self.reads(variant)], context.annotated_labels, context.pool_rows,
                        select_labels=context.train_labels)

    def size(self, context) -> int:
        return len(context.pool_rows)


register(Annotated())
