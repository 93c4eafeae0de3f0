"""Issue 32's hostile inputs: each shape is one line and a non-zero exit, no traceback, no input
file changed (tests/hostile.py holds the table; benchmarks/hostile_shapes.py times it)."""

from __future__ import annotations

import os
import stat
import string
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from hostile import SHAPES, digest_tree

from raysweep.cli import main
from raysweep.config import ConfigError, parse_freeze
from raysweep.errors import mask_values
from raysweep.loader import apply_overrides, parse_yaml, url_problem
from raysweep.llm.parse import parse_labels, parse_reply
from raysweep.llm.prompt import SST5_CLASS_NAMES

LOCAL = [s for s in SHAPES if s.local and not s.warns]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shape", LOCAL, ids=[s.name for s in LOCAL])
def test_each_hostile_shape_is_one_line_and_changes_no_input(shape, tmp_path, monkeypatch):
    if not shape.as_root and os.geteuid() == 0:
        pytest.skip("root writes through a mode of 0500: the shape cannot be made")
    monkeypatch.chdir(tmp_path)  # `-o ''` must not mean "here" (and must not write here if it did)
    monkeypatch.setenv("RAYSWEEP_HOME", str(tmp_path / ".home"))
    args = shape.build(tmp_path)
    before = digest_tree(tmp_path)
    try:
        result = CliRunner().invoke(main, args)
    finally:
        if (tmp_path / "ro").exists():
            (tmp_path / "ro").chmod(0o700)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("waiting for")]
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    assert not lines[0].startswith("error: unexpected"), lines[0]  # a bug's pointer is no answer
    assert shape.expect in lines[0], lines[0]
    after = digest_tree(tmp_path)
    assert {k: after.get(k) for k in before} == before  # no input changed or removed


def test_no_lock_file_or_output_is_left_by_a_refused_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [s for s in SHAPES if s.name == "inputs inside the output"][0].build(tmp_path)
    CliRunner().invoke(main, args)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sweep.yaml", "trials.csv"]


# --------------------------------------------------------------------------- the output directory


def test_a_second_run_into_one_output_is_refused_naming_the_first(tmp_path):
    from raysweep.storage import Output, OutputLock, StorageError

    out = Output(str(tmp_path / "out"))
    with OutputLock(out):
        with pytest.raises(StorageError, match=rf"another run is writing it \(pid {os.getpid()} on "):
            with OutputLock(Output(str(tmp_path / "out"))):
                pass
    with OutputLock(out):  # released: the next run may go
        pass


@pytest.mark.parametrize("name, text, ours", [
    ("sweep.yaml", "# my sweep\nname: x\n", False),
    ("sweep.yaml", "name: x\ncompare:\n  pool:\n  - real\n", True),  # what earlier versions wrote
    ("sweep.yaml", "# raysweep: the resolved sweep of this output, every default filled in; written by "
                   "`raysweep run`\nname: x\n", True),
    ("trials.csv", "split,text,label\ntrain,a,1\n", False),
    ("trials.csv", "cell_id,pool\nabc,real\n", True),
])
def test_only_files_raysweep_wrote_are_replaced(tmp_path, name, text, ours):
    from raysweep.storage import Output, StorageError, refuse_foreign_files

    (tmp_path / name).write_text(text)
    if ours:
        refuse_foreign_files(Output(str(tmp_path)))
    else:
        with pytest.raises(StorageError, match=f"{name}: not .*a run would replace it"):
            refuse_foreign_files(Output(str(tmp_path)))


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("text, says", [
    ("seed: [010]", "010 has a leading zero"),
    ("seed: 007", "007 has a leading zero"),
    ("a: 1\na: 2", "key 'a' appears twice"),
    ("recipe: {epochs: 1}\nrecipe: {epochs: 2}", "key 'recipe' appears twice"),
])
def test_yaml_read_silently_wrong_is_refused_with_its_line(text, says):
    with pytest.raises(ConfigError, match=says):
        parse_yaml(text, "s.yaml")


@pytest.mark.parametrize("text, value", [("a: 10", 10), ("a: 0", 0), ("a: -3", -3), ("a: 1_000", 1000),
                                         ("a: 1.5", 1.5), ("a: 1e-3", 0.001), ("a: 0x10", "0x10"), ("a: 1:30", "1:30")])
def test_plain_numbers_still_read_and_other_bases_stay_strings(text, value):
    assert parse_yaml(text, "s.yaml")["a"] == value


@pytest.mark.parametrize("item, says", [
    ("data.path=", "empty value"), ("data.path=  ", "empty value"), ("name=a\0b", "NUL byte"),
])
def test_overrides_refuse_empty_values_and_nul(item, says):
    with pytest.raises(ConfigError, match=says):
        apply_overrides({}, [item])


@pytest.mark.parametrize("url, says", [
    ("http://[::1", "is not a URL"), ("localhost:8000", "not an http(s) URL"), ("http://", "names no host"),
    ("http://h:99999/v1", "port"), ("http://h:x/v1", "port"), ("http://h /v1", "space"), ("ftp://h/", "not an http"),
    ("http://h:0/v1", "port 0"),
])
def test_each_malformed_url_has_its_own_line(url, says):
    assert says in url_problem(url)


@given(st.text(min_size=1, max_size=12))
def test_freeze_names_parse_or_refuse_never_raise_otherwise(name):
    try:
        top, pooler = parse_freeze(name)
    except ConfigError:
        return
    assert isinstance(top, int) and top >= 0


@pytest.mark.parametrize("name", ["top-²", "top-٣", "lora-r²-k1", "top-0", "top-01"])
def test_freeze_names_take_ascii_digits_only(name):
    with pytest.raises(ConfigError, match="is not a"):
        parse_freeze(name)


@given(st.text(max_size=20))
def test_any_override_value_is_a_value_or_one_config_error(raw):
    try:
        apply_overrides({}, [f"recipe.epochs={raw}"])
    except ConfigError as exc:
        assert str(exc)


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize("label, says", [
    ("true", "is a boolean"), ("False", "is a boolean"), ("٣", "ASCII digits only"), ("1_0", "ASCII digits only"),
    ("²", "ASCII digits only"), (" 2 ", None), ("3.0", None),
])
def test_labels_take_ascii_numbers_only(tmp_path, label, says):
    from raysweep.config import DataConfig, SplitConfig
    from raysweep.data import DataError, load_splits

    rows = "".join(f"train,row {i},{label if i == 0 else i % 5}\n" for i in range(50)) + "dev,x,1\ndev,y,2\n"
    (tmp_path / "d.csv").write_text("split,text,label\n" + rows)
    data = DataConfig(path=str(tmp_path / "d.csv"))
    if says is None:
        load_splits(data, SplitConfig())
    else:
        with pytest.raises(DataError, match=f"row 2: label .*{says}"):
            load_splits(data, SplitConfig())


def test_gaps_and_leaks_are_warned_not_hidden(tmp_path):
    from raysweep.config import DataConfig, SplitConfig
    from raysweep.data import load_splits

    rows = "".join(f"train,row number {i},{(0, 2, 4)[i % 3]}\n" for i in range(60))
    rows += "dev,row number 3,0\ndev,Row Number 4,2\ndev,a fresh one,4\n"
    (tmp_path / "d.csv").write_text("split,text,label\n" + rows)
    data = DataConfig(path=str(tmp_path / "d.csv"), num_classes=5)
    warnings = load_splits(data, SplitConfig()).warnings
    assert len(warnings) == 2
    assert "labels with gaps: classes 1, 3 of 0..4 have no row" in warnings[0]
    assert "leak: 2 of 3 dev rows repeat a train row's text" in warnings[1]


# --------------------------------------------------------------------------- masking


SENTINEL = "sk-raysweep-sentinel-0123456789abcdef"


@pytest.mark.parametrize("text, secrets, shown", [
    (f"Incorrect API key provided: Bearer {SENTINEL}", [], "Incorrect API key provided: Bearer ***"),
    (f"Incorrect API key provided: {SENTINEL[:12]}xyz0987654321", [], "Incorrect API key provided: ***"),
    ("GCS URIs do not accept username", ["user"], "GCS URIs do not accept username"),  # a value, never a word
    ("key=hunter2secret7 in url", ["hunter2secret7"], "key=*** in url"),
    ("Token authentication is enabled", [], "Token authentication is enabled"),
    ("Authorization: Bearer abc123def456", [], "Authorization: Bearer ***"),
])
def test_masking_replaces_values_never_words(text, secrets, shown):
    assert mask_values(text, secrets) == shown


def test_the_fail_line_is_masked(capsys, monkeypatch):
    from raysweep import cli
    from raysweep.errors import RaysweepError, remember_secret

    remember_secret("file-key-0123456789")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "env-secret-987654321")
    with pytest.raises(SystemExit) as info:
        cli._fail(RaysweepError("HTTP 401: Incorrect API key provided: file-key-0123456789 / env-secret-987654321"))
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: HTTP 401: Incorrect API key provided: *** / ***\n"


@pytest.mark.parametrize("content", ["-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END-----", "short", "two words here"])
def test_a_key_file_that_holds_no_single_key_is_refused_without_quoting_it(tmp_path, content):
    from raysweep.llm.config import ApiKeyError, KeyRoute

    path = tmp_path / "k"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ApiKeyError, match="does not hold one API key") as info:
        KeyRoute(file=str(path)).read()
    assert content.splitlines()[0] not in str(info.value)


# --------------------------------------------------------------------------- the reply parser


SHAPES_OF_REPLIES = ['[{(1, 2): 3}]', '[["\\ud800 good", 1]]', '[[1, {(1,2):3}]]', '{(1,): [["a", 1]]}',
                     '[["ok", {"a": [1, 2]}]]', '[["\\udfff", "\\ud800"]]', "[[b'x', 1]]", "[{1: 2, 'label': 1}]"]


@pytest.mark.parametrize("content", SHAPES_OF_REPLIES)
def test_known_poison_replies_are_parse_failures(content):
    reply = parse_reply(content, SST5_CLASS_NAMES)
    for text, _ in reply.rows:
        text.encode("utf-8")  # every kept row can be written
    parse_labels(content, 1, SST5_CLASS_NAMES)


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text() | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.one_of(st.text(max_size=5), st.integers(), st.tuples(st.integers())), inner, max_size=3),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_JSONISH)
def test_any_python_literal_reply_is_rows_or_failures_never_an_exception(value):
    content = repr(value)  # what ast.literal_eval reads back: tuple keys, bytes, lone surrogates included
    reply = parse_reply(content, SST5_CLASS_NAMES)
    for text, label in reply.rows:
        text.encode("utf-8")
        assert 0 <= label < len(SST5_CLASS_NAMES)
    labels = parse_labels(content, 2, SST5_CLASS_NAMES)
    assert labels.labels is None or len(labels.labels) == 2


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None), max_size=80) | st.text(alphabet=string.printable + "\\\"[]{}", max_size=80))
def test_any_text_reply_is_rows_or_failures_never_an_exception(content):
    parse_reply(content, SST5_CLASS_NAMES)
    parse_labels(content, 1, SST5_CLASS_NAMES)


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("make, says", [
    (lambda p: os.mkfifo(p), "a FIFO"),
    (lambda p: p.mkdir(), "a directory"),
    (lambda p: None, "no such file"),
])
def test_input_files_must_be_regular(tmp_path, make, says):
    from raysweep.files import InputFileError, regular_file

    path = tmp_path / "x.csv"
    make(path)
    with pytest.raises(InputFileError, match=says):
        regular_file(path, "data")


def test_a_device_and_a_sparse_giant_are_refused_by_stat(tmp_path):
    from raysweep.files import InputFileError, regular_file

    with pytest.raises(InputFileError, match="a character device"):
        regular_file("/dev/zero", "data")
    big = tmp_path / "big.csv"
    with open(big, "wb") as fh:
        fh.truncate(1 << 30)
    with pytest.raises(InputFileError, match="1,024 MiB, larger than 512 MiB"):
        regular_file(big, "data")
    assert stat.S_ISREG(os.stat(big).st_mode)


def test_a_gzip_bomb_is_refused_by_its_trailer(tmp_path):
    import gzip

    from raysweep.data import DataError, read_table

    path = tmp_path / "bomb.csv.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(b"split,text,label\n")
        chunk = b"\0" * (1 << 20)
        for _ in range(600):
            fh.write(chunk)
    assert path.stat().st_size < 5 << 20
    with pytest.raises(DataError, match="inflates to 600 MiB"):
        read_table(path)



# --------------------------------------------------------------------------- runs


def test_ctrl_c_exits_130_with_one_line_saying_what_is_kept(tmp_path, monkeypatch):
    from raysweep import sweep

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run_sweep", interrupted)
    monkeypatch.setenv("RAYSWEEP_HOME", str(tmp_path / ".home"))
    (tmp_path / "s.yaml").write_text("name: ctrlc\n")
    result = CliRunner().invoke(main, ["run", str(tmp_path / "s.yaml"), "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 130
    assert result.stderr.splitlines() == [f"interrupted: every finished cell is saved in {tmp_path / 'out'}/cells (the "
                                          "LLM's paid replies in its response store); the same command resumes from there"]



@given(st.text(max_size=40))
def test_any_url_text_is_a_problem_or_none_never_an_exception(text):
    for url in (text, f"http://{text}", f"https://h:{text}/v1"):
        problem = url_problem(url)
        assert problem is None or (problem and "\n" not in problem)


@given(st.one_of(st.text(max_size=12), st.booleans(), st.integers(), st.floats(), st.none()))
def test_any_label_value_is_a_number_or_one_data_error(label):
    from raysweep.data import DataError, _label_number

    try:
        value = _label_number(label, "d.csv", 2)
    except DataError as exc:
        assert str(exc).startswith("d.csv: row 2: label ")
    else:
        assert isinstance(value, float)
        if isinstance(label, str):
            assert label.strip().lstrip("+-").replace(".", "", 1).isascii()
