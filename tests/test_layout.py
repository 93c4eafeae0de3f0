"""`Layout` owns every path under an output: local, storage URI, and the sweep's own settings."""

from __future__ import annotations

from pathlib import Path

from raysweep import layout
from raysweep.config import SweepConfig, from_dict
from raysweep.encoders import cache_home
from raysweep.layout import Layout, generation_layout


def cfg(**fields) -> SweepConfig:
    return from_dict(SweepConfig, {"name": "s", **fields})


def test_a_local_output_holds_everything(tmp_path):
    lay = Layout.of(cfg(), tmp_path / "out")
    out = (tmp_path / "out").resolve()
    assert (lay.cache_dir, lay.generation_dir, lay.annotation_dir) == (out / "cache", out / "generation",
                                                                       out / "annotation")
    assert lay.log_file("run-s.log") == out / "logs" / "run-s.log"
    assert (layout.cell_record("abc"), layout.cell_marker("abc")) == ("cells/abc.json", "cells/abc.running")
    assert layout.diagnostics("real") == "diagnostics" and layout.diagnostics("llm", "m-pooler") == (
        "diagnostics-generated/m-pooler")


def test_a_uri_output_keeps_its_appendable_files_on_this_disk():
    lay = Layout.of(cfg(), "s3://bucket/prefix")
    assert lay.is_uri and lay.cache_dir == cache_home() / "cache"
    assert lay.generation_dir == cache_home() / "generation" / "s"  # the reply store is fsynced call by call
    assert lay.annotation_dir == cache_home() / "annotation" / "s"
    assert lay.log_file("x.log") == cache_home() / "logs" / "x.log"


def test_the_sweeps_settings_move_the_cache_and_the_generation(tmp_path):
    lay = Layout.of(cfg(cache_dir=str(tmp_path / "c"), generation_dir=str(tmp_path / "g")), "s3://bucket/p")
    assert lay.cache_dir == (tmp_path / "c").resolve() and lay.generation_dir == (tmp_path / "g").resolve()
    assert lay.annotation_dir == (tmp_path / "annotation" / "s").resolve()  # beside the moved cache


def test_generate_into_dir_generation_then_run_dir_share_one_cache(tmp_path, monkeypatch):
    """The README's two commands: `generate --output DIR/generation`, then `run --output DIR`."""
    c = cfg()
    gen = generation_layout(c, tmp_path / "runs" / "x" / "generation")
    run = Layout.of(c, tmp_path / "runs" / "x")
    assert gen.cache_dir == run.cache_dir == (tmp_path / "runs" / "x" / "cache").resolve()
    assert gen.generation_dir == run.generation_dir
    monkeypatch.setenv("RAYSWEEP_HOME", str(tmp_path / "home"))
    elsewhere = generation_layout(c, tmp_path / "gen-x")  # not an output's own: the machine's shared cache
    assert elsewhere.cache_dir == (tmp_path / "home" / "cache").resolve()
    assert elsewhere.generation_dir == Path(tmp_path / "gen-x").resolve()
    moved = generation_layout(cfg(cache_dir=str(tmp_path / "shared")), tmp_path / "runs" / "x" / "generation")
    assert moved.cache_dir == (tmp_path / "shared").resolve()
