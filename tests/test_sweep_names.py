"""A sweep's name is a directory of Tune's (<output>/tune/<name>) and of a URI output's generation
(~/.cache/raysweep/generation/<name>): a hostile name is refused in one line before anything
is written, so every file a sweep writes stays under its output, cache or generation directory.
(tests/llm/test_llm_keys.py runs a whole sweep and checks that nothing lands beside its output.)"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from raysweep.cli import main
from raysweep.config import ConfigError, load_sweep

HOSTILE = ["../../x", "/tmp/raysweep-escape", "a/b", "a\\b", "..", ".", "x..y", "", " ", "name with spaces",
           "tab\there", "nul\x00byte", "~", "$HOME", "ünïcode", "a" * 240]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_name_is_refused_in_one_line_before_any_work(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "s.yaml"
    sweep.write_text("compare: {fraction: [0]}\n")
    out = tmp_path / "out"
    # Through --set, as YAML: quoted so that every character arrives as written.
    value = name.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t").replace("\x00", "\\0")
    result = CliRunner().invoke(main, ["run", str(sweep), "--output", str(out), "--set", f'name="{value}"'])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "name: " in result.output
    assert ("is not a safe name" if "\0" not in name else "holds a NUL byte") in result.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_a_hostile_name_in_the_file_names_the_file_and_the_key(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: ../../x\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: name: '\.\./\.\./x' is not a safe name \(1 to 100 letters, digits, "
                                          r"'-', '_' and '\.'; no path separators, no '\.\.'\)$"):
        load_sweep(sweep)


@pytest.mark.parametrize("name", ["smoke", "llm-small", "v1.2_final", "A", "paper.2026-11-27"])
def test_ordinary_names_pass(name, tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: {name}\n")
    assert load_sweep(sweep).name == name
