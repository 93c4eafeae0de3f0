"""Exact and near duplicates, and leaks into val: which row goes, and why."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from raysweep.llm.dedup import clean_rows, normalize, similar_pairs


def frame(texts, labels=None):
    labels = labels or [0] * len(texts)
    return pd.DataFrame({"text": texts, "llm_label": labels, "request_id": range(len(texts))})


def test_normalize_ignores_case_punctuation_and_spacing():
    assert normalize("It 's GREAT .") == normalize("It's great.") == "it s great"
    assert normalize("  ... ") == ""


def test_similar_pairs_uses_word_set_jaccard():
    texts = ["a b c d e", "a b c d f", "x y z", "e d c b a"]
    # J(0,1) = 4/6, J(0,3) = 1, J(1,3) = 4/6
    assert similar_pairs(texts, None, 0.6) == [(1, 0), (3, 0), (3, 1)]
    assert similar_pairs(texts, None, 0.7) == [(3, 0)]
    assert similar_pairs(texts, ["a b c d e f"], 0.8) == [(0, 0), (1, 0), (3, 0)]  # 5/6
    assert similar_pairs(texts, ["a b c d e f"], 0.9) == []
    assert similar_pairs([], None, 0.5) == [] and similar_pairs(texts, [], 0.5) == []


def test_leaks_then_exact_then_near_duplicates_first_occurrence_wins():
    rows = frame([
        "A warm, funny and touching story.",  # 0: exact leak of val[1]
        "the acting is wooden and the plot is so thin",  # 1: near leak of val[0] (7 of 8 distinct words)
        "a bold and original film",  # 2: kept
        "A bold and original film !",  # 3: exact duplicate of 2
        "a bold and very original film",  # 4: near duplicate of 2 (5/6)
        "nothing like the others at all",  # 5: kept
    ], labels=[4, 0, 3, 3, 4, 2])
    val = ["the acting is wooden and the plot is thin .", "a warm , funny and touching story ."]
    kept, removed = clean_rows(rows, val, threshold=0.8)
    assert kept["text"].tolist() == ["a bold and original film", "nothing like the others at all"]
    assert kept["llm_label"].tolist() == [3, 2]
    assert removed["reason"].tolist() == ["val_leak", "val_leak", "exact_duplicate", "near_duplicate"]
    assert removed["matches"].tolist() == [val[1], val[0], "a bold and original film", "a bold and original film"]
    assert removed["request_id"].tolist() == [0, 1, 3, 4]


def test_a_row_only_yields_to_rows_that_were_kept():
    # B is near A and removed; C is near B but not near A, so C stays.
    a, b, c = "w1 w2 w3 w4 w5 w6 w7 w8", "w1 w2 w3 w4 w5 w6 w7 w9", "w1 w2 w3 w4 w5 w6 x7 w9"
    kept, removed = clean_rows(frame([a, b, c]), [], threshold=0.75)
    assert similar_pairs([a, b, c], None, 0.75) == [(1, 0), (2, 1)]
    assert kept["text"].tolist() == [a, c]
    assert removed["reason"].tolist() == ["near_duplicate"]


def test_threshold_one_removes_only_the_same_words():
    kept, removed = clean_rows(frame(["not bad at all", "at all not bad", "not bad at all really"]), [], 1.0)
    assert kept["text"].tolist() == ["not bad at all", "not bad at all really"]
    assert removed["reason"].tolist() == ["near_duplicate"]


def test_nothing_to_clean_gives_empty_frames_with_the_columns():
    kept, removed = clean_rows(frame([]), ["a val sentence"], 0.8)
    assert len(kept) == 0 and len(removed) == 0
    assert {"reason", "matches"} <= set(removed.columns)


def test_thousands_of_sentences_against_val_take_well_under_seconds():
    rng = np.random.default_rng(0)
    vocab = np.array([f"w{i}" for i in range(3000)])
    texts = [" ".join(rng.choice(vocab, size=18)) for _ in range(5000)]
    val = [" ".join(rng.choice(vocab, size=18)) for _ in range(1100)]
    texts[4000] = texts[10]
    start = time.perf_counter()
    kept, removed = clean_rows(frame(texts), val, 0.8)
    assert time.perf_counter() - start < 10  # ~1-2 s here; a quadratic Python loop would take minutes
    assert removed["reason"].tolist() == ["exact_duplicate"] and len(kept) == 4999


# --------------------------------------------------------------------------- by meaning (cosine of sentence vectors)


def test_rows_that_mean_what_a_val_row_or_an_earlier_kept_row_means_are_removed():
    from raysweep.llm.dedup import remove_by_meaning

    # Hand-made sentence vectors: the words differ (Jaccard sees nothing), the directions do not.
    vectors = {"a dull film": [1, 0, 0], "a boring movie": [0.99, 0.14, 0], "the plot is thin": [0, 1, 0],
               "the story is slight": [0.05, 0.99, 0.1], "thin storytelling": [0, 0.98, 0.2],
               "a warm , funny story": [0, 0, 1], "a sweet comedy": [0.1, 0.1, 0.99]}
    embed = lambda texts: np.array([vectors[t] for t in texts], dtype=float)  # noqa: E731
    kept = frame(["a dull film", "the plot is thin", "a boring movie", "a sweet comedy", "the story is slight",
                  "thin storytelling"])
    out, removed = remove_by_meaning(kept, ["a warm , funny story"], embed, threshold=0.95)
    assert out["text"].tolist() == ["a dull film", "the plot is thin"]
    why = removed.set_index("text")
    assert why.loc["a boring movie", ["reason", "matches"]].tolist() == ["same_meaning", "a dull film"]
    assert why.loc["a sweet comedy", ["reason", "matches"]].tolist() == ["val_meaning", "a warm , funny story"]
    assert why.loc["the story is slight", "matches"] == why.loc["thin storytelling", "matches"] == "the plot is thin"
    assert (why["similarity"] >= 0.95).all()
    # Without it (threshold 1.0: only the same direction) every paraphrase stays.
    assert len(remove_by_meaning(kept, [], embed, threshold=1.0)[0]) == len(kept)
