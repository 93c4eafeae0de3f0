"""Layers from the top: train the top k encoder layers in full, plus (optionally) the pooler
dense, plus the head. The study's three modes are its named members; `top-K` names any k."""

from __future__ import annotations

import re
from dataclasses import dataclass

from raysweep.freeze.base import FreezeMode

FREEZE_MODES = {
    # name -> (top encoder layers trained, pooler dense trained)
    "last-linear": (0, False),
    "pooler": (0, True),
    "last-attention": (1, True),
}


@dataclass(frozen=True)
class TopLayers(FreezeMode):
    layers: int
    pooler: bool

    spelling = ", ".join(FREEZE_MODES) + ", top-K"
    examples = (*FREEZE_MODES, "top-2")

    @classmethod
    def parse(cls, name: str) -> TopLayers | None:
        if name in FREEZE_MODES:
            return cls(*FREEZE_MODES[name])
        # ASCII digits only: str.isdigit() is true of "²", which int() then refuses with a traceback.
        top = re.fullmatch(r"top-([1-9][0-9]{0,3})", name, re.ASCII)
        if top:
            return cls(int(top[1]), True)
        return None

    @property
    def name(self) -> str:
        named = {v: k for k, v in FREEZE_MODES.items()}
        return named.get((self.layers, self.pooler), f"top-{self.layers}")

    @property
    def top_layers(self) -> int:
        return self.layers

    @property
    def train_pooler(self) -> bool:
        return self.pooler
