"""Bad input is one line per problem before any work: the data file, the encoder, the machine,
the YAML itself. Each case goes through the command a user types (`run` or `check`), with the
sweep's runner replaced by one that fails the test: reaching it means work would have started."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from raysweep import sweep
from raysweep.grid import CellRecord
from raysweep.cli import EXIT_BAD_INPUT, main
from raysweep.cluster import Capacity, NodeShape
from raysweep.config import load_sweep
from raysweep.preflight import PreflightError, preflight

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"

# 5 classes x 4 train rows + 5 dev rows: a file every check passes on; the split labels 1 row per class.
GOOD_ROWS = [("train", f"sentence {c} {i}", c) for c in range(5) for i in range(4)] + \
            [("dev", f"dev sentence {c}", c) for c in range(5)]


@pytest.fixture
def no_run(monkeypatch):
    """The sweep's runner, replaced: a call means the preflight let bad input through."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("run_sweep reached: bad input passed the preflight")

    monkeypatch.setattr(sweep, "run_sweep", refuse)
    return calls


def sweep_file(tmp_path: Path, data_path=None, **sections) -> Path:
    doc = {"name": "t", "compare": {"pool": ["real"], "strategy": ["random"], "fraction": [0, 1],
                                    "freeze": ["last-linear"]},
           "replicate": {"seed": [0]}, "data": {"path": str(data_path) if data_path else None}}
    for key, value in sections.items():
        doc.setdefault(key, {}).update(value)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def write_rows(path: Path, rows, columns=("split", "text", "label")) -> Path:
    df = pd.DataFrame(rows, columns=list(columns))
    if path.suffix == ".parquet":
        df.to_parquet(path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in df.to_dict("records")))
    else:
        df.to_csv(path, index=False)
    return path


def with_row(i, row):
    rows = list(GOOD_ROWS)
    rows[i] = row
    return rows


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# name -> (file name, how to write it, what the one line says besides the file's path)
BAD_DATA = {
    "missing": ("gone.csv", lambda p: None, "no such file"),
    "binary": ("bin.csv", lambda p: p.write_bytes(b"\xff\xfe\x00\x81" * 64), "not a readable CSV file"),
    "gzip that is not": ("plain.csv.gz", lambda p: p.write_text("split,text,label\n"), "not a readable CSV file"),
    "one class": ("one.csv", lambda p: write_rows(p, [(s, t, 1) for s, t, _ in GOOD_ROWS]),
                  "only label 1: at least 2 classes"),
    "repeated header": ("dup.csv", lambda p: p.write_text("split,text,label,label\ntrain,a,1,2\n"),
                        "row 1: column 'label' appears twice"),
    "float label": ("float.csv", lambda p: write_rows(p, with_row(1, ("train", "x y", 3.7))),
                    "row 3: label '3.7' is not a whole number"),
    "label outside": ("nine.csv", lambda p: write_rows(p, with_row(2, ("train", "x y", 9))),
                      "row 4: label '9' is outside 0..4"),
    "empty text": ("empty.csv", lambda p: write_rows(p, with_row(0, ("train", "  ", 1))),
                   "row 2: empty text in column 'text'"),
    "unknown split": ("split.csv", lambda p: write_rows(p, with_row(3, ("holdout", "x y", 1))),
                      "row 5: split 'holdout' is not 'train', 'dev' or 'test'"),
    "no dev rows": ("nodev.csv", lambda p: write_rows(p, [r for r in GOOD_ROWS if r[0] == "train"]),
                    "needs both 'train' and 'dev' rows"),
    "missing column": ("cols.csv", lambda p: write_rows(p, GOOD_ROWS, ("split", "sentence", "label")),
                       "missing column 'text'"),
    "number as text (JSONL)": ("num.jsonl", lambda p: write_rows(p, with_row(1, ("train", 5, 1))),
                               "row 2: int 5, not text,"),
    "deep JSONL line": ("deep.jsonl", lambda p: p.write_text("[" * 100_000 + "\n"), "line 1: not usable JSON"),
    "bad JSONL line": ("bad.jsonl", lambda p: p.write_text('{"split": "train"}\n{oops\n'), "line 2: not valid JSON"),
    # Parquet rows are numbered from 1 (no header row): the first data row is row 1.
    "Parquet label": ("bad.parquet", lambda p: write_rows(p, with_row(0, ("train", "x y", 7))),
                      "row 1: label 7 is outside 0..4"),
    "latin-1 CSV": ("latin.csv", lambda p: p.write_bytes("split,text,label\ntrain,caf\xe9,1\n".encode("latin-1")),
                    "not a readable CSV file"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_a_bad_data_file_is_one_line_and_nothing_is_written(tmp_path, no_run, case):
    name, write, says = BAD_DATA[case]
    data = tmp_path / name
    write(data)
    out = tmp_path / "out"
    result = run_cli("run", sweep_file(tmp_path, data), "--output", out)
    lines = error_lines(result)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert len(lines) == 1, lines
    assert str(data) in lines[0] and says in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not out.exists() and no_run == []


def test_every_problem_is_listed_one_line_each(tmp_path, no_run):
    data = write_rows(tmp_path / "ok.csv", GOOD_ROWS)
    result = run_cli("run", sweep_file(tmp_path, data), "--output", tmp_path / "out",
                     "--set", "compare.fraction=[.inf]", "--set", "replicate.seed=[-1]", "--set", "recipe.lr=.inf")
    lines = error_lines(result)
    assert result.exit_code == EXIT_BAD_INPUT
    assert [line.split(": ", 2)[2].split(":")[0] for line in lines] == [
        "compare.fraction[0]", "replicate.seed[0]", "recipe.lr"], lines
    # Past the file's own rules: the data, the encoder and the machine, all at once.
    result = run_cli("check", sweep_file(tmp_path, data), "--set", "compare.strategy=[entropy]",
                     "--set", "selection.k=100", "--set", "encoder.max_length=4096",
                     "--set", "resources.cpus_per_trial=1000")
    lines = error_lines(result)
    assert result.exit_code == EXIT_BAD_INPUT
    assert len(lines) == 3, lines
    assert "selection.k: 100 neighbours, but only 5 rows are labeled" in lines[0]
    assert "encoder.max_length: 4096 is more than the 512 positions of encoder 'minilm'" in lines[1]
    assert "resources.cpus_per_trial: 1000 per trial" in lines[2]
    assert all(line.startswith(f"error: {tmp_path / 'sweep.yaml'}: ") for line in lines)


def test_the_hang_cases_fail_fast(tmp_path, no_run):
    """Tune would keep these trials PENDING forever; here they are one line in seconds."""
    import torch

    data = write_rows(tmp_path / "ok.csv", GOOD_ROWS)
    gpus = torch.cuda.device_count() + 1
    for key, value in (("cpus_per_trial", 1000), ("gpus_per_trial", gpus)):
        start = time.process_time()  # CPU time: the machine is shared, its wall clock is not ours
        result = run_cli("run", sweep_file(tmp_path, data), "--output", tmp_path / "out",
                         "--set", f"resources.{key}={value}")
        assert time.process_time() - start < 20
        assert result.exit_code == EXIT_BAD_INPUT
        assert f"resources.{key}: {value} per trial, but no node has or can get more than" in result.stderr
        assert not (tmp_path / "out").exists() and no_run == []
    # A freeze mode's own resources, under its own key; a mode the sweep does not compare asks for nothing.
    result = run_cli("run", sweep_file(tmp_path, data), "--output", tmp_path / "out",
                     "--set", f"resources.freeze={{last-linear: {{gpus_per_trial: {gpus}}}, pooler: {{gpus_per_trial: 99}}}}")
    assert result.exit_code == EXIT_BAD_INPUT and no_run == []
    [line] = error_lines(result)
    assert line.startswith(f"error: {tmp_path / 'sweep.yaml'}: resources.freeze.last-linear.gpus_per_trial: "
                           f"{gpus} per trial, but no node has or can get more than {gpus - 1} (")


def test_max_length_is_read_from_the_encoder_config(tmp_path, tiny_bert):
    data = write_rows(tmp_path / "ok.csv", GOOD_ROWS)
    cfg = load_sweep(sweep_file(tmp_path, data, encoder={"name": tiny_bert, "max_length": 65}))
    with pytest.raises(PreflightError, match="encoder.max_length: 65 is more than the 64 positions"):
        preflight(cfg)
    cfg = load_sweep(sweep_file(tmp_path, data, encoder={"name": tiny_bert, "max_length": 64}))
    assert preflight(cfg).n_labeled == 5
    cfg = load_sweep(sweep_file(tmp_path, data, encoder={"name": str(tmp_path / "nowhere")}))
    with pytest.raises(PreflightError, match="encoder.name: encoder '.*nowhere' does not resolve offline"):
        preflight(cfg)


def test_a_submitted_sweep_leaves_cluster_only_things_to_the_cluster(tmp_path):
    cfg = load_sweep(sweep_file(tmp_path, "/data/on/the/cluster.csv", encoder={"name": "bert-base-uncased"},
                                resources={"gpus_per_trial": 1}))
    plan = preflight(cfg, remote=True)
    assert plan.notes == ["data.path /data/on/the/cluster.csv is not on this machine: checked on the cluster"]


@pytest.mark.parametrize("content, says", [
    (b"\x00\x01binary\xff", "a binary file, not YAML text"),
    ("name: caf\xe9\n".encode("latin-1"), "line 1: not UTF-8 text (byte 0xe9)"),
    # A "billion laughs": nine levels of nine aliases. PyYAML alone took a minute and 3.5 GB.
    ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")), "YAML aliases"),
    (("[" * 100_000).encode(), "nested more than 100 levels deep"),
    ("".join(" " * i + "a:\n" for i in range(700)).encode(), "nested too deeply"),
    (b"name: x\n" + b"#" * (300 * 1024), "larger than 256 KiB"),
])
def test_hostile_yaml_is_one_line_well_under_a_second(tmp_path, content, says):
    path = tmp_path / "evil.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    start = time.process_time()
    result = run_cli("check", path)
    assert time.process_time() - start < 1.0
    assert result.exit_code == EXIT_BAD_INPUT
    assert error_lines(result) == [result.stderr.strip()] and says in result.stderr, result.stderr


def test_check_prints_the_grid_and_json(tmp_path):
    data = write_rows(tmp_path / "ok.csv", GOOD_ROWS)
    path = sweep_file(tmp_path, data, compare={"fraction": [0, 1, 5], "freeze": ["last-linear", "pooler"]})
    result = run_cli("check", path)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{path}: valid, 6 cells; {data}: train 20 (labeled 5, unlabeled 15), val 5"
    assert "  freeze    last-linear 3, pooler 3" in lines
    assert "  fraction  0 2, 1 2, 5 2" in lines
    # 5 x 5 labeled = 25 rows asked for, but the pool has 15: the whole pool, and check says so.
    assert "  rows added from real (pool 15, labeled 5): x0 0, x1 5, x5 15 (capped: the whole pool)" in lines

    # Cells already done in an output: one of them finished, one failed.
    cfg = load_sweep(path)
    ids = sweep.cell_ids(cfg, sweep.expand(cfg))
    cells = tmp_path / "out" / "cells"
    cells.mkdir(parents=True)
    (cells / f"{ids[0]}.json").write_text(json.dumps({"status": "ok"}))
    (cells / f"{ids[1]}.json").write_text(json.dumps({"status": "failed"}))
    result = run_cli("check", path, "--output", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["valid"] and doc["cells"] == 6 and doc["labeled"] == 5 and doc["pools"] == {"real": 15}
    assert doc["status"] == {"done": 1, "failed": 1, "running": 0, "pending": 4}
    assert doc["by"]["freeze"] == {"last-linear": {"cells": 3, "done": 1}, "pooler": {"cells": 3, "done": 0}}
    assert {"fraction": 5.0, "pool": "real", "rows": 15, "capped": True} in doc["fractions"]

    # The largest finite fraction is the whole pool too, not an overflow.
    huge = run_cli("check", path, "--set", "compare.fraction=[1e308]")
    assert huge.exit_code == 0 and "x1e+308 15 (capped: the whole pool)" in huge.output, huge.output

    bad = run_cli("check", path, "--json", "--set", "recipe.epochs=0")
    assert bad.exit_code == EXIT_BAD_INPUT
    assert json.loads(bad.output) == {"sweep": str(path), "valid": False,
                                      "problems": [f"{path}: recipe.epochs: must be at least 1"]}


def test_a_run_with_failed_cells_exits_non_zero_with_the_first_errors(tmp_path, monkeypatch):
    data = write_rows(tmp_path / "ok.csv", GOOD_ROWS)
    path = sweep_file(tmp_path, data)
    cfg = load_sweep(path)
    ids = sweep.cell_ids(cfg, sweep.expand(cfg))
    records = {ids[0]: CellRecord(ids[0], {}, metrics={"val_accuracy": 0.5}),
               ids[1]: CellRecord(ids[1], {}, "failed", error="ValueError: something broke")}

    def fake_run(cfg, output, **kwargs):  # what run_sweep returns: the table of trials.csv
        return sweep.results_table(sweep.expand(cfg), ids, records, cfg)

    monkeypatch.setattr(sweep, "run_sweep", fake_run)
    result = run_cli("run", path, "--output", tmp_path / "out")
    assert result.exit_code == 3
    assert "error: 1 of 2 cells failed; the first:" in result.stderr
    assert f"{ids[1]} (real random last-linear x1 seed 0): ValueError: something broke" in result.stderr


@pytest.mark.parametrize("name", sorted(p.name for p in SWEEPS.glob("*.yaml")))
def test_every_shipped_sweep_passes_the_preflight(name, monkeypatch):
    """Against a cluster big enough for any of them; only encoders not installed here may fail.
    (Each reads the bundled data and an encoder config: about half a second.)"""
    from raysweep import preflight as pf

    monkeypatch.setattr(pf, "capacity", lambda address: Capacity((NodeShape("big", 64, 8, running=1, max_count=1),), "test"))
    cfg = load_sweep(SWEEPS / name)
    try:
        plan = preflight(cfg, where=name)
    except PreflightError as exc:
        for problem in exc.problems:
            assert "missing package all-mpnet-base" in problem or "does not resolve offline" in problem, problem
    else:
        assert len(plan.cells) == len(sweep.expand(cfg))


@pytest.mark.parametrize("name", sorted(p.name for p in SWEEPS.glob("*.yaml")))
def test_every_shipped_sweep_loads(name):
    cfg = load_sweep(SWEEPS / name)
    assert cfg.name and sweep.expand(cfg)
