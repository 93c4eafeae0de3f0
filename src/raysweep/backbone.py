"""The encoder and its split into a frozen part and a trainable top.

A freeze mode (freeze/: its registry of mechanisms) cuts the encoder above its top k layers,
and optionally keeps the pooler dense trainable: the study's three modes are (k, pooler) =
(0, no) last-linear, (0, yes) pooler, (1, yes) last-attention. What of that top trains is the
mechanism's to say (all of it; LoRA adapters on frozen layers; ...): `Classifier` asks it.

Everything below the trainable part is frozen and runs in eval mode (no dropout), so its output
for a sentence never changes: that output, the *boundary features*, is what `embed.py` caches.
The trainable part (`Classifier`) starts from the boundary features:

    k > 0 : token states entering layer L-k  -> top k layers -> pool -> dense+tanh -> head
    k = 0, pooler trained : the pooled vector ([CLS] or mean)  -> dense+tanh -> head
    k = 0, pooler frozen  : the sentence vector (after the frozen pooler, if any) -> head

Nothing here assumes BertModel's attribute names: the layer list is found by its length, the
frozen part runs through the model's own forward (`output_hidden_states`), and the top k layers
run inside a truncated copy of the model whose embedding module passes its input through, so
each architecture's own attention-mask and position-bias code is used unchanged.
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from raysweep.encoders import EncoderError, resolve_encoder  # noqa: F401 - EncoderError is re-exported
from raysweep.freeze import FreezeMode, layer_list, parse
from raysweep.hashing import Digest
from raysweep.tasks import Task, split_texts

@dataclass(frozen=True)
class Boundary:
    """Where the frozen part ends, for one encoder: the unit of activation caching."""

    kind: str  # "hidden" (token states entering layer `layer`), "pooled" or "sentence"
    layer: int  # index of the first trainable layer (== num_layers when k == 0)
    pooling: str  # pooler | cls | mean
    max_length: int

    @property
    def ragged(self) -> bool:
        return self.kind == "hidden"


def boundary_for(freeze: str, num_layers: int, pooling: str, max_length: int,
                 hidden_size: int | None = None) -> Boundary:
    """Where `freeze` cuts the encoder; also checks it fits the encoder (its layers, and with
    `hidden_size` whatever its mechanism needs of the layers' width, a LoRA rank say)."""
    mode = parse(freeze)
    problem = mode.misfit(freeze, num_layers, hidden_size)
    if problem is not None:
        raise EncoderError(problem)
    if mode.top_layers > 0:
        return Boundary("hidden", num_layers - mode.top_layers, pooling, max_length)
    return Boundary("pooled" if mode.train_pooler else "sentence", num_layers, pooling, max_length)


class _PassThrough(nn.Module):
    """Stands in for the embedding module of the truncated top: returns its input unchanged."""

    def forward(self, *args, inputs_embeds=None, **kwargs):
        if inputs_embeds is None:  # DistilBERT passes (input_ids, inputs_embeds) positionally
            inputs_embeds = next(a for a in args if isinstance(a, torch.Tensor) and a.dim() == 3)
        return inputs_embeds


def _num_layers(config) -> int:
    for attr in ("num_hidden_layers", "n_layers", "num_layers"):
        if isinstance(getattr(config, attr, None), int):
            return getattr(config, attr)
    raise EncoderError(f"{type(config).__name__}: no layer count in the config")


def _pretrained_pooler_dense(model: nn.Module) -> nn.Linear | None:
    pooler = getattr(model, "pooler", None)
    dense = getattr(pooler, "dense", None)
    return dense if isinstance(dense, nn.Linear) else None


def pool(states: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """[B, T, H] token states -> [B, H]: the first ([CLS]) token or the masked mean."""
    if how in ("pooler", "cls"):
        return states[:, 0]
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class Backbone:
    """A loaded encoder and tokenizer that computes boundary features (frozen, eval mode)."""

    def __init__(self, name: str, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        path = resolve_encoder(name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path).to(device).eval()
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EncoderError(f"encoder {name!r}: cannot load ({first})") from None
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = device
        self.num_layers = _num_layers(self.model.config)
        self.hidden_size = int(getattr(self.model.config, "hidden_size", getattr(self.model.config, "dim", 0)))

    @functools.cached_property
    def fingerprint(self) -> str:
        """A hash of the weights, tokenizer vocabulary and library versions: the cache key's encoder part."""
        import transformers

        h = Digest(f"{type(self.model).__name__}|{transformers.__version__}|{torch.__version__}")
        h.add_tensors(self.model.state_dict())
        return h.add(str(sorted(self.tokenizer.get_vocab().items()))).hex(20)

    def tokenize(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        # A pair (tasks.PAIR_SEP) goes to the tokenizer as two texts: its own pair handling builds
        # `[CLS] a [SEP] b [SEP]` with segment ids where the model has them, and "longest_first"
        # truncation trims the longer text first, so neither loses all of its words.
        first, second = split_texts(texts)
        enc = self.tokenizer(first, second, padding=True, truncation=True, max_length=max_length,
                             return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    @torch.no_grad()
    def features(self, texts: list[str], boundary: Boundary) -> list[np.ndarray] | np.ndarray:
        """Boundary features of `texts`: [N, H] float32, or for `hidden` a list of [len_i, H]."""
        return self.features_many(texts, [boundary])[0]

    @torch.no_grad()
    def features_many(self, texts: list[str], boundaries: list[Boundary]) -> list:
        """Features at several boundaries from one encoder pass (all hidden states come out at once)."""
        lengths = {b.max_length for b in boundaries}
        if len(lengths) != 1:
            raise EncoderError(f"one pass cannot serve several max_length values {sorted(lengths)}")
        enc = self.tokenize(texts, lengths.pop())
        return self.features_from_tokens(enc, boundaries)

    @torch.no_grad()
    def features_from_tokens(self, enc: dict[str, torch.Tensor], boundaries: list[Boundary]) -> list:
        mask = enc["attention_mask"]
        self.model.eval()  # the frozen part never drops out: its output must be cacheable
        out = self.model(**enc, output_hidden_states=True)
        return [self._extract(out, mask, b) for b in boundaries]

    def _extract(self, out, mask: torch.Tensor, boundary: Boundary):
        if boundary.kind == "hidden":
            states = out.hidden_states[boundary.layer]
            lengths = mask.sum(1).tolist()
            return [states[i, :n].float().cpu().numpy() for i, n in enumerate(lengths)]
        pooled = pool(out.last_hidden_state, mask, boundary.pooling)
        if boundary.kind == "sentence" and boundary.pooling == "pooler":
            dense = _pretrained_pooler_dense(self.model)
            if dense is not None:
                pooled = torch.tanh(dense(pooled))
        # A copy: [CLS] pooling is a view of the batch's whole [B, T, H] hidden states, and a caller
        # keeping row views (embed._compute_local) would keep every batch's states alive. Seen in a
        # 100,000-row in-process pass: 3.3 GB after 80 s of CPU and growing 360 MB per 10 s of CPU.
        return pooled.float().cpu().numpy().copy()

    def trainable_top(self, boundary: Boundary) -> dict[str, nn.Module | None]:
        """Fresh copies of the pretrained modules the trainable part starts from."""
        top = None
        if boundary.kind == "hidden":
            top = copy.deepcopy(self.model).cpu()
            # transformers installs output-capturing hooks (local closures) on first use; they
            # cannot be pickled into the cache and are re-installed on demand, so drop them.
            for module in top.modules():
                module._forward_hooks.clear()
                module._forward_pre_hooks.clear()
            if hasattr(top, "_output_capturing_hooks_installed"):
                top._output_capturing_hooks_installed = False
            parent, attr = layer_list(top, self.num_layers)
            setattr(parent, attr, nn.ModuleList(list(getattr(parent, attr))[boundary.layer:]))
            # The truncated copy keeps the model's own mask / position-bias code; only the
            # embeddings (replaced) and the pooler (ours is separate) are dropped.
            for attr_name in ("embeddings",):
                if hasattr(top, attr_name):
                    setattr(top, attr_name, _PassThrough())
            if getattr(top, "pooler", None) is not None:
                top.pooler = None
            for p in top.parameters():
                p.requires_grad_(True)
        dense = None
        if boundary.kind in ("hidden", "pooled"):
            pretrained = _pretrained_pooler_dense(self.model)
            # Without a pretrained pooler (DistilBERT) the dense starts fresh, from a fixed seed so
            # that the cached start of every trial is the same whatever the global RNG did before.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                dense = nn.Linear(self.hidden_size, self.hidden_size)
            if pretrained is not None:
                dense.load_state_dict(pretrained.state_dict())
            dense = dense.cpu()
            for p in dense.parameters():
                p.requires_grad_(True)
        return {"top": top, "dense": dense}


class Classifier(nn.Module):
    """The trainable part: [top k layers] -> pool -> [dense + tanh] -> dropout -> linear."""

    def __init__(self, boundary: Boundary, hidden_size: int, num_classes: int, dropout: float,
                 top: nn.Module | None = None, dense: nn.Linear | None = None, freeze: FreezeMode | None = None,
                 task: Task | None = None):
        super().__init__()
        self.boundary = boundary
        # What it learns: how training scores its outputs, and how they become predictions.
        self.task = task or Task("classify", num_classes)
        # None: the boundary says it all (the top trains in full). Kept so that a copy of this
        # model can be rebuilt from its state (scoring).
        self.freeze = freeze
        if freeze is not None:
            top = freeze.adapt(top)  # before the head is drawn: the trial's stream, as always
        self.top = top
        self.dense = dense
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden_size, num_classes)

    def sentence_vector(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = features
        if self.top is not None:
            states = self.top(inputs_embeds=x, attention_mask=mask).last_hidden_state
            x = pool(states, mask, self.boundary.pooling)
        if self.dense is not None:
            x = torch.tanh(self.dense(x))
        return x

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(self.dropout(self.sentence_vector(features, mask)))


class FullEncoderClassifier(nn.Module):
    """The no-cache path: runs the frozen part of the encoder on every step, then the classifier.

    It exists to prove the cache changes nothing (same logits and gradients) and for users who
    want per-step augmentation of the input; sweeps use the cached path.
    """

    def __init__(self, backbone: Backbone, classifier: Classifier):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, texts: list[str]) -> torch.Tensor:
        b = self.classifier.boundary
        enc = self.backbone.tokenize(texts, b.max_length)
        feats = self.backbone.features_from_tokens(enc, [b])[0]
        if b.ragged:
            x, mask = pad_ragged(feats)
            return self.classifier(x, mask)
        return self.classifier(torch.from_numpy(feats))


def pad_ragged(rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length [len_i, H] rows -> zero-padded [B, T, H] and its [B, T] mask."""
    longest = max(len(r) for r in rows)
    hidden = rows[0].shape[1]
    x = torch.zeros(len(rows), longest, hidden, dtype=torch.float32)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.from_numpy(np.array(r, dtype=np.float32))  # a copy: mmap rows are read-only
        mask[i, : len(r)] = 1
    return x, mask


@functools.lru_cache(maxsize=2)
def load_backbone(name: str, device: str = "cpu") -> Backbone:
    """One Backbone per process and encoder: loading costs seconds, and trials reuse workers."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return Backbone(name, device)


def describe_trainable(classifier: Classifier) -> list[str]:
    """Names of the trainable parameters (the tests check each freeze mode's exact set)."""
    return [n for n, p in classifier.named_parameters() if p.requires_grad]


def count_trainable(model: nn.Module) -> int:
    """How many numbers training changes: what a freeze mode costs in capacity."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def trainable_parameters(backbone: Backbone, freeze: str, num_classes: int, pooling: str = "pooler",
                         max_length: int = 64) -> int:
    """The trainable-parameter count of `freeze` on this encoder (the model a trial builds).

    Raises EncoderError if the mode does not fit the encoder (too many layers, a rank wider than
    its hidden size), so `raysweep check` finds that before any work.
    """
    boundary = boundary_for(freeze, backbone.num_layers, pooling, max_length, backbone.hidden_size)
    with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the caller's RNG alone
        model = Classifier(boundary, backbone.hidden_size, num_classes, 0.0, **backbone.trainable_top(boundary),
                           freeze=parse(freeze))
    return count_trainable(model)
