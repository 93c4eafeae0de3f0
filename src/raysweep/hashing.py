"""The one place raysweep hashes for a cache key or a cell id.

Every finished cell (cells/<id>.json), cache entry (activations, scoring models, pool scores)
and response store is found again by a hex digest of what it depends on. Those digests must stay
byte-for-byte what they were, or finished work is silently orphaned and paid for again: so the
recipes below are frozen, and tests/test_hashing.py pins their outputs for fixed inputs.
A new key may pick any `length`; an existing key must keep its recipe and length.

All digests are SHA-256, hex, cut to `length` characters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any


def json_digest(obj: Any, length: int, ascii_only: bool = True) -> str:
    """Digest of `obj` as JSON with sorted keys: the same mapping in any key order gives one key.

    `ascii_only=False` hashes non-ASCII text as UTF-8 instead of \\u escapes; the keys made that
    way (generated rows, prompt examples) keep it, the others keep the escapes.
    """
    text = json.dumps(obj, sort_keys=True, ensure_ascii=ascii_only)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def text_digest(text: str, length: int) -> str:
    """Digest of one string's UTF-8 bytes."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class Digest:
    """A digest built piece by piece, for inputs too large to serialise at once (model weights,
    text sets, arrays). `hex(length)` ends it."""

    def __init__(self, prefix: bytes | str = b""):
        self._h = hashlib.sha256(prefix.encode() if isinstance(prefix, str) else prefix)

    def add(self, data: bytes | str) -> Digest:
        self._h.update(data.encode() if isinstance(data, str) else data)
        return self

    def add_tensors(self, state: Mapping[str, Any]) -> Digest:
        """Each tensor of a state dict: its name, then its raw bytes (on CPU, contiguous)."""
        for key, tensor in state.items():
            self.add(key)
            self.add(tensor.detach().cpu().contiguous().numpy().tobytes())
        return self

    def add_sized_texts(self, texts: Iterable[str]) -> Digest:
        """Each text's UTF-8 length (8 bytes, little-endian), then its bytes: ["ab", "c"] and
        ["a", "bc"] differ."""
        for t in texts:
            b = t.encode("utf-8")
            self.add(len(b).to_bytes(8, "little"))
            self.add(b)
        return self

    def hex(self, length: int) -> str:
        return self._h.hexdigest()[:length]


def array_digest(a) -> str:
    """Digest of a numpy array: its dtype, shape and bytes (rows of a cache key)."""
    import numpy as np  # the module itself needs none: config code hashes too

    a = np.ascontiguousarray(a)
    return Digest(f"{a.dtype}|{a.shape}|").add(a.tobytes()).hex(20)


def state_digest(model) -> str:
    """A hash of a torch module's parameters and buffers: scores are cached per model *state*."""
    return Digest().add_tensors(model.state_dict()).hex(20)
