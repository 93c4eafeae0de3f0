"""Checks before any call (issue 30 items 4 and 6): `check`, `generate --dry-run` and `run`'s
preflight refuse a cap below one call, a store made with other settings and a missing embedded
LLM in one line, and the zero-row error names its real cause. No Ray, no call: the fake server
only proves that nothing reached it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from raysweep.augment import no_rows_error
from raysweep.cli import EXIT_BAD_INPUT, main
from raysweep.config import load_sweep
from raysweep.llm import server as server_module
from raysweep.preflight import PreflightError, preflight

PRICES = {"fake-model": {"prompt": 100.0, "completion": 150.0}}  # a 4096-token worst case: ~$0.65


def sweep(tmp_path: Path, pools=("real", "llm"), **llm) -> Path:
    doc = {"name": "t", "compare": {"pool": list(pools), "strategy": ["random"], "fraction": [1],
                                    "freeze": ["last-linear"]}, "replicate": {"seed": [0]},
           "llm": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "none", "model": "fake-model", "n_rows": 20,
                   "samples_per_call": 5, "max_tokens": 4096, "prices": PRICES, **llm}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def problems(path: Path, **kwargs) -> list[str]:
    with pytest.raises(PreflightError) as caught:
        preflight(load_sweep(path), **kwargs)
    return caught.value.problems


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_cap_below_one_call_is_refused_in_one_line_by_check_dry_run_and_run(tmp_path, fake_openai):
    server = fake_openai()
    path = sweep(tmp_path, base_url=server.base_url, max_cost_usd=0.1)
    said = r"llm.max_cost_usd: \$0.1 is below one call: \$0.1000 is left and the next call needs up to \$0\.6\d+ " \
           r"\(its prompt and max_tokens 4,096 at fake-model's price\); raise the cap or lower max_tokens \(for generation\)"
    for args in (["check", path], ["generate", path, "--output", tmp_path / "gen", "--dry-run"],
                 ["generate", path, "--output", tmp_path / "gen"], ["run", path, "--output", tmp_path / "out"]):
        result = run_cli(*args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == EXIT_BAD_INPUT and len(lines) == 1, (args, result.output)
        assert __import__("re").fullmatch(f"error: {path}: {said}", lines[0]), lines[0]
    assert server.arrivals == [] and not (tmp_path / "gen").exists()
    # A cap that pays for one whole call passes.
    assert preflight(load_sweep(sweep(tmp_path, max_cost_usd=0.7))).cells


def store(path: Path, setup: dict, completion_tokens: int = 80, cost: float = 0.01, n: int = 1) -> None:
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "responses.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"request_id": i, "setup": setup, "cost_usd": cost,
                                "usage": {"prompt_tokens": 300, "completion_tokens": completion_tokens}}) + "\n")


def generation_setup(path: Path) -> dict:
    """The setup a run would write for this sweep (read from the preflight's own refusal of an empty one)."""
    store(path.parent / "probe", {})
    found = problems(path, generation_dir=str(path.parent / "probe"))
    assert len(found) == 1 and "holds responses made with" in found[0]
    from raysweep.augment import examples_for
    from raysweep.data import load_splits
    from raysweep.llm.calls import choose_endpoint
    from raysweep.llm.generate import setup_for
    from raysweep.llm.prompt import DEFAULT_TEMPLATE

    cfg = load_sweep(path)
    return setup_for(cfg.llm, choose_endpoint(cfg.llm), DEFAULT_TEMPLATE,
                     examples_for(load_splits(cfg.data, cfg.split)), tuple(cfg.data.class_names))


def test_a_store_made_with_other_settings_is_refused_naming_every_difference(tmp_path):
    path = sweep(tmp_path)
    setup = generation_setup(path)
    store(tmp_path / "gen", {**setup, "max_tokens": 1024, "temperature": 0.2})
    (found,) = problems(path, generation_dir=str(tmp_path / "gen"))
    assert found.startswith(f"{tmp_path / 'gen' / 'responses.jsonl'}: holds responses made with max_tokens=1024 "
                            "(the config says 4096), temperature=0.2 (the config says 1.0); use another output")
    # Under a sweep's output (check --output, run): its generation directory.
    store(tmp_path / "out" / "generation", {**setup, "model": "gpt-4o-mini"})
    (found,) = problems(path, output=str(tmp_path / "out"))
    assert "holds responses made with model='gpt-4o-mini' (the config says 'fake-model')" in found
    store(tmp_path / "ok", setup)
    assert preflight(load_sweep(path), generation_dir=str(tmp_path / "ok")).cells  # the same settings pass


def test_with_stored_replies_the_cap_sizes_the_next_call_from_them_and_an_exhausted_cap_is_a_note(tmp_path):
    path = sweep(tmp_path, max_cost_usd=0.1)
    setup = generation_setup(path)
    # Stored replies of 80 tokens: the next call needs 100 (1.25 x), ~$0.05 with its prompt.
    store(tmp_path / "gen", setup, completion_tokens=80, cost=0.01)
    assert preflight(load_sweep(path), generation_dir=str(tmp_path / "gen")).notes == []
    store(tmp_path / "spent", setup, completion_tokens=80, cost=0.03, n=3)  # $0.09 of $0.1 paid
    plan = preflight(load_sweep(path), generation_dir=str(tmp_path / "spent"))
    (note,) = [n for n in plan.notes if "max_cost_usd" in n]
    assert note.startswith("llm.max_cost_usd: $0.1 is below one call: $0.0100 is left and the next call needs up to $0.")
    assert "a 100-token reply (1.25 x the longest stored)" in note
    assert note.endswith("generation makes no more calls and goes on with the 3 stored replies")


def test_a_cap_below_one_labeling_call_is_refused_for_the_llm_annotated_pool(tmp_path):
    path = sweep(tmp_path, pools=("real", "llm_annotated"), max_cost_usd=0.01,
                 annotate={"max_tokens": 512})
    (found,) = problems(path)
    assert "llm.max_cost_usd: $0.01 is below one call" in found and "max_tokens 512" in found
    assert found.endswith("(for LLM labeling)")


def test_a_missing_embedded_llm_is_refused_with_an_install_command_that_works_from_a_clone(tmp_path, monkeypatch):
    path = tmp_path / "sweep.yaml"
    doc = yaml.safe_load(sweep(tmp_path).read_text())
    doc["llm"] = {"api_key_env": "none", "n_rows": 20}  # no key, no base_url: the embedded server
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setattr(server_module.importlib.util, "find_spec",
                        lambda name: None if name == "llama_cpp" else object())
    (found,) = problems(path)
    root = Path(server_module.__file__).resolve().parents[3]
    assert found == (f"llm: no API key and no llm.base_url, and the embedded LLM server is not installed "
                     f"(missing llama_cpp): {server_module.sys.executable} -m pip install -e '{root}[llm-local]'")
    assert (root / "pyproject.toml").is_file() and "llm-local = [" in (root / "pyproject.toml").read_text()


def test_the_zero_row_error_names_the_budget_when_the_budget_stopped_it():
    s = {"stopped": "budget", "max_cost_usd": 0.1, "cost_usd": 0.0, "requests": 0, "parse_failures": {},
         "budget": {"cap_usd": 0.1, "spent_usd": 0.0, "peak_reserved_usd": 0.0,
                    "stop": {"need_usd": 0.65, "reply_tokens": 4096, "max_tokens": 4096, "longest_reply": 0,
                             "left_usd": 0.1}}}
    said = no_rows_error(Path("gen"), s)
    assert said == ("gen: no rows: generation stopped at llm.max_cost_usd ($0.1): $0.0000 spent, at most $0.0000 "
                    "reserved at once by the calls in flight; the next call needs $0.6500 (its prompt and a "
                    "4,096-token reply: its whole max_tokens: no reply seen yet) and $0.1000 is left; "
                    "raise llm.max_cost_usd")
    assert "parse_failures" not in said
    parsed = {"stopped": "no_progress", "requests": 4, "parse_failures": {"not_json": 4}, "rows_parsed": 0}
    assert no_rows_error(Path("gen"), parsed) == ("gen: the LLM produced no usable row in 4 replies (4 parse "
                                                  "failures: {'not_json': 4}); see parse_failures.jsonl there")


def test_a_library_run_below_one_call_starts_nothing_and_its_zero_row_error_names_the_budget(tmp_path, fake_openai):
    # The library path (no preflight): generation stops before Ray or any call, and says why.
    from raysweep.augment import GenerationDirError, run_generation

    server = fake_openai()
    cfg = load_sweep(sweep(tmp_path, base_url=server.base_url, max_cost_usd=0.1))
    with pytest.raises(GenerationDirError, match=r"gen: no rows: generation stopped at llm.max_cost_usd \(\$0.1\): "
                                                 r"\$0.0000 spent, .* the next call needs \$0\.6\d+ \(its prompt and a "
                                                 r"4,096-token reply: its whole max_tokens: no reply seen yet\) and "
                                                 r"\$0.1000 is left; raise llm.max_cost_usd$"):
        run_generation(cfg, tmp_path / "gen", tmp_path / "cache", use_ray=False, log=lambda *_: None)
    assert server.arrivals == [] and (tmp_path / "gen" / "parse_failures.jsonl").read_text() == ""
