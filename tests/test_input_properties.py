"""Property tests: whatever a user writes or a model replies, the answer is a valid result or
one line per problem, never a traceback, and always within a second.

Example counts are modest so that `-m "not slow"` stays quick; `HYPOTHESIS_PROFILE=thorough`
runs many more."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import typing

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raysweep.config import ConfigError, SweepConfig, load_sweep
from raysweep.llm.parse import FAILURES, REPAIRS, parse_reply
from raysweep.llm.prompt import SST5_CLASS_NAMES
from raysweep.loader import apply_overrides

settings.register_profile("quick", max_examples=60, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("thorough", max_examples=2000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))

# A second is the promise. Measured as this process's CPU time: the wall clock of a machine
# shared with other test runs says more about them than about the code under test.
LIMIT_S = 1.0

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**20, max_value=10**400)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


def timed(fn, *args):
    start = time.process_time()
    result = fn(*args)
    elapsed = time.process_time() - start
    assert elapsed < LIMIT_S, f"took {elapsed:.2f} s of CPU"
    return result


# --------------------------------------------------------------------------- the reply parser


def check_reply(content) -> None:
    reply = timed(parse_reply, content, SST5_CLASS_NAMES)
    for text, label in reply.rows:
        assert isinstance(text, str) and text.strip() and 0 <= label < len(SST5_CLASS_NAMES)
    assert set(reply.repairs) <= set(REPAIRS)
    assert {kind for kind, _ in reply.failures} <= set(FAILURES)
    assert all(isinstance(detail, str) and len(detail) <= 200 for _, detail in reply.failures)


@given(st.text(max_size=400))
def test_any_text_parses_or_is_a_logged_failure(content):
    check_reply(content)


@given(values)
def test_any_json_value_as_a_reply(value):
    check_reply(json.dumps(value, allow_nan=True))
    check_reply(repr(value))  # Python-literal replies go through ast.literal_eval


@given(values)
def test_content_that_is_not_text(value):
    check_reply(value)  # a stored reply may hold a list of parts, a number, an object
    if not isinstance(value, str) and value is not None:
        assert [kind for kind, _ in parse_reply(value, SST5_CLASS_NAMES).failures] == ["not_text"]


@given(st.integers(min_value=1, max_value=60_000), st.sampled_from(["[", "{", "[{", '{"a": [']),
       st.booleans())
def test_deep_nesting(depth, opener, closed):
    body = opener * depth
    if closed:
        body += "]" * depth
    check_reply(f'prose {body} more prose')


# Numbers as digit strings: Python refuses to print an int of more than 4,300 digits at all.
numbers = (st.integers(min_value=1, max_value=8000).map(lambda n: "9" * n)
           | st.floats(allow_nan=False).map(repr) | st.sampled_from(["1e999", "-1e999", "NaN", "Infinity"]))


@given(numbers, st.text(max_size=20))
def test_huge_numbers_as_labels(number, text):
    check_reply(f'[["{json.dumps(text)[1:-1]} film", {number}]]')
    check_reply(f'[["a film", "{number}"]]')
    check_reply(f"[['a film', {number}]]")


@pytest.mark.parametrize("label, expected", [
    ("somewhat positive", 3), ("Somewhat  Negative", 1), ("VERY_positive", 4), ("very-negative.", 0),
    (" Neutral ", 2), ("positive", 3),
])
def test_label_names_from_the_data_and_the_study(label, expected):
    reply = parse_reply(json.dumps([["a fine film", label]]), SST5_CLASS_NAMES)
    assert reply.rows == [("a fine film", expected)]


def test_a_stored_reply_of_any_shape_cannot_stop_a_run():
    """What a later run does with the store: every record parsed, whatever it holds."""
    from raysweep.llm.generate import rows_from_store

    deep = "[" * 5000 + "]" * 5000
    records = {0: {"response": {"choices": [{"message": {"content": deep}}]}},
               1: {"response": {"choices": [{"message": {"content": [{"type": "text", "text": "x"}]}}]}},
               2: {"response": {"choices": [{"message": "not a mapping"}]}},
               3: {"response": None},
               4: {"response": {"choices": [{"message": {"content": '[["a good film", "somewhat positive"]]'}}]}}}
    state = rows_from_store(records, SST5_CLASS_NAMES, [], 0.8)
    assert state.kept["text"].tolist() == ["a good film"] and state.kept["llm_label"].tolist() == [3]
    assert state.failures == {"empty_reply": 2, "not_text": 1, "not_json": 1}


# --------------------------------------------------------------------------- the config loader


def key_paths(cls, prefix="") -> list[str]:
    """Every key a sweep file may set, nested sections included."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        out.append(path)
        if dataclasses.is_dataclass(hints[f.name]):
            out.extend(key_paths(hints[f.name], path + "."))
    return out


KEYS = key_paths(SweepConfig)


def test_every_section_is_covered():
    assert {"recipe.lr", "compare.fraction", "llm.limits.burst_seconds", "llm.prices", "resources.gpus_per_trial",
            "replicate.seed", "teacher.seed"} <= set(KEYS)


def nested(path: str, value) -> dict:
    doc: dict = {}
    node = doc
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return doc


def check_loaded(path, overrides=()) -> None:
    try:
        cfg = timed(load_sweep, path, list(overrides))
    except ConfigError as exc:
        lines = str(exc).splitlines()
        assert lines and all(line.startswith(f"{path}: ") or line.startswith("--set ") for line in lines), lines
        return
    assert isinstance(cfg, SweepConfig)


@given(key=st.sampled_from(KEYS), value=values)
def test_any_value_for_any_key(tmp_path_factory, key, value):
    path = tmp_path_factory.mktemp("sweep") / "sweep.yaml"
    try:
        text = yaml.safe_dump(nested(key, value), allow_unicode=True)
    except yaml.YAMLError:
        return  # a value YAML itself cannot write
    path.write_text(text, encoding="utf-8")
    check_loaded(path)


@given(key=st.sampled_from(KEYS), raw=st.text(max_size=60))
def test_any_set_override(tmp_path_factory, key, raw):
    path = tmp_path_factory.mktemp("sweep") / "sweep.yaml"
    path.write_text("name: x\n")
    check_loaded(path, [f"{key}={raw}"])


@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8")))
def test_any_file_content(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("sweep") / "sweep.yaml"
    path.write_bytes(content)
    check_loaded(path)


def test_overrides_parse_values_as_yaml_safely():
    data = apply_overrides({}, ["recipe.lr=1e-3", "compare.fraction=[0, 1]"])
    assert data == {"recipe": {"lr": 0.001}, "compare": {"fraction": [0, 1]}}
    with pytest.raises(ConfigError, match="YAML aliases"):
        apply_overrides({}, ["recipe.betas=[&a 0.9, *a]"])


# --------------------------------------------------------------------------- the preflight


PREFLIGHT_KEYS = ["compare.fraction", "selection.k", "encoder.max_length", "resources.cpus_per_trial",
                  "resources.gpus_per_trial", "split.labeled_fraction", "compare.strategy", "data.num_classes",
                  "llm.n_rows", "compare.pool"]
numbers_or_values = (st.integers(min_value=-5, max_value=10**12) | st.floats(min_value=-1e308, max_value=1e308)
                     | st.lists(st.floats(min_value=0, max_value=1e308) | st.integers(0, 10**9), min_size=1,
                                max_size=3, unique=True) | values)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    rows = [("train", f"sentence {c} {i}", c) for c in range(5) for i in range(6)] + \
           [("dev", f"dev sentence {c}", c) for c in range(5)]
    path = tmp_path_factory.mktemp("data") / "small.csv"
    path.write_text("split,text,label\n" + "".join(f"{s},{t},{label}\n" for s, t, label in rows))
    from transformers import AutoConfig  # noqa: F401 - imported once here, not inside the first timed example

    import raysweep.sweep  # noqa: F401
    return path


@settings(max_examples=40)
@given(key=st.sampled_from(PREFLIGHT_KEYS), value=numbers_or_values)
def test_the_preflight_answers_any_value_with_a_plan_or_lines(tmp_path_factory, small_data, key, value):
    from raysweep.errors import RaysweepError
    from raysweep.preflight import preflight

    path = tmp_path_factory.mktemp("sweep") / "sweep.yaml"
    doc = nested(key, value)
    doc.setdefault("data", {})["path"] = str(small_data)
    try:
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    except yaml.YAMLError:
        return
    try:
        cfg = load_sweep(path)
    except ConfigError:
        return  # the loader's answer, tested above
    try:
        plan = timed(lambda: preflight(cfg, where=str(path)))
    except RaysweepError as exc:
        assert all(line.strip() for line in str(exc).splitlines())
        return
    assert plan.lines(str(path))[0].startswith(f"{path}: valid, ")
    json.dumps(plan.to_json(str(path)))
