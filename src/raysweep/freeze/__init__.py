"""Freeze mechanisms: which part of the encoder a trial trains, and how.

One registry, the way strategies/ and pools/ are: each mechanism is one module with one
`FreezeMode` subclass (base.py says what it answers: how its names parse, where its cache
boundary is, what of the top it trains, what its models' cache keys add, whether it packs).
`parse` gives a freeze name's mode; the pipeline passes that mode along, never the name's
parts. A new mechanism (BitFit, IA3) is its module plus one `register` line here.
"""

from __future__ import annotations

from raysweep.freeze.base import FreezeMode, layer_list
from raysweep.freeze.layers import FREEZE_MODES, TopLayers
from raysweep.freeze.lora import Lora, parse_lora
from raysweep.loader import ConfigError

__all__ = ["FREEZE_MODES", "FreezeMode", "Lora", "REGISTRY", "TopLayers", "layer_list", "parse", "parse_lora",
           "register"]

# Asked in this order; each mechanism claims only its own names.
REGISTRY: dict[str, type[FreezeMode]] = {}


def register(mechanism: type[FreezeMode], key: str) -> type[FreezeMode]:
    if key in REGISTRY:
        raise ValueError(f"freeze mechanism {key!r} is registered twice")
    REGISTRY[key] = mechanism
    return mechanism


register(TopLayers, "layers")
register(Lora, "lora")


def parse(name: str) -> FreezeMode:
    """The freeze mode `name` spells; a ConfigError listing every mechanism's spellings if none
    claims it (or the claiming mechanism's own error if the name is malformed)."""
    for mechanism in REGISTRY.values():
        mode = mechanism.parse(name)
        if mode is not None:
            return mode
    spellings = ", ".join(m.spelling for m in REGISTRY.values())
    raise ConfigError(f"{name!r} is not a freeze mode ({spellings})")
