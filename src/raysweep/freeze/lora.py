"""LoRA: the top k layers' own weights stay frozen and rank-R adapters (peft) train on their
attention projections (optionally the feed-forward ones too); the pooler dense and the head
train in full, as in `pooler` mode. The cut, and so the cache, is `top-K`'s."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from raysweep.encoders import EncoderError
from raysweep.freeze.base import FreezeMode, layer_list
from raysweep.loader import ConfigError

if TYPE_CHECKING:
    from torch import nn

# `lora` alone: rank 8 (peft's own default rank) on the one top layer that last-attention trains
# in full, so `lora` against `last-attention` is the study's question with nothing else changed.
LORA_DEFAULT = "lora-r8-k1"
_LORA = re.compile(r"lora-r([0-9]{1,4})-k([0-9]{1,4})(-ffn)?")  # ASCII digits: \d would take "²"


@dataclass(frozen=True)
class Lora(FreezeMode):
    """Low-rank adapters on the top `layers` encoder layers. The fields are, in this order, what
    a LoRA model's cache key holds (model.model_key): do not rename or reorder them."""

    rank: int
    layers: int
    feed_forward: bool = False  # adapters on the feed-forward projections too, not only attention's

    spelling = "lora or lora-rR-kK[-ffn]"
    examples = ("lora", "lora-r2-k2-ffn")
    packable = False  # token-level, and its adapters are not the dense + head that packing stacks

    @classmethod
    def parse(cls, name: str) -> Lora | None:
        if not name.startswith("lora"):
            return None
        m = _LORA.fullmatch(LORA_DEFAULT if name == "lora" else name)
        if m is None or int(m[1]) < 1 or int(m[2]) < 1:
            raise ConfigError(f"{name!r} is not a LoRA freeze mode (lora, or lora-rR-kK[-ffn] with rank R >= 1 on "
                              f"the top K >= 1 layers)")
        return cls(rank=int(m[1]), layers=int(m[2]), feed_forward=bool(m[3]))

    @property
    def name(self) -> str:
        return f"lora-r{self.rank}-k{self.layers}" + ("-ffn" if self.feed_forward else "")

    @property
    def top_layers(self) -> int:
        return self.layers  # the layers that carry adapters: the cut is top-K's

    @property
    def train_pooler(self) -> bool:
        return True

    @property
    def alpha(self) -> int:
        # The adapter's output is scaled by alpha / rank; alpha = 2 x rank keeps that scale at 2
        # for every rank (a common choice), so ranks compare without retuning the learning rate.
        return 2 * self.rank

    def misfit(self, spelled: str, num_layers: int, hidden_size: int | None) -> str | None:
        too_wide = hidden_size is not None and self.rank > hidden_size
        return super().misfit(spelled, num_layers, hidden_size) or (
            f"freeze {spelled!r}: rank {self.rank} is larger than the encoder's hidden size {hidden_size}"
            if too_wide else None)

    def adapt(self, top: nn.Module | None) -> nn.Module:
        if top is None:
            raise ValueError("a LoRA freeze mode needs the top layers (a token-state boundary)")
        return add_lora(top, self)

    def key_part(self) -> dict:
        # A LoRA mode shares top-K's activations: only its key tells the two models apart.
        return {"lora": asdict(self)}


def parse_lora(name: str) -> Lora | None:
    """The LoRA settings of freeze mode `name` (`lora`, `lora-rR-kK`, `lora-rR-kK-ffn`), None for
    the other modes."""
    return Lora.parse(name)


def lora_targets(top: nn.Module, layers: int, feed_forward: bool) -> list[str]:
    """Names (in `top`) of the linear projections of its `layers` transformer layers that get adapters.

    Found by structure, not by BERT's names: every nn.Linear inside a layer whose path within the
    layer passes through a module named like attention (BERT and RoBERTa `attention.self.query`
    ... `attention.output.dense`, DistilBERT `attention.q_lin` ... `out_lin`, MPNet
    `attention.attn.q` ... `o`) is an attention projection; the layer's other linears are its
    feed-forward (`intermediate.dense` / `output.dense`, DistilBERT `ffn.lin1` / `lin2`).
    """
    from torch import nn

    parent, attr = layer_list(top, layers)
    prefix = next(n for n, m in top.named_modules() if m is parent)
    prefix = f"{prefix}.{attr}" if prefix else attr
    names = []
    for i, layer in enumerate(getattr(parent, attr)):
        found = [n for n, m in layer.named_modules() if isinstance(m, nn.Linear)]
        attention = [n for n in found if any("attn" in part or "attention" in part for part in n.split("."))]
        if not attention:
            raise EncoderError(f"{type(top).__name__}: no attention projections found in layer {i} ({found})")
        names += [f"{prefix}.{i}.{n}" for n in (found if feed_forward else attention)]
    return names


def add_lora(top: nn.Module, spec: Lora) -> nn.Module:
    """Freeze the truncated top's own weights and inject trainable LoRA adapters (in place).

    The adapters' A matrices draw from torch's global generator (the trial's initialisation
    stream); B starts at zero, so the adapted top first computes exactly the pretrained one.
    """
    from peft import LoraConfig, inject_adapter_in_model  # only LoRA trials pay for importing peft

    for p in top.parameters():
        p.requires_grad_(False)
    targets = lora_targets(top, spec.layers, spec.feed_forward)
    # Dropout 0 on the adapters' input: the layers keep their own dropout, and the head has its own.
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=0.0, target_modules=targets, bias="none")
    top = inject_adapter_in_model(config, top)
    for name, p in top.named_parameters():
        p.requires_grad_("lora_" in name)
    return top
