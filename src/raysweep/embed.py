"""Cached frozen activations: the project's main performance lever.

Every trial of a grid shares the frozen lower part of the encoder, so its output (the boundary
features, see `backbone.py`) is computed once per (encoder weights, boundary, text set) and
stored on disk under a content-addressed key. Trials then train only the unfrozen part: in
last-linear or pooler mode an epoch is a few small matrix products instead of an encoder pass.

Computing them is sharded with Ray Data over a pool of actors that each load the encoder once
(`map_batches` with a callable class; one GPU per actor when the cluster has GPUs). Small text
sets, and callers without Ray, use the same code in-process.

An artifact directory holds:
    meta.json      what it is (encoder, fingerprint, boundary, rows, hidden size)
    features.npy   [rows, H] float32, or for `hidden` boundaries all token states [tokens, H]
    offsets.npy    (hidden only) [rows + 1]: row i is features[offsets[i]:offsets[i+1]]
    init.pt        the pretrained modules the trainable part starts from (top layers, pooler dense)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raysweep.backbone import Backbone, Boundary, load_backbone, pad_ragged
from raysweep.cache_writer import EntryWriter
from raysweep.config import POOLINGS
from raysweep.console import progress
from raysweep.dashboard import dataset_name
from raysweep.encoders import shared_cache
from raysweep.hashing import Digest, json_digest

FORMAT_VERSION = 1  # bump when the artifact layout changes: old entries are then simply not found

# Below this many rows an encoder pass stays in-process even when Ray is asked for. Starting the
# Ray Data actors (each loads the encoder) costs ~15 s here, and their throughput per CPU core is
# no better than the in-process loop's: benchmarks/encoding.py (MiniLM, 2 boundaries, 2 cores) took
# 4.7 / 16.4 / 33.3 s in-process against 19.5 / 35.9 / 47.6 s through Ray Data for 400 / 2,000 /
# 4,000 rows. A whole SST-5 split (8,544 rows) still goes through Ray Data, where a cluster's GPUs
# pay off; a small subset on a laptop does not wait for actors.
RAY_MIN_ENCODE_ROWS = 1_000


def texts_digest(texts: list[str]) -> str:
    return Digest().add_sized_texts(texts).hex(20)


def activation_key(fingerprint: str, boundary: Boundary, texts: list[str]) -> str:
    return json_digest({"v": FORMAT_VERSION, "encoder": fingerprint, "boundary": dataclasses.asdict(boundary),
                        "texts": texts_digest(texts)}, 24)


@dataclass
class Activations:
    """A loaded artifact: boundary features of a text set, memory-mapped."""

    path: Path
    boundary: Boundary
    features: np.ndarray
    offsets: np.ndarray | None
    hidden_size: int

    def __len__(self) -> int:
        return len(self.offsets) - 1 if self.offsets is not None else len(self.features)

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features of `rows` as a tensor, with a padding mask for token-level boundaries."""
        if self.offsets is None:
            return torch.from_numpy(np.ascontiguousarray(self.features[rows], dtype=np.float32)), None
        return pad_ragged([self.features[self.offsets[r]: self.offsets[r + 1]] for r in rows])

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        """Token count of each row (token-level boundaries only)."""
        return np.diff(self.offsets)[rows]

    def dense(self, rows: np.ndarray | None = None) -> torch.Tensor:
        """All of a pooled/sentence artifact (or `rows` of it) in memory: the fast training path."""
        if self.offsets is not None:
            raise ValueError("token-level activations have no dense form")
        feats = self.features if rows is None else self.features[rows]
        return torch.from_numpy(np.array(feats, dtype=np.float32))

    def init_modules(self) -> dict:
        """Fresh copies of the pretrained top modules (each call loads new tensors)."""
        return torch.load(self.path / "init.pt", weights_only=False)


def load_activations(path: str | Path) -> Activations:
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FileNotFoundError(f"{path}: not a complete activation cache entry ({exc})") from None
    features = np.load(path / "features.npy", mmap_mode="r")
    offsets = np.load(path / "offsets.npy") if (path / "offsets.npy").exists() else None
    return Activations(path, Boundary(**meta["boundary"]), features, offsets, meta["hidden_size"])


# --------------------------------------------------------------------------- computing


class FrozenFeatures:
    """Ray Data callable class: loads the encoder once per actor, featurises a batch per call."""

    def __init__(self, encoder: str, boundaries: list[dict], threads: int = 1):
        torch.set_num_threads(max(1, threads))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.backbone = load_backbone(encoder, device)
        self.boundaries = [Boundary(**b) for b in boundaries]

    def __call__(self, batch: dict) -> dict:
        out = {"row": np.asarray(batch["row"])}
        for j, feats in enumerate(self.backbone.features_many(list(batch["text"]), self.boundaries)):
            rows = feats if isinstance(feats, list) else list(feats)
            # Raw float32 bytes per row: ragged token states travel through Arrow without padding.
            out[f"data_{j}"] = np.array([np.ascontiguousarray(r, dtype=np.float32).tobytes() for r in rows],
                                        dtype=object)
        return out


def _by_length(texts: list[str]) -> np.ndarray:
    # Batches of similar length waste little on padding: a large win for token-level boundaries.
    return np.argsort([len(t) for t in texts], kind="stable")


def _compute_local(backbone: Backbone, texts: list[str], boundaries: list[Boundary], batch_size: int,
                   sink) -> None:
    """Encode `texts` batch by batch, handing each batch's features to `sink(rows, feats)` (one
    entry of `feats` per boundary): nothing of the pass is kept here (cache_writer.py)."""
    order = _by_length(texts)
    with progress(len(texts), "encoder pass") as bar:
        for start in range(0, len(texts), batch_size):
            idx = order[start: start + batch_size]
            sink(idx, backbone.features_many([texts[i] for i in idx], boundaries))
            bar.update(len(idx))


def _compute_ray(encoder: str, texts: list[str], boundaries: list[Boundary], batch_size: int, actors: int,
                 hidden: int, sink) -> None:
    import pandas as pd
    import ray

    from raysweep.cluster import actor_pool

    pool = actor_pool(actors)  # what the cluster can grow to, not what is free this instant
    order = _by_length(texts)
    # Many blocks per actor: one DataFrame is one block, and one block feeds one actor. Rows are
    # sorted by length, so the last blocks are the slowest: small blocks keep every actor busy
    # to the end (with 4 blocks per actor, one actor spent the last 15% of an MPNet pass alone).
    n_blocks = max(1, min(len(texts) // batch_size, pool.max_size * 16))
    chunks = [pd.DataFrame({"row": idx, "text": [texts[i] for i in idx]}) for idx in np.array_split(order, n_blocks)]
    ds = ray.data.from_pandas([c for c in chunks if len(c)])
    del chunks  # the object store holds them now
    ds = ds.map_batches(
        FrozenFeatures,
        fn_constructor_kwargs={"encoder": encoder, "boundaries": [dataclasses.asdict(b) for b in boundaries],
                               "threads": 1},
        batch_size=batch_size,
        batch_format="numpy",
        compute=pool.strategy(),
        num_cpus=1,  # one torch thread per actor; on GPU nodes the CPU only tokenizes
        num_gpus=pool.gpus,
    )
    ds.set_name(dataset_name("encode"))  # the dashboard's Ray Data view: raysweep:<sweep>:encode_<id>
    with progress(len(texts), "encoder pass") as bar:
        # Each block is written as it arrives (the sink), so the driver holds one block at a time.
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            feats = [[np.frombuffer(data, dtype=np.float32).reshape(-1, hidden) if b.kind == "hidden"
                      else np.frombuffer(data, dtype=np.float32) for data in batch[f"data_{j}"]]
                     for j, b in enumerate(boundaries)]
            sink(batch["row"], feats)
            bar.update(len(batch["row"]))


def ensure_activations(encoder: str, texts: list[str], boundaries: list[Boundary], cache_root: str | Path,
                       use_ray: bool = True, batch_size: int = 64, actors: int = 0,
                       log=print, min_ray_rows: int | None = None) -> list[Path]:
    """Artifact directories for (encoder, each boundary, texts), computing the missing ones."""
    return ensure_activation_sets(encoder, {"texts": texts}, boundaries, cache_root, use_ray, batch_size, actors,
                                  log, min_ray_rows)["texts"]


def ensure_activation_sets(encoder: str, text_sets: dict[str, list[str]], boundaries: list[Boundary],
                           cache_root: str | Path, use_ray: bool = True, batch_size: int = 64, actors: int = 0,
                           log=print, min_ray_rows: int | None = None) -> dict[str, list[Path]]:
    """For each named text set, the artifact directories of every boundary, computing what is missing.

    Everything missing comes from one encoder pass over the text sets concatenated: the actors
    load the encoder once, not once per text set or boundary. With `use_ray`, a pass over fewer
    than `min_ray_rows` rows still runs in-process (see RAY_MIN_ENCODE_ROWS).
    """
    backbone = load_backbone(encoder, "cpu")
    finals = {name: [Path(cache_root) / activation_key(backbone.fingerprint, b, texts) for b in boundaries]
              for name, texts in text_sets.items()}

    def missing() -> dict[str, list[int]]:
        todo = {name: [j for j, f in enumerate(paths) if not (f / "meta.json").exists()]
                for name, paths in finals.items()}
        return {name: js for name, js in todo.items() if js}

    def link_siblings() -> None:
        for name, js in missing().items():
            for j in js:
                sibling = _sibling_entry(backbone.fingerprint, boundaries[j], text_sets[name], cache_root)
                if sibling is not None:
                    _link_entry(sibling, finals[name][j], boundaries[j], backbone, encoder, text_sets[name])

    _adopt_shared([f for paths in finals.values() for f in paths], cache_root)
    link_siblings()  # token states cached under another pooling: nothing to compute
    todo = missing()
    if not todo:
        return finals
    wanted = sorted({j for js in todo.values() for j in js})
    unique = list(dict.fromkeys(_computed_as(boundaries[j]) for j in wanted))
    names = list(todo)
    flat = [t for name in names for t in text_sets[name]]
    start = time.perf_counter()
    use_ray = use_ray and len(flat) >= (RAY_MIN_ENCODE_ROWS if min_ray_rows is None else min_ray_rows)
    with ExitStack() as stack:
        # One staged entry per (text set, computed boundary); its other poolings are linked below.
        entries = []  # (first row in `flat`, rows, computed boundary k, boundary, text set, staged dir, writer)
        offset = 0
        for name in names:
            texts = text_sets[name]
            stored = set()
            for j in todo[name]:
                k = unique.index(_computed_as(boundaries[j]))
                if k not in stored:
                    tmp = stack.enter_context(_staged(finals[name][j]))
                    writer = EntryWriter(tmp, len(texts), boundaries[j], backbone.hidden_size)
                    stack.callback(writer.abort)
                    entries.append((offset, len(texts), k, boundaries[j], name, tmp, writer))
                    stored.add(k)
            offset += len(texts)

        def sink(rows, feats) -> None:
            rows = np.asarray(rows, dtype=np.int64)
            for first, n, k, _, _, _, writer in entries:
                at = np.flatnonzero((rows >= first) & (rows < first + n))
                if len(at):
                    writer.put(rows[at] - first, [feats[k][i] for i in at])

        if use_ray:
            _compute_ray(encoder, flat, unique, batch_size, actors, backbone.hidden_size, sink)
        else:
            _compute_local(backbone, flat, unique, batch_size, sink)
        seconds = round(time.perf_counter() - start, 2)
        for _, _, _, boundary, name, tmp, writer in entries:
            writer.close()
            _finish(tmp, boundary, backbone, encoder, text_sets[name], seconds, use_ray)
    link_siblings()
    log(f"encoded {len(flat):,} rows and cached {cached_what([boundaries[j] for j in wanted])} in {seconds} s "
        f"({'Ray Data' if use_ray else 'in-process'})")
    return finals


def cached_what(boundaries: list[Boundary]) -> str:
    """What the frozen part's outputs are, in words a person reads in a stage line: "their sentence
    vectors and the token states entering layer 5" (the trained part starts there)."""
    kinds = {"sentence": "sentence vectors", "pooled": "pooled vectors"}
    order = {"sentence": 0, "pooled": 1, "hidden": 2}
    words = list(dict.fromkeys(kinds.get(b.kind) or f"the token states entering layer {b.layer}"
                               for b in sorted(boundaries, key=lambda b: (order.get(b.kind, 3), b.layer))))
    words = [w if w.startswith("the ") else f"their {w}" for w in words]
    return " and ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " and " + words[-1]


def _computed_as(boundary: Boundary) -> Boundary:
    """What an encoder pass computes for `boundary`. Token states do not depend on the pooling
    (it is applied above them, in the trainable part), so hidden boundaries that differ only in
    pooling share one computation, and their entries one features file."""
    return dataclasses.replace(boundary, pooling="") if boundary.ragged else boundary


def _sibling_entry(fingerprint: str, boundary: Boundary, texts: list[str], cache_root: str | Path) -> Path | None:
    """A complete entry of the same token states under another pooling, if one is cached."""
    if not boundary.ragged:
        return None
    for pooling in POOLINGS:
        other = Path(cache_root) / activation_key(fingerprint, dataclasses.replace(boundary, pooling=pooling), texts)
        if pooling != boundary.pooling and (other / "meta.json").exists():
            return other
    return None


def _adopt_shared(finals: list[Path], cache_root: str | Path) -> None:
    """Each missing entry of `finals` that another run put in the machine's shared cache under
    the same key (encoder, boundary, texts), linked instead of encoded again: a `generate`
    relabeling five rows would else encode every real row."""
    shared = shared_cache()
    if shared.resolve() == Path(cache_root).resolve():
        return
    for final in finals:
        found = shared / final.name
        if not (final / "meta.json").exists() and (found / "meta.json").exists():
            _adopt_entry(found, final)


def _adopt_entry(found: Path, final: Path) -> None:
    """Entry `found` (another cache's, same key) under `final`: hard links to its files, a copy
    where the file system has none."""
    with _staged(final) as tmp:
        for path in found.iterdir():
            if path.is_file():
                link_or_copy(path, tmp / path.name)


def link_or_copy(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (no bytes copied), a copy where the file system has none."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _link_entry(sibling: Path, final: Path, boundary: Boundary, backbone: Backbone, encoder: str,
                texts: list[str]) -> None:
    """The entry of `boundary` from a sibling's token states: hard links to its arrays (a copy where
    the file system has none), with its own meta and start modules."""
    with _staged(final) as tmp:
        for name in ("features.npy", "offsets.npy"):
            link_or_copy(sibling / name, tmp / name)
        torch.save(backbone.trainable_top(boundary), tmp / "init.pt")
        meta = json.loads((sibling / "meta.json").read_text())
        meta.update(boundary=dataclasses.asdict(boundary), encoder=encoder, rows=len(texts),
                    computed_with=f"linked from {sibling.name}")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))


def concatenate_entries(parts: list[Path], texts: list[str], cache_root: str | Path) -> Path:
    """The entry of `texts`, the concatenation of the text sets whose entries `parts` are (one
    boundary), assembled from them on disk without an encoder pass.

    An LLM pool's trials read the real train rows followed by the generated rows as one text set;
    both parts are cached already (the generation's teacher cached the generated rows), so
    encoding the real rows a second time would only repeat work. The entry sits under the same
    key an encoder pass over `texts` would use.
    """
    acts = [load_activations(p) for p in parts]
    metas = [json.loads((p / "meta.json").read_text()) for p in parts]
    boundary, fingerprint = acts[0].boundary, metas[0]["fingerprint"]
    if any(a.boundary != boundary for a in acts) or any(m["fingerprint"] != fingerprint for m in metas):
        raise ValueError(f"cannot concatenate activation entries of different encoders or boundaries: {parts}")
    if sum(len(a) for a in acts) != len(texts):
        raise ValueError(f"the entries {parts} hold {sum(len(a) for a in acts)} rows, not the {len(texts)} texts")
    final = Path(cache_root) / activation_key(fingerprint, boundary, texts)
    if (final / "meta.json").exists():
        return final
    with _staged(final) as tmp:
        np.save(tmp / "features.npy", np.concatenate([np.asarray(a.features) for a in acts]))
        if boundary.ragged:
            starts = np.cumsum([0] + [int(a.offsets[-1]) for a in acts[:-1]])
            offsets = np.concatenate([[0]] + [a.offsets[1:] + start for a, start in zip(acts, starts)])
            np.save(tmp / "offsets.npy", offsets.astype(np.int64))
        shutil.copyfile(parts[0] / "init.pt", tmp / "init.pt")  # the same encoder and boundary: the same start
        meta = {**metas[0], "rows": len(texts), "texts": texts_digest(texts), "seconds": 0.0,
                "computed_with": "concatenated", "parts": [p.name for p in parts]}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return final


def _finish(tmp: Path, boundary: Boundary, backbone: Backbone, encoder: str, texts: list[str], seconds: float,
            use_ray: bool) -> None:
    """The start modules and meta.json of an entry whose features are written (cache_writer.py)."""
    torch.save(backbone.trainable_top(boundary), tmp / "init.pt")
    meta = {"encoder": encoder, "fingerprint": backbone.fingerprint, "boundary": dataclasses.asdict(boundary),
            "rows": len(texts), "hidden_size": backbone.hidden_size, "num_layers": backbone.num_layers,
            "texts": texts_digest(texts), "seconds": seconds,
            "computed_with": "ray-data" if use_ray else "in-process"}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))


@contextmanager
def _staged(final: Path):
    """A fresh directory beside the entry `final`, renamed into place when the block ends: a crash
    never leaves a half entry under the key."""
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.rename(tmp, final)
    except OSError:  # another process finished the same entry first: theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
