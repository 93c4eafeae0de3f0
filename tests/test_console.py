"""What the terminal shows and what the log file keeps (console.Session), without Ray."""

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from raysweep import console
from raysweep.cli import main


def run_session(tmp_path, verbosity, body, **kw):
    log = tmp_path / "logs" / "x.log"
    with console.Session(log, verbosity, **kw):
        body()
    return log.read_text()


def noisy():
    console.line("stage one done")
    print("Loading weights: 100%|####| 103/103")  # Python's stdout
    os.write(2, b"[2026-11-27 12:00:00,123 E 77 88] core_worker.cc:1: constructor arguments in the object store\n")
    os.write(1, b"Token authentication is enabled for this Ray cluster.\n")  # C-level stdout
    subprocess.run([sys.executable, "-c", "import sys; print('WARNING: the disk is full', file=sys.stderr)"])
    print("UserWarning: something new", file=sys.stderr)


def test_default_shows_stages_and_unexpected_warnings_only(tmp_path, capsys):
    text = run_session(tmp_path, console.DEFAULT, noisy)
    shown = capsys.readouterr().out.splitlines()
    assert shown == ["stage one done", "WARNING: the disk is full", "UserWarning: something new"]
    for line in ("stage one done", "Loading weights", "constructor arguments", "Token authentication",
                 "the disk is full", "something new"):
        assert line in text  # the log file holds everything


def test_token_line_is_shown_when_joining_a_cluster(tmp_path, capsys):
    run_session(tmp_path, console.DEFAULT, noisy, local=False)
    assert "Token authentication is enabled for this Ray cluster." in capsys.readouterr().out


def test_quiet_shows_nothing_and_verbose_everything(tmp_path, capsys):
    run_session(tmp_path, console.QUIET, noisy)
    assert capsys.readouterr().out == ""
    run_session(tmp_path, console.VERBOSE, noisy)
    shown = capsys.readouterr().out
    assert "Loading weights" in shown and "constructor arguments" in shown


def test_secrets_never_reach_the_log_or_the_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-abcdef123456")
    text = run_session(tmp_path, console.VERBOSE, lambda: (print("ERROR: key sk-proj-abcdef123456 refused"),
                                                           console.line("using sk-proj-abcdef123456")))
    shown = capsys.readouterr().out
    assert "sk-proj-abcdef123456" not in text + shown
    assert "ERROR: key *** refused" in text and "using ***" in shown
    assert oct((tmp_path / "logs" / "x.log").stat().st_mode & 0o777) == "0o600"


def test_progress_off_a_terminal_is_plain_periodic_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(console, "PLAIN_EVERY_S", 0.0)

    def work():
        with console.progress(3, "encoder pass") as bar:
            for _ in range(3):
                bar.update(1)

    run_session(tmp_path, console.DEFAULT, work)
    shown = capsys.readouterr().out.splitlines()
    assert shown == ["encoder pass: 1 of 3 rows (33%, 0 s)", "encoder pass: 2 of 3 rows (67%, 0 s)"]
    assert "\r" not in "".join(shown)

    def long_stage():  # 1,000 small steps: a line per PLAIN_STEP of the stage, not per step
        with console.progress(1000, "trials", "trials") as bar:
            for _ in range(1000):
                bar.update(1)

    run_session(tmp_path, console.DEFAULT, long_stage)
    assert len(capsys.readouterr().out.splitlines()) == 9  # 10%, 20%, ... 90%


def test_a_bar_s_detail_follows_its_count(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(console, "PLAIN_EVERY_S", 0.0)

    def work():
        with console.progress(3, "LLM calls", "calls") as bar:
            for k in range(3):
                bar.set_detail(f"rows {20 * k}/60, $0.0{k}")
                bar.update(1)

    run_session(tmp_path, console.DEFAULT, work)
    assert capsys.readouterr().out.splitlines() == ["LLM calls: 1 of 3 calls (33%, 0 s); rows 0/60, $0.00",
                                                    "LLM calls: 2 of 3 calls (67%, 0 s); rows 20/60, $0.01"]


def test_progress_without_a_session_does_nothing(capsys):
    with console.progress(5, "scoring the pool") as bar:
        bar.update(5)
    assert capsys.readouterr().out == ""


def test_version():
    out = CliRunner().invoke(main, ["--version"])
    assert out.exit_code == 0 and out.output.startswith("raysweep, version ")


def test_a_bug_prints_one_line_pointing_at_the_log(tmp_path, monkeypatch):
    from raysweep import sweep

    def boom(*a, **kw):
        print("some driver output")
        raise KeyError("cell")

    monkeypatch.setattr(sweep, "run_sweep", boom)
    (tmp_path / "s.yaml").write_text("name: bug\n")
    out = CliRunner().invoke(main, ["run", str(tmp_path / "s.yaml"), "--output", str(tmp_path / "out")])
    assert out.exit_code == 2
    first, last = out.output.strip().splitlines()
    logs = list((tmp_path / "out" / "logs").glob("run-bug-*.log"))
    assert len(logs) == 1 and str(logs[0]) in first
    assert last.startswith("error: unexpected KeyError: 'cell'; the traceback is in ") and str(logs[0]) in last
    text = logs[0].read_text()
    assert "Traceback" in text and "some driver output" in text


def test_bad_input_writes_nothing(tmp_path):
    (tmp_path / "s.yaml").write_text("recipe:\n  epochs: ten\n")
    out = CliRunner().invoke(main, ["run", str(tmp_path / "s.yaml"), "--output", str(tmp_path / "out"), "-q"])
    assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_verbose_and_quiet_exclude_each_other(tmp_path):
    (tmp_path / "s.yaml").write_text("name: x\n")
    out = CliRunner().invoke(main, ["run", str(tmp_path / "s.yaml"), "-o", str(tmp_path / "o"), "-v", "-q"])
    assert out.exit_code == 2 and "exclude each other" in out.output


@pytest.mark.parametrize("line, shown", [
    ("2026-11-27 12:00:00 WARNING raysweep.llm.generate: kept 80 of 100 rows", True),
    ("(_map_worker pid=1) FutureWarning: x", True),
    ("Traceback (most recent call last):", True),
    ("[2026-11-27 12:00:00,123 E 77 88] gcs_client.cc:9: lost", True),
    ("[2026-11-27 12:00:00,123 I 77 88] raylet.cc:9: started", False),
    ("Running Dataset: 3/8 blocks", False),
    ("Loading weights: 100%", False),
])
def test_what_counts_as_alarming(line, shown):
    assert console.alarming(line) == shown


def test_a_uri_output_gets_a_copy_of_the_log(tmp_path, monkeypatch):
    from raysweep import sweep

    monkeypatch.setenv("RAYSWEEP_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sweep, "run_sweep", lambda *a, log=print, **kw: log("a stage") or __import__("pandas").DataFrame())
    (tmp_path / "s.yaml").write_text("name: uri\n")
    out = CliRunner().invoke(main, ["run", str(tmp_path / "s.yaml"), "--output", f"file://{tmp_path}/out"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[1] == "a stage"
    copied = list((tmp_path / "out" / "logs").glob("run-uri-*.log"))
    assert len(copied) == 1 and "raysweep: a stage" in copied[0].read_text()
    assert f"file://{tmp_path}/out/logs/" in out.output.splitlines()[0]


def test_a_bar_survives_pickling_as_a_copy_that_draws_nothing(tmp_path, capsys, monkeypatch):
    import pickle

    monkeypatch.setattr(console, "PLAIN_EVERY_S", 0.0)

    def work():
        with console.progress(2, "trials", "trials") as bar:
            copy = pickle.loads(pickle.dumps(bar))  # what Tune does with its callbacks
            copy.update(1)
            bar.update(1)

    run_session(tmp_path, console.DEFAULT, work)
    assert capsys.readouterr().out.splitlines() == ["trials: 1 of 2 trials (50%, 0 s)"]


def test_the_closing_summary_is_an_aligned_table_in_plain_words_without_nan():
    import pandas as pd

    ok = pd.DataFrame({"strategy": ["random", "random", "entropy", "entropy", "entropy"],
                       "freeze": ["pooler"] * 5, "fraction": [0, 0, 1, 1, 0.5], "seed": [0, 1, 0, 1, 0],
                       "n_added": [0, 0, 1708, 1708, 854], "val_accuracy": [0.41, 0.43, 0.40, 0.38, 0.39]})
    lines = console.summary_table(ok, ["strategy", "freeze"], "val_accuracy", "validation accuracy")
    assert lines == [
        "strategy  freeze mode  rows added           validation accuracy  spread over seeds  seeds",
        "entropy   pooler       854 (0.5 x labeled)               0.3900           one seed      1",
        "entropy   pooler       1,708 (1 x labeled)               0.3900             0.0141      2",
        "random    pooler       none                              0.4200             0.0141      2",
    ]
    assert not any("nan" in line.lower() for line in lines)
