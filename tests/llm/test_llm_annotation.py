"""The LLM as annotator (pool `llm_annotated`): prompt, parsing, store and resume, cell ids."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from raysweep import annotation as annotate, grid, status
from raysweep import inputs, pools, sweep
from raysweep.config import RecipeConfig, load_sweep
from raysweep.llm.fake_server import Reply
from raysweep.llm.generate import GenerationError
from raysweep.llm.parse import parse_labels
from raysweep.llm.prompt import build_label_messages, build_messages, sentences_in

NAMES = ("very negative", "negative", "neutral", "positive", "very positive")


# --------------------------------------------------------------------------- prompt and replies, no Ray


def test_a_labeling_prompt_carries_its_sentences_and_the_few_shot_examples(examples):
    texts = ['it is "fine" , i guess .', "a dull , dull film", "ünïcode ok"]
    messages = build_label_messages(texts, examples, 1, seed=0, request_id=7, class_names=NAMES)
    content = messages[0]["content"]
    assert sentences_in(content) == texts
    assert "exactly 3 labels" in content and "from 0 to 4" in content and "4: very positive" in content
    shown = [line for line in content.splitlines() if line.startswith('[["')][0]
    assert len(json.loads(shown)) == 5  # one example per class
    # The same call asks the same question in every run; a generation prompt is no labeling prompt.
    assert build_label_messages(texts, examples, 1, 0, 7, NAMES) == messages
    assert sentences_in(build_messages("$n $examples", 3, examples, 1, 0, 7, NAMES)[0]["content"]) is None


@pytest.mark.parametrize("content, labels, repair", [
    ("[0, 4, 2]", [0, 4, 2], None),
    ("```json\n[0, 4, 2,]\n```", [0, 4, 2], "code_fence"),
    ('Sure! {"labels": [0, "very positive", "2"]}', [0, 4, 2], "label_name"),
    ('[{"label": 1}, ["a film", 3], 2.0]', [1, 3, 2], "label_format"),
])
def test_labels_are_read_from_what_models_send(content, labels, repair):
    parsed = parse_labels(content, 3, NAMES)
    assert parsed.labels == labels and parsed.failure is None
    assert repair is None or parsed.repairs[repair] >= 1


@pytest.mark.parametrize("content, failure", [
    ("[0, 4]", "wrong_count"), ("[0, 4, 2, 1]", "wrong_count"), ("[0, 9, 2]", "label_out_of_range"),
    ("[0, \"great\", 2]", "bad_label"), ("no idea", "not_json"), ("", "empty_reply"), ('{"a": 1}', "no_list"),
])
def test_a_reply_that_cannot_label_every_sentence_labels_none(content, failure):
    # With one label missing, every later one could belong to another sentence: none is used.
    assert parse_labels(content, 3, NAMES).labels is None
    assert parse_labels(content, 3, NAMES).failure == failure


# --------------------------------------------------------------------------- cell ids, inputs, no Ray


def _grid(tmp_path):
    (tmp_path / "s.yaml").write_text("name: x\ncompare: {pool: [real, llm_annotated], fraction: [0, 1], "
                                     "freeze: [pooler], strategy: [random, entropy]}\nreplicate: {seed: [0]}\n")
    cfg = load_sweep(tmp_path / "s.yaml")
    return cfg, sweep.expand(cfg)


def test_annotated_cells_are_keyed_by_their_labels_and_real_cells_are_not(tmp_path):
    cfg, cells = _grid(tmp_path)
    assert cfg.needs_annotation and not cfg.needs_generation
    annotated = [i for i, c in enumerate(cells) if c.pool == "llm_annotated"]
    real = [i for i, c in enumerate(cells) if c.pool == "real"]
    a = sweep.cell_ids(cfg, cells, None, [f"labels-a{i}" if i in annotated else None for i in range(len(cells))])
    b = sweep.cell_ids(cfg, cells, None, [f"labels-b{i}" if i in annotated else None for i in range(len(cells))])
    fixed = grid.fixed_digest(cfg)
    assert [a[i] for i in real] == [b[i] for i in real] == [
        grid.cell_id(cells[i], fixed, grid.selection_settings(cells[i].strategy, cfg.selection)) for i in real]
    assert all(a[i] != b[i] for i in annotated)
    # The digest covers the rows and each LLM label: one label changed is another cell.
    rows = np.array([5, 2, 9])
    assert annotate.labels_digest(rows, {2: 1, 5: 0, 9: 4}) == annotate.labels_digest(np.sort(rows), {2: 1, 5: 0, 9: 4})
    assert annotate.labels_digest(rows, {2: 1, 5: 0, 9: 4}) != annotate.labels_digest(rows, {2: 1, 5: 0, 9: 3})
    # Until its rows are labeled, no annotated cell counts as done.
    assert status.cell_progress(cfg, tmp_path / "out")["pending"] == len(cells)


def test_an_annotated_trial_chooses_with_gold_labels_and_trains_on_the_llms(monkeypatch, tmp_path):
    monkeypatch.setattr(inputs, "_activations", lambda path: path)
    pd.DataFrame({"row": [3, 5], "text": ["c", "e"], "gold": [3, 0], "llm_label": [1, 2],
                  "request_id": [0, 0]}).to_csv(tmp_path / annotate.LABELS, index=False)
    gold = np.array([0, 1, 2, 3, 4, 0])
    variant = grid.Cell("real", "random", 1.0, "pooler", 0, "m").variant
    context = inputs.TrialContext(train_labels=gold, val_labels=np.array([1]), labeled=np.array([0, 2]),
                                 pool_rows=np.array([1, 3, 4, 5]), num_classes=5,
                                  artifacts={variant: ("train", "val")}, recipe=RecipeConfig())
    context.annotated_labels = annotate.trial_labels(tmp_path, gold, context.pool_rows)
    inp = inputs.trial_inputs(context, variant, "llm_annotated")
    real = inputs.trial_inputs(context, variant)
    assert inp.train_acts == real.train_acts == "train" and inp.pool_rows.tolist() == real.pool_rows.tolist()
    assert inp.select_labels.tolist() == real.train_labels.tolist() == gold.tolist() and real.select_labels is None
    # labeled rows keep gold, labeled-by-LLM rows get its label, the rest of the pool none at all
    assert inp.train_labels.tolist() == [0, -1, 2, 1, -1, 2]
    assert pools.get("llm_annotated").rows(context, variant).artifacts == ("train", "val")  # the real rows' entries


# --------------------------------------------------------------------------- labeling against the fake server


def _cfg(tmp_path, base_url, **annotate_opts):
    opts = {"rows_per_call": 5, "examples_per_class": 1, **annotate_opts}
    (tmp_path / "a.yaml").write_text(json.dumps({
        "name": "a", "compare": {"pool": ["llm_annotated"]},
        "llm": {"base_url": base_url, "api_key_env": "none", "model": "fake-model", "concurrency": 1,
                "retries": 0, "retry_backoff": 0.01, "timeout": 10, "annotate": opts,
                "prices": {"fake-model": {"prompt": 1.0, "completion": 2.0}}}}))
    return load_sweep(tmp_path / "a.yaml")


@pytest.mark.slow
def test_rows_are_labeled_once_stored_and_resumed_without_paying_twice(ray_local, fake_openai, examples, tmp_path):
    texts = [f"sentence number {i} about a film ." for i in range(14)]
    gold = np.arange(14) % 5
    # The fake annotator is right except on rows 0 and 7 (gold 0 and 2), which it calls 4.
    truth = {t: (4 if i in (0, 7) else int(gold[i])) for i, t in enumerate(texts)}
    rows = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13])
    ann = tmp_path / "ann"

    # Call 0 answers with two labels for five sentences (its rows are asked again later); call 1
    # is refused outright, which stops the run with the replies paid so far in the store.
    broken = fake_openai(labeler=truth.get, script=[Reply(rows=2), Reply(status=400)])
    with pytest.raises(GenerationError, match="HTTP 400.*paid replies are safe"):
        annotate.label_rows(_cfg(tmp_path, broken.base_url), rows, texts, gold, examples, ann, say=lambda *_: None)
    stored = [json.loads(line) for line in (ann / "responses.jsonl").read_text().splitlines()]
    assert [r["rows"] for r in stored] == [[0, 1, 2, 3, 4]]

    server = fake_openai(labeler=lambda t: truth.get(t, 1))
    result = annotate.label_rows(_cfg(tmp_path, server.base_url), rows, texts, gold, examples, ann,
                                 say=lambda *_: None)
    asked = _asked(server)
    # Only what had no label (every row: call 0's reply labeled none of its rows), in new calls.
    assert sorted(t for call in asked for t in call) == sorted(texts)
    assert len(asked) == 3 and all(len(call) <= 5 for call in asked)
    table = pd.read_csv(ann / annotate.LABELS, keep_default_na=False)
    assert table["row"].tolist() == rows.tolist() and table["llm_label"].tolist() == [truth[t] for t in texts]
    s = result.summary
    assert s["rows_labeled"] == 14 and s["requests"] == 4 and s["resumed_from"] == 1 and s["requests_this_run"] == 3
    assert s["replies_unreadable"] == {"wrong_count": 1}
    assert s["accuracy"] == pytest.approx(12 / 14)
    assert s["per_class_accuracy"]["very negative"] == pytest.approx(2 / 3)  # rows 0, 5, 10: row 0 wrong
    assert s["per_class_accuracy"]["neutral"] == pytest.approx(2 / 3)  # rows 2, 7, 12: row 7 wrong
    assert s["per_class_accuracy"]["negative"] == 1.0
    assert np.array(s["confusion_gold_by_llm"])[0, 4] == 1 and np.trace(np.array(s["confusion_gold_by_llm"])) == 12
    assert s["cost_usd_per_labeled_row"] == pytest.approx(s["cost_usd"] / 14) and s["cost_usd"] > 0

    # Labeled means labeled: no call, and a larger set asks for the new rows only.
    calls = len(server.arrivals)
    again = annotate.label_rows(_cfg(tmp_path, server.base_url), rows, texts, gold, examples, ann,
                                say=lambda *_: None)
    assert len(server.arrivals) == calls and again.labels.equals(result.labels)
    more = texts + ["one more sentence ."]
    annotate.label_rows(_cfg(tmp_path, server.base_url), np.arange(15), more, np.append(gold, 1), examples, ann,
                        say=lambda *_: None)
    assert _asked(server)[3:] == [[more[14]]]

    # A store made for other sentences (another data file) is refused in one line.
    other = [t.upper() for t in texts]
    with pytest.raises(GenerationError, match="labeled other sentences"):
        annotate.label_rows(_cfg(tmp_path, server.base_url), rows, other, gold, examples, ann, say=lambda *_: None)


def _asked(server) -> list[list[str]]:
    """The sentences of each labeling call the server answered, in order."""
    return [sentences_in(a["request"]["messages"][0]["content"]) for a in server.served()]


@pytest.mark.slow
def test_a_row_no_reply_labels_stops_the_run_after_its_attempts(ray_local, fake_openai, examples, tmp_path):
    server = fake_openai(default=Reply(content="I cannot label these."))
    cfg = _cfg(tmp_path, server.base_url, attempts=2)
    with pytest.raises(GenerationError, match=r"3 chosen row\(s\) still have no label after 2 call\(s\) each.*"
                                              r"not_json"):
        annotate.label_rows(cfg, np.arange(3), ["a", "b", "c"], np.zeros(3, dtype=int), examples, tmp_path / "ann",
                            say=lambda *_: None)
    assert len(server.arrivals) == 2


@pytest.mark.slow  # starts Ray (shared ray_local): the annotation path of the budget on actors
def test_labeling_under_a_cap_spends_it_never_past_it_and_says_what_stopped_it(ray_local, fake_openai, examples,
                                                                                tmp_path):
    server = fake_openai(labeler=lambda t: 1)
    texts = [f"sentence number {i} about a film ." for i in range(50)]
    cfg = _cfg(tmp_path, server.base_url, max_tokens=512)
    cfg.llm.max_cost_usd, cfg.llm.concurrency = 1.5, 2
    cfg.llm.prices["fake-model"].prompt, cfg.llm.prices["fake-model"].completion = 1000.0, 2000.0
    with pytest.raises(GenerationError, match=r"^labeling stopped at llm.max_cost_usd \(\$1.5\): \$1\.\d+ spent, at "
                                              r"most \$\d\.\d+ reserved at once by the calls in flight; the next call "
                                              r"needs \$0\.\d+ \(its prompt and a \d+-token reply: 1.25 x the longest "
                                              r"reply so far, \d+ tokens\) and \$0\.\d+ is left with \d+ of 50 chosen"):
        annotate.label_rows(cfg, np.arange(50), texts, np.ones(50, dtype=int), examples, tmp_path / "ann",
                            say=lambda *_: None)
    billed = sum(a["tokens"] for a in server.served())  # prompt and completion tokens
    stored = [json.loads(line) for line in (tmp_path / "ann" / "responses.jsonl").read_text().splitlines()]
    spent = sum(r["cost_usd"] for r in stored)
    assert 2 <= len(stored) == len(server.served()) < 10 and 0.8 * 1.5 <= spent <= 1.5 and billed > 0
