"""Results at a storage URI (pyarrow.fs): the Output class, the cache shared through the store, and
a real sweep whose --output is a file:// URI, compared with the same sweep into a local path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest


from raysweep import grid, inputs, records, status, steps, sweep
from raysweep.grid import Variant
from raysweep.layout import Layout
from raysweep.config import RecipeConfig, load_sweep
from raysweep.storage import Output, StorageError
from raysweep.train import Cell


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
    gen = make_entry(driver / "tr+gen", b"train and generated")
    variant = Variant("e", "pooler", "last-linear")
    context = inputs.TrialContext(None, None, None, None, 5, recipe=RecipeConfig(), cache_dir=str(driver),
                                  artifacts={variant: (str(train), str(val)),
                                             variant.with_generated(): (str(gen), str(val))})
    records.publish_entries(out, context, log=lambda *_: None)
    records.publish_selection(out, context, log=lambda *_: None)
    expected = digest_tree(driver)
    import shutil

    shutil.rmtree(driver)  # another node: same path, nothing in it yet
    records.fetch_cache(out, context, [Cell("real", "random", 1.0, "last-linear", 0, "e", "pooler")])
    assert not gen.exists()  # a real-pool trial fetches only what it reads
    records._fetched.clear()
    records.fetch_cache(out, context, [Cell("llm", "random", 1.0, "last-linear", 0, "e", "pooler")])
    visible = {k: v for k, v in digest_tree(driver).items() if not Path(k).name.startswith(".")}  # not the locks
    assert visible == expected


@pytest.mark.parametrize("step", ["generation", "annotation"])
def test_paid_replies_reach_the_storage_even_when_a_step_stops_and_a_new_head_resumes_them(step, tmp_path, monkeypatch):
    """With a URI output an LLM step's reply store lives on the driver's disk; what it holds goes
    to <output>/<step>/ also when the step stops short, and a driver on another head starts from it."""
    pool = "llm" if step == "generation" else "llm_annotated"
    (tmp_path / "s.yaml").write_text(f"name: gen\ncompare: {{pool: [real, {pool}]}}\nllm: {{n_rows: 10}}\n")
    cfg = load_sweep(tmp_path / "s.yaml")
    out = Output(f"file://{tmp_path / 'out'}")
    seen = []

    def stopped(*args, **kwargs):  # run_generation(cfg, gen_dir, ...), annotate_sweep(cfg, cells, keys, inputs_for, ann_dir, ...)
        where = args[1] if step == "generation" else args[4]
        seen.append(sorted(p.name for p in where.glob("*")) if where.exists() else [])
        where.mkdir(parents=True, exist_ok=True)
        with open(where / "responses.jsonl", "a") as f:
            f.write(json.dumps({"request_id": len(seen)}) + "\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(steps, "start_ray", lambda address=None: False)
    monkeypatch.setattr(steps.augment, "run_generation", stopped)
    monkeypatch.setattr(steps.annotation, "annotate_sweep", stopped)
    said = []
    for head in ("head-1", "head-2"):  # each with a disk of its own
        lay = Layout(out.spec, cfg.name, str(tmp_path / head / "cache"))
        with pytest.raises(KeyboardInterrupt):
            if step == "generation":
                steps.generation(cfg, lay, None, False, said.append)
            else:
                steps.annotation_labels(cfg, sweep.expand(cfg), lay, lambda: None, lambda *_: None, said.append)
    # The second head found the first one's reply (fetched from the storage) and added its own.
    assert seen == [[], ["responses.jsonl"]]
    stored = (tmp_path / "out" / step / "responses.jsonl").read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in stored] == [1, 2]


@pytest.mark.slow  # starts Ray (a few seconds)
def test_an_entry_ships_by_object_store_when_small_else_by_storage(tmp_path, ray_local, monkeypatch):
    from raysweep import storage

    out = Output(f"file://{tmp_path}/store")
    small = make_entry(tmp_path / "driver" / "small", b"s" * 1000)
    big = make_entry(tmp_path / "driver" / "big", b"b" * 5000)
    monkeypatch.setattr(storage, "OBJECT_STORE_MAX_BYTES", 4000)  # small: 2,011 bytes; big: 10,011
    by_ref, by_uri, by_path = storage.ship(small, out), storage.ship(big, out), storage.ship(big, None)
    assert by_ref.files is not None and by_ref.uri is None
    assert by_uri.uri == out.spec and by_uri.files is None and out.exists("cache/big/meta.json")
    assert by_path.uri is None and by_path.files is None
    expected = {"small": digest_tree(small), "big": digest_tree(big)}
    import shutil

    shutil.rmtree(tmp_path / "driver")  # a node with its own disk
    assert digest_tree(storage.receive(by_ref)) == expected["small"]
    assert digest_tree(storage.receive(by_uri)) == expected["big"]
    shutil.rmtree(tmp_path / "driver" / "big")
    with pytest.raises(StorageError, match=r"big: no such cache entry on node .*give --output a storage URI") as info:
        storage.receive(by_path)
    assert "\n" not in str(info.value)
    # Raised in a remote task, it reaches the driver as itself: one line, no remote traceback.
    import ray

    from raysweep import cluster

    with pytest.raises(StorageError) as info:
        cluster.get(ray.remote(storage.receive).remote(by_path))
    assert "no such cache entry on node" in str(info.value) and "\n" not in str(info.value)


def test_analyze_copies_only_what_the_report_reads_from_a_uri(tmp_path):
    from click.testing import CliRunner

    from raysweep.cli import main

    res = tmp_path / "store" / "paper"
    for name, text in {"trials.csv": "a\n", "sweep.yaml": "name: paper\n", "diagnostics/pooler-seed0.csv": "x\n",
                       "generation/generated.csv": "t\n", "cells/c.json": "{}", "cache/k/meta.json": "{}",
                       "tune/paper/experiment_state-x.json": "{}", "annotation/labels.csv": "row\n",
                       "annotation/annotation.json": "{}", "annotation/responses.jsonl": "{}\n",
                       "predictions/c.parquet": "p"}.items():
        (res / name).parent.mkdir(parents=True, exist_ok=True)
        (res / name).write_text(text)
    local = Output(f"file://{res}").fetch_results(tmp_path / "copy")
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == [
        "annotation/annotation.json", "annotation/labels.csv",  # the report's annotator section; not the replies
        "diagnostics/pooler-seed0.csv", "generation/generated.csv", "predictions/c.parquet", "sweep.yaml", "trials.csv"]
    assert (local / "sweep.yaml").read_text() == "name: paper\n"

    result = CliRunner().invoke(main, ["analyze", str(tmp_path / "nope"), "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output == f"error: {tmp_path / 'nope'}: no such results directory\n"


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
    # Per-row predictions travel with the URI output, the same as a local output's.
    assert sorted(p.name for p in (b / "predictions").iterdir()) == sorted(p.name for p in (a / "predictions").iterdir())
    assert len(list((b / "predictions").iterdir())) == 4
    # The trials' cache: computed into the node-local cache once, its entries uploaded under cache/;
    # nothing of it in a local output's layout changes (there, cache/ is the cache itself).
    node_cache = tmp_path / "home" / "cache"
    entries = sorted(p.name for p in node_cache.iterdir() if (p / "meta.json").exists())
    assert len(entries) == 4  # (train, val) x (sentence, pooled)
    assert sorted(p.name for p in (b / "cache").iterdir()) == entries
    for name in entries:
        assert digest_tree(b / "cache" / name) == digest_tree(node_cache / name)
    assert sorted(p.name for p in (a / "cache").iterdir() if (p / "meta.json").exists()) == entries
    assert f"cache: 4 of 4 activation entries uploaded to file://{b}/cache" in lines
    assert not [line for line in lines if "scoring files" in line]  # random: no scoring model, nothing to publish
    assert status.cell_progress(cfg, f"file://{b}") == {"cells": 4, "done": 4, "running": 0, "failed": 0,
                                                       "pending": 0}

    # --retry-failed: a failed record is kept by a plain run and replaced by a retry; nothing else runs.
    victim = sorted((a / "cells").iterdir())[0]
    record = json.loads(victim.read_text())
    record.update(status="failed", error="RuntimeError: made up", metrics={})
    victim.write_text(json.dumps(record))
    before = {p.name: p.stat().st_mtime_ns for p in (a / "cells").iterdir()}
    kept = sweep.run_sweep(cfg, a, use_ray_data=False, log=lambda *_: None)
    assert kept.set_index("cell_id").loc[victim.stem, "status"] == "failed"
    retried = sweep.run_sweep(cfg, a, retry_failed=True, use_ray_data=False, log=lambda *_: None)
    assert set(retried["status"]) == {"ok"}
    after = {p.name: p.stat().st_mtime_ns for p in (a / "cells").iterdir()}
    assert {n for n in after if after[n] != before[n]} == {victim.name}


# --------------------------------------------------------------------------- a real S3 API (moto)


def moto_server() -> str | None:
    """moto's S3 server: $MOTO_SERVER, beside this Python (the `dev` extra installs it), or on PATH.

    This Python's own first: a moto 5.2.1 found earlier on PATH here answered pyarrow's
    CompleteMultipartUpload with INTERNAL_FAILURE; the `dev` extra pins a version that works.
    """
    import os
    import shutil
    import sys

    for candidate in (os.environ.get("MOTO_SERVER"), str(Path(sys.executable).with_name("moto_server")),
                      shutil.which("moto_server")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def start_moto(log_path: Path, env: dict | None = None):
    """A moto S3 server on 127.0.0.1 (skips the test without one), answering: (process, port).
    The caller stops it by its PID."""
    import socket
    import subprocess
    import time
    import urllib.request

    server = moto_server()
    if server is None:
        pytest.skip("moto_server not found (pip install 'moto[server]', or set MOTO_SERVER)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log_path, "w") as log:
        proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2)
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(log_path.read_text()) from None
            time.sleep(0.2)


@pytest.fixture
def s3_endpoint(tmp_path):
    """A moto S3 server on 127.0.0.1 with one bucket, `results`; stopped by its PID afterwards."""
    proc, port = start_moto(tmp_path / "moto.log")
    try:
        # The fake keys come from a credentials file (conftest.py), the provider's own chain,
        # which this session's Ray workers found too: a URI holding keys is refused.
        query = f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
        import pyarrow.fs as pafs

        fs, _ = pafs.FileSystem.from_uri(f"s3://results?{query}&allow_bucket_creation=true")
        fs.create_dir("results")
        yield query
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_a_sweep_into_s3_through_a_real_s3_api(tmp_path, tiny_csv, tiny_bert, ray_local, monkeypatch, s3_endpoint):
    import pyarrow.fs as pafs

    monkeypatch.setenv("RAYSWEEP_HOME", str(tmp_path / "home"))
    path = tmp_path / "s3.yaml"
    path.write_text(SWEEP.format(data=tiny_csv, encoder=tiny_bert).replace("name: uri", "name: s3"))
    cfg = load_sweep(path)
    uri = f"s3://results/runs/tiny?{s3_endpoint}"
    lines = []
    table = sweep.run_sweep(cfg, uri, use_ray_data=False, log=lines.append)
    assert len(table) == 4 and set(table["status"]) == {"ok"}
    assert "wrote s3://results/runs/tiny/trials.csv: 4 cells (0 failed, 0 missing)" in lines  # no keys in the log

    fs, _ = pafs.FileSystem.from_uri(uri)
    files = {i.path[len("results/runs/tiny/"):] for i in
             fs.get_file_info(pafs.FileSelector("results/runs/tiny", recursive=True)) if i.type == pafs.FileType.File}
    fixed = grid.fixed_digest(cfg)
    ids = {grid.cell_id(c, fixed) for c in sweep.expand(cfg)}
    assert {f for f in files if f.startswith("cells/")} == {f"cells/{i}.json" for i in ids}
    assert {"sweep.yaml", "trials.csv"} <= files
    assert any(f.startswith("tune/s3/experiment_state-") for f in files)
    node_cache = tmp_path / "home" / "cache"
    entries = {p.name for p in node_cache.iterdir() if (p / "meta.json").exists()}
    assert len(entries) == 4
    assert {f.split("/")[1] for f in files if f.startswith("cache/")} == entries
    with fs.open_input_stream("results/runs/tiny/trials.csv") as f:
        remote = pd.read_csv(f)
    assert sorted(remote["cell_id"]) == sorted(ids)
    assert status.cell_progress(cfg, uri) == {"cells": 4, "done": 4, "running": 0, "failed": 0, "pending": 0}


@pytest.mark.slow  # draws the report's figures (~20 s on a busy 2-core machine)
def test_a_report_of_a_uri_names_the_uri_not_its_temporary_copy(tmp_path):
    import sys

    from click.testing import CliRunner

    from raysweep.cli import main

    sys.path.insert(0, str(Path(__file__).parent / "analysis"))
    try:
        from handmade import write_trials
    finally:
        sys.path.pop(0)
    write_trials(tmp_path / "store" / "paper")
    uri = f"file://{tmp_path}/store/paper"
    result = CliRunner().invoke(main, ["analyze", uri, "--output", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"(`{uri}`)" in md  # the summary's list of sweeps
    assert f"raysweep analyze {uri} --output {tmp_path / 'report'}" in md
    assert f"--output {uri}-rerun" in md and f"copy `{uri}/sweep.yaml` here first" in md
    assert "/tmp/tmp" not in md.replace(str(tmp_path), "")  # no trace of the staging directory
