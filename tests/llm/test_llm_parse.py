"""Every parsing case, exactly: what is recovered, what is repaired, what is dropped and why."""

from __future__ import annotations

import pytest

from raysweep.llm.parse import FAILURES, REPAIRS, failure_counts, parse_reply
from raysweep.llm.prompt import SST5_CLASS_NAMES as NAMES


def parsed(content):
    reply = parse_reply(content, NAMES)
    return reply.rows, dict(reply.repairs), [kind for kind, _ in reply.failures]


def test_a_clean_list_of_pairs():
    assert parsed('[["A great film.", 4], ["Dull and long.", 0]]') == (
        [("A great film.", 4), ("Dull and long.", 0)], {}, [])


@pytest.mark.parametrize("content", [
    '```json\n[["a b", 1], ["c d", 2]]\n```',
    '```\n[["a b", 1], ["c d", 2]]\n```',
    'Sure! Here they are:\n```JSON\n[["a b", 1], ["c d", 2]]\n```\nHope that helps.',
])
def test_code_fences(content):
    assert parsed(content) == ([("a b", 1), ("c d", 2)], {"code_fence": 1}, [])


def test_a_raw_newline_inside_a_sentence():
    # As SmolLM2 wrote it under llama.cpp's JSON grammar: strict JSON refuses the newline.
    assert parsed('[["a b\nc d", 1], ["e f", 2]]') == ([("a b c d", 1), ("e f", 2)], {"control_character": 1}, [])


def test_prose_around_the_json():
    assert parsed('Here are 2 samples:\n[["a b", 1], ["c d", 2]]\nLet me know!') == (
        [("a b", 1), ("c d", 2)], {"prose": 1}, [])


def test_trailing_commas_but_not_commas_inside_sentences():
    assert parsed('[["so, ] odd", 1], ["c d", 2],]') == (
        [("so, ] odd", 1), ("c d", 2)], {"trailing_comma": 1}, [])
    assert parsed('[{"sentence": "a b", "label": 3,}]') == (
        [("a b", 3)], {"trailing_comma": 1, "dict_item": 1}, [])


def test_a_reply_cut_off_at_max_tokens_keeps_its_complete_items():
    rows, repairs, failures = parsed('[["a b", 1], ["c d", 2], ["e f')
    assert (rows, repairs, failures) == ([("a b", 1), ("c d", 2)], {"truncated": 1}, ["truncated_item"])
    reply = parse_reply('[["a b", 1], ["c d", 2], ["e f', NAMES)
    assert reply.failures == [("truncated_item", '["e f')]


def test_a_cut_right_after_an_item_loses_nothing():
    assert parsed('[["a b", 1], ["c d", 2],') == ([("a b", 1), ("c d", 2)], {"truncated": 1}, [])


def test_a_cut_inside_a_wrapping_object():
    assert parsed('{"samples": [["a b", 1], ["c d", 2], ["e') == (
        [("a b", 1), ("c d", 2)], {"truncated": 1, "wrapped": 1}, ["truncated_item"])


def test_a_cut_before_any_complete_item_gives_nothing():
    assert parsed('[["a b') == ([], {}, ["truncated_item"])


def test_dicts_instead_of_pairs_with_any_usual_key_names():
    content = ('[{"sentence": "a b", "label": 3}, {"Text": "c d", "Sentiment": "negative"},'
               ' {"review": "e f", "score": 0}, {"words": "g h", "label": 1}]')
    rows, repairs, failures = parsed(content)
    assert rows == [("a b", 3), ("c d", 1), ("e f", 0)]
    assert repairs == {"dict_item": 3, "label_name": 1}
    assert failures == ["bad_item"]  # no sentence key


def test_one_sample_as_an_object():
    assert parsed('{"sentence": "a b", "label": 2}') == ([("a b", 2)], {"dict_item": 1}, [])


def test_a_list_wrapped_in_an_object():
    assert parsed('{"samples": [["a b", 1]]}') == ([("a b", 1)], {"wrapped": 1}, [])


def test_label_names_instead_of_numbers():
    content = '[["a b", "very positive"], ["c d", "Very_Negative"], ["e f", "NEUTRAL"], ["g h", " positive "]]'
    assert parsed(content) == ([("a b", 4), ("c d", 0), ("e f", 2), ("g h", 3)], {"label_name": 4}, [])


def test_labels_written_as_strings_floats_or_with_a_gloss():
    content = '[["a b", "3"], ["c d", 1.0], ["e f", "4 (very positive)"]]'
    assert parsed(content) == ([("a b", 3), ("c d", 1), ("e f", 4)], {"label_format": 3}, [])


def test_out_of_range_and_unreadable_labels_are_dropped():
    content = '[["a b", 5], ["c d", -1], ["e f", "great"], ["g h", null], ["i j", true], ["k l", 2.5], ["m n", 2]]'
    rows, repairs, failures = parsed(content)
    assert rows == [("m n", 2)]
    assert repairs == {}
    assert failures == ["label_out_of_range", "label_out_of_range", "bad_label", "bad_label", "bad_label", "bad_label"]


@pytest.mark.parametrize("content", [None, "", "   \n\t "])
def test_empty_replies(content):
    assert parsed(content) == ([], {}, ["empty_reply"])


@pytest.mark.parametrize("content", ["I'm sorry, I can't help with that.", "[this is not json]"])
def test_replies_with_no_json(content):
    assert parsed(content) == ([], {}, ["not_json"])


def test_json_without_a_list():
    assert parsed('{"note": "no samples today"}') == ([], {}, ["no_list"])


def test_python_syntax_instead_of_json():
    assert parsed("[('a b', 1), ('it\\'s c', 2)]") == ([("a b", 1), ("it's c", 2)], {"python_literal": 1}, [])


def test_a_single_pair_and_a_swapped_pair():
    assert parsed('["a b", 2]') == ([("a b", 2)], {"single_pair": 1}, [])
    assert parsed('[[3, "a b"], ["c d", 1]]') == ([("a b", 3), ("c d", 1)], {"swapped_pair": 1}, [])


def test_malformed_items_and_empty_sentences():
    content = '[["a"], "just text", 7, ["a", 1, 2], ["", 1], ["...", 2], ["  spaced   out  ", 3]]'
    rows, repairs, failures = parsed(content)
    assert rows == [("spaced out", 3)]
    assert failures == ["bad_item", "bad_item", "bad_item", "bad_item", "empty_text", "empty_text"]


def test_counts_over_replies_come_in_a_fixed_order_and_every_kind_is_documented():
    replies = [parse_reply(c, NAMES) for c in ['```\n[["a b", "x"], ["c d", 9]]\n```', "", '[["e f", 1],']]
    repairs, failures = failure_counts(replies)
    assert repairs == {"code_fence": 1, "truncated": 1}
    assert list(failures.items()) == [("empty_reply", 1), ("bad_label", 1), ("label_out_of_range", 1)]
    assert set(repairs) <= set(REPAIRS) and set(failures) <= set(FAILURES)


def test_labels_follow_the_class_names_given():
    reply = parse_reply('[["a b", "bad"], ["c d", "good"], ["e f", 2]]', ("bad", "good"))
    assert reply.rows == [("a b", 0), ("c d", 1)]
    assert [kind for kind, _ in reply.failures] == ["label_out_of_range"]
