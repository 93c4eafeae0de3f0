"""What every freeze mechanism answers, and the encoder structure they share.

A freeze mode says which part of the encoder a trial trains. Every mechanism cuts the encoder
at one place: below the cut everything is frozen and runs once per sentence (its output is the
cached *boundary features*, backbone.py / embed.py); above it sit the top `top_layers` encoder
layers, the pooler dense (when `train_pooler`) and the head. A mechanism then decides what of
that top actually trains (all of it, low-rank adapters, only the biases, ...) through `adapt`,
and what a model's cache key must add because the activations alone cannot tell it apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from raysweep.encoders import EncoderError

if TYPE_CHECKING:
    from torch import nn


class FreezeMode:
    """One freeze mode, parsed from its name. Subclasses are frozen dataclasses: two spellings of
    the same model (`last-attention` and `top-1`) parse to equal, hashable modes."""

    # How this mechanism's names are spelt, for the error naming every known mode.
    spelling: ClassVar[str] = ""
    # Names the contract test (tests/test_freeze_contract.py) builds, caches and trains: one of
    # each shape the mechanism takes (pooled and token-level, a variant flag, ...).
    examples: ClassVar[tuple[str, ...]] = ()
    # Whether several trainings over pooled features may run stacked as one (packing.py). Only a
    # mechanism whose trained part is exactly the dense + head that packing stacks may say yes.
    packable: ClassVar[bool] = True

    @classmethod
    def parse(cls, name: str) -> FreezeMode | None:
        """The mode `name` spells; None if `name` is not one of this mechanism's names. A name
        of this mechanism's family that is malformed raises ConfigError saying what is wrong."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        """The canonical spelling (what `parse` reads back to an equal mode)."""
        raise NotImplementedError

    # The cache boundary: the top `top_layers` encoder layers (and the pooler dense when
    # `train_pooler`) are above it; the token states entering them, or the pooled / sentence
    # vector when `top_layers` is 0, are what can be cached below it.
    @property
    def top_layers(self) -> int:
        raise NotImplementedError

    @property
    def train_pooler(self) -> bool:
        raise NotImplementedError

    def misfit(self, spelled: str, num_layers: int, hidden_size: int | None) -> str | None:
        """Why this mode (as the user `spelled` it) cannot run on an encoder of `num_layers`
        layers and width `hidden_size` (None: not known yet); None when it fits."""
        if self.top_layers > num_layers:
            return f"freeze {spelled!r} trains {self.top_layers} layers but the encoder has {num_layers}"
        return None

    def adapt(self, top: nn.Module | None) -> nn.Module | None:
        """The truncated top (None at a pooled boundary) as this mode trains it: freeze what it
        keeps fixed, add what it trains. Runs where the model is built, after the seeded draw of
        the start modules and before the head's, so any weights it draws belong to the trial's stream."""
        return top

    def key_part(self) -> dict:
        """What a trained model's cache key adds for this mode: whatever the activations (its
        boundary) do not already say. Empty for modes the boundary identifies."""
        return {}


def layer_list(model: nn.Module, num_layers: int) -> tuple[nn.Module, str]:
    """The (parent module, attribute) of the encoder's list of transformer layers, found by its
    length rather than by one architecture's attribute names."""
    from torch import nn  # not at import: config.py parses freeze names and must stay light

    for _, module in model.named_modules():
        for attr, child in module.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == num_layers:
                return module, attr
    raise EncoderError(f"{type(model).__name__}: cannot find its list of {num_layers} layers")
