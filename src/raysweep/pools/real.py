"""`real`: the data's own pool (the unlabeled part of train), with its gold labels: the study's baseline."""

from __future__ import annotations

from raysweep.pools import Pool, PoolRows, register


class Real(Pool):
    name = "real"
    summary = "the unlabeled part of train, gold labels"

    def rows(self, context, variant) -> PoolRows:
        return PoolRows(context.artifacts[self.reads(variant)], context.train_labels, context.pool_rows)

    def size(self, context) -> int:
        return len(context.pool_rows)


register(Real())
