"""Results at a storage URI (pyarrow.fs): the Output class, the cache shared through the store, and
a real sweep whose --output is a file:// URI, compared with the same sweep into a local path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from raysweep import sweep
from raysweep.config import load_sweep
from raysweep.storage import Output, StorageError


def digest_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def make_entry(path: Path, payload: bytes) -> Path:
    path.mkdir(parents=True)
    (path / "features.npy").write_bytes(payload)
    (path / "sub").mkdir()
    (path / "sub" / "init.pt").write_bytes(payload[::-1])
    (path / "meta.json").write_text('{"rows": 3}')
    return path


def test_a_file_uri_reads_writes_lists_and_deletes(tmp_path):
    out = Output(f"file://{tmp_path}/out")
    assert out.is_uri and str(out) == f"file://{tmp_path}/out"
    out.mkdir("cells")
    out.write_text("cells/a.json", '{"x": 1}')
    out.write_text("cells/b.running", "{}")
    assert (tmp_path / "out" / "cells" / "a.json").read_text() == '{"x": 1}'
    assert [e.name for e in out.list("cells", ".json")] == ["a.json"]
    assert out.read_text("cells/nope.json") is None and out.list("nothing-here") == []
    out.delete("cells/b.running")
    out.delete("cells/b.running")  # already gone: no error
    assert sorted(p.name for p in (tmp_path / "out" / "cells").iterdir()) == ["a.json"]
    assert Output(tmp_path / "x").is_uri is False


@pytest.mark.parametrize("where, message", [
    ("ftp://host/x", "output ftp://host/x: unsupported scheme"),
    ("s3://", "output s3://: names no bucket or directory after the scheme"),
    ("s3://bucket/x?colour=blue", "output s3://bucket/x\\?colour=blue: .*colour"),
])
def test_an_unusable_output_is_a_one_line_error(where, message):
    with pytest.raises(StorageError, match=message) as info:
        Output(where)
    assert "\n" not in str(info.value)


def test_a_cache_entry_goes_up_once_and_comes_down_whole(tmp_path):
    out = Output(f"file://{tmp_path}/store")
    entry = make_entry(tmp_path / "driver" / "k1", b"abc")
    assert out.upload_tree(entry, "cache/k1") == 3
    assert out.upload_tree(entry, "cache/k1") == 0  # there already: nothing copied
    node = tmp_path / "node" / "k1"
    assert out.fetch_tree("cache/k1", node) is True
    assert digest_tree(node) == digest_tree(entry)
    assert out.fetch_tree("cache/k1", node) is False  # the node has it: no download
    assert not [p for p in node.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
    with pytest.raises(StorageError, match="cache/k2: no such cache entry"):
        out.fetch_tree("cache/k2", tmp_path / "node" / "k2")


def test_a_trial_fetches_what_its_node_lacks(tmp_path):
    out = Output(f"file://{tmp_path}/store")
    driver = tmp_path / "driver-cache"
    train, val = make_entry(driver / "tr", b"train"), make_entry(driver / "va", b"val")
    (driver / "selection" / "models").mkdir(parents=True)
    (driver / "selection" / "models" / "m.pt").write_bytes(b"model")
    context = {"cache_dir": str(driver), "artifacts": {"e|pooler|last-linear": (str(train), str(val))}}
    sweep.publish_cache(out, context, log=lambda *_: None)
    expected = digest_tree(driver)
    import shutil

    shutil.rmtree(driver)  # another node: same path, nothing in it yet
    sweep.fetch_cache(out, context, "e|pooler|last-linear")
    assert digest_tree(driver) == expected


SWEEP = """
name: uri
compare: {{strategy: [random], fraction: [0, 1], freeze: [last-linear, pooler]}}
replicate: {{seed: [0]}}
data: {{path: {data}}}
encoder: {{name: {encoder}, max_length: 16}}
recipe: {{epochs: 2}}
"""


@pytest.fixture
def tiny_csv(tmp_path):
    words = ["good", "bad", "movie", "film", "plot", "boring", "fun", "great", "awful", "not"]
    rows = ["text,label,split"] + [f"the {words[i % 10]} {words[(i * 3) % 10]} .,{i % 5},{'dev' if i % 4 == 0 else 'train'}"
                                   for i in range(80)]
    path = tmp_path / "tiny.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


TIMES = ["select_s", "train_s", "eval_s", "trial_s", "wall_s"]


@pytest.mark.slow
def test_a_sweep_into_a_file_uri_writes_what_a_local_path_gets(tmp_path, tiny_csv, tiny_bert, ray_local, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_HOME", str(tmp_path / "home"))  # the driver's node-local cache
    path = tmp_path / "uri.yaml"
    path.write_text(SWEEP.format(data=tiny_csv, encoder=tiny_bert))
    cfg = load_sweep(path)
    local = sweep.run_sweep(cfg, tmp_path / "local", use_ray_data=False, log=lambda *_: None)
    lines = []
    remote = sweep.run_sweep(cfg, f"file://{tmp_path}/remote", use_ray_data=False, log=lines.append)

    pd.testing.assert_frame_equal(remote.drop(columns=TIMES), local.drop(columns=TIMES))
    a, b = tmp_path / "local", tmp_path / "remote"
    assert (b / "sweep.yaml").read_bytes() == (a / "sweep.yaml").read_bytes()
    assert sorted(p.name for p in (b / "cells").iterdir()) == sorted(p.name for p in (a / "cells").iterdir())
    for p in (a / "cells").iterdir():
        ra, rb = json.loads(p.read_text()), json.loads((b / "cells" / p.name).read_text())
        for rec in (ra, rb):
            for t in TIMES:
                rec["metrics"].pop(t)
        assert ra == rb
    assert pd.read_csv(b / "trials.csv").shape == (4, len(local.columns))
    assert list((b / "tune" / "uri").glob("experiment_state-*.json"))
    # The trials' cache: computed into the node-local cache once, its entries uploaded under cache/;
    # nothing of it in a local output's layout changes (there, cache/ is the cache itself).
    node_cache = tmp_path / "home" / "cache"
    entries = sorted(p.name for p in node_cache.iterdir() if (p / "meta.json").exists())
    assert len(entries) == 4  # (train, val) x (sentence, pooled)
    assert sorted(p.name for p in (b / "cache").iterdir()) == entries
    for name in entries:
        assert digest_tree(b / "cache" / name) == digest_tree(node_cache / name)
    assert sorted(p.name for p in (a / "cache").iterdir() if (p / "meta.json").exists()) == entries
    assert f"cache: 4 of 4 activation entries and 0 scoring files uploaded to file://{b}/cache" in lines
    assert sweep.cell_progress(cfg, f"file://{b}") == {"cells": 4, "done": 4, "running": 0, "failed": 0,
                                                       "pending": 0}
