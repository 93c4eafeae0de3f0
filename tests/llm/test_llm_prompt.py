"""The study's prompt: label meanings, real examples per class as JSON, N samples; per-call seeds."""

from __future__ import annotations

import json
import re

import pytest

from raysweep.config import ConfigError
from raysweep.llm.prompt import (DEFAULT_TEMPLATE, SST5_CLASS_NAMES, build_messages, check_examples,
                                 examples_digest, render)


def examples_in(text: str) -> list:
    line = next(ln for ln in text.splitlines() if ln.startswith("[["))
    return json.loads(line)


def test_the_default_prompt(examples):
    (message,) = build_messages(DEFAULT_TEMPLATE, 100, examples, 3, seed=0, request_id=7, class_names=SST5_CLASS_NAMES)
    text = message["content"]
    assert message["role"] == "user"
    for line in ["0: very negative", "1: negative", "2: neutral", "3: positive", "4: very positive"]:
        assert line in text.splitlines()
    shown = examples_in(text)
    assert [label for _, label in shown] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert all(text_ in set(examples["text"]) for text_, _ in shown)
    assert "Generate 100 new samples" in text and "JSON list of 100 [sentence, label] pairs" in text
    assert "$" not in text


def test_each_call_has_its_own_examples_and_the_same_ones_in_every_run(examples):
    def shown(seed, request_id):
        return examples_in(build_messages(DEFAULT_TEMPLATE, 5, examples, 3, seed, request_id, SST5_CLASS_NAMES)[0]["content"])

    assert shown(0, 1) == shown(0, 1)
    assert len({json.dumps(shown(0, i)) for i in range(10)}) > 5
    assert shown(1, 1) != shown(0, 1)


def test_a_class_with_fewer_examples_shows_what_it_has(examples):
    few = examples[(examples["label"] != 2) | (examples.index == 10)]
    shown = examples_in(build_messages(DEFAULT_TEMPLATE, 5, few, 3, 0, 0, SST5_CLASS_NAMES)[0]["content"])
    assert [label for _, label in shown].count(2) == 1


def test_a_custom_template():
    text = render("Labels:\n$labels\nShow: $examples\nWrite $n.", 7, [["a b", 1]], ("bad", "good"))
    assert text == 'Labels:\n0: bad\n1: good\nShow: [["a b", 1]]\nWrite 7.'
    with pytest.raises(ConfigError, match=re.escape("llm.template: bad placeholder 'foo' (known: $n, $examples, $labels)")):
        render("$n $examples $foo", 7, [], ("bad", "good"))


@pytest.mark.parametrize("columns,labels,message", [
    (["sentence", "label"], [0], "examples: missing column(s) text (need text, label)"),
    (["text", "label"], [], "examples: no rows to show the LLM"),
    (["text", "label"], [0, 7], "examples: label(s) [7] outside 0..4"),
])
def test_unusable_examples(columns, labels, message):
    import pandas as pd

    frame = pd.DataFrame({columns[0]: ["x"] * len(labels), columns[1]: labels})
    with pytest.raises(ValueError, match=re.escape(message)):
        check_examples(frame, 5)


def test_the_examples_digest_names_the_rows_not_their_order(examples):
    assert examples_digest(examples) == examples_digest(examples.iloc[::-1])
    relabeled = examples.assign(label=examples["label"].where(examples.index != 0, 4))
    assert examples_digest(relabeled) != examples_digest(examples)
