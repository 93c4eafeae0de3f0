"""Duplicates and leakage: the same sentence twice is one sentence, and a sentence in `val` is a leak.

Two sentences are *exact* duplicates when they have the same words in the same order, ignoring
case and punctuation (SST's "it 's great ." and an LLM's "It's great." are one sentence). They
are *near* duplicates when their word sets overlap with Jaccard similarity >= `threshold`
(0.8: at most one word in ten differs). The first occurrence is kept.

A generated sentence that is an exact or near duplicate of a `val` sentence would let the
augmented model be scored on what it was trained on, so it is removed and listed as a leak.

Pairs are found with one sparse product of binary word matrices per chunk of rows, so a few
thousand generated sentences against SST-5's 1,101 dev sentences take well under a second.

Word sets miss paraphrases ("a dull film" / "a boring movie"). `remove_by_meaning` also
removes, when asked (llm.cosine_duplicate), sentences whose vectors from the sweep's own frozen
encoder have cosine similarity >= the threshold with a val sentence (`val_meaning`) or with an
earlier kept generated sentence (`same_meaning`); removed.csv gives the rule and the similarity.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Callable

import numpy as np
import pandas as pd

_WORD = re.compile(r"[a-z0-9]+")


def normalize(text: str) -> str:
    """Lower-case words in order, punctuation and spacing dropped: the key of an exact duplicate."""
    return " ".join(_WORD.findall(text.lower()))


def _word_matrices(*groups: list[str]):
    # Imported here: parse.py needs `normalize`, and the trial path (sweep -> llm.annotate -> parse)
    # stays free of scikit-learn's import time (tests/test_metrics.py).
    from sklearn.feature_extraction.text import CountVectorizer

    vectorizer = CountVectorizer(binary=True, lowercase=False, token_pattern=None, tokenizer=str.split)
    vectorizer.fit([normalize(t) for g in groups for t in g])
    return [vectorizer.transform([normalize(t) for t in g]).tocsr().astype(np.int32) for g in groups]


def similar_pairs(texts: list[str], others: list[str] | None, threshold: float,
                  chunk: int = 512) -> list[tuple[int, int]]:
    """(i, j) with Jaccard(words of texts[i], words of others[j]) >= threshold.

    With `others` None, pairs within `texts` with j < i (each earlier sentence i resembles).
    """
    same = others is None
    if not texts or (not same and not others):
        return []
    if same:
        (a,) = _word_matrices(texts)
        b = a
    else:
        a, b = _word_matrices(texts, others)
    size_a = np.asarray(a.sum(axis=1)).ravel()
    size_b = np.asarray(b.sum(axis=1)).ravel()
    bt = b.T.tocsc()
    pairs = []
    for start in range(0, a.shape[0], chunk):
        shared = (a[start:start + chunk] @ bt).tocoo()  # words in common, only for pairs with any
        i = shared.row + start
        j = shared.col
        union = size_a[i] + size_b[j] - shared.data
        keep = shared.data >= threshold * union - 1e-9
        if same:
            keep &= j < i
        pairs.extend(zip(i[keep].tolist(), j[keep].tolist(), strict=True))
    pairs.sort()
    return pairs


def clean_rows(rows: pd.DataFrame, val_texts: list[str], threshold: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop val leaks, then exact duplicates, then near duplicates; first occurrence wins.

    Returns (kept rows, removed rows with `reason` and `matches`: the val sentence or the
    earlier kept sentence each one was removed for).
    """
    texts = rows["text"].tolist()
    reason: list[str | None] = [None] * len(texts)
    matches: list[str | None] = [None] * len(texts)

    val_keys = {normalize(t): t for t in val_texts}
    for i, text in enumerate(texts):
        if normalize(text) in val_keys:
            reason[i], matches[i] = "val_leak", val_keys[normalize(text)]
    for i, j in similar_pairs(texts, list(val_texts), threshold):
        if reason[i] is None:
            reason[i], matches[i] = "val_leak", val_texts[j]

    first: dict[str, int] = {}
    for i, text in enumerate(texts):
        if reason[i] is not None:
            continue
        key = normalize(text)
        if key in first:
            reason[i], matches[i] = "exact_duplicate", texts[first[key]]
        else:
            first[key] = i

    earlier = defaultdict(list)
    for i, j in similar_pairs(texts, None, threshold):
        earlier[i].append(j)
    for i in range(len(texts)):  # in order, so a row only yields to rows that were themselves kept
        if reason[i] is not None:
            continue
        kept_match = next((j for j in earlier[i] if reason[j] is None), None)
        if kept_match is not None:
            reason[i], matches[i] = "near_duplicate", texts[kept_match]

    reason_s = pd.Series(reason, index=rows.index, dtype=object)
    kept = rows[reason_s.isna()].reset_index(drop=True)
    removed = rows[reason_s.notna()].assign(reason=reason_s[reason_s.notna()],
                                            matches=pd.Series(matches, index=rows.index)[reason_s.notna()])
    return kept, removed.reset_index(drop=True)


def remove_by_meaning(kept: pd.DataFrame, val_texts: list[str], embed: Callable[[list[str]], np.ndarray],
                      threshold: float, chunk: int = 512) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop rows of `kept` (after `clean_rows`) that mean what a val sentence or an earlier kept
    row means: cosine similarity of `embed`'s vectors >= `threshold`; first occurrence wins.

    Returns (kept rows, removed rows with `reason` val_meaning / same_meaning, `matches` and
    `similarity`). `embed(texts)` gives one vector per text (the caller memoises it: a run
    calls this after every round of calls, on every row so far)."""
    texts = kept["text"].astype(str).tolist()
    if not texts:
        return kept, kept.assign(reason=[], matches=[], similarity=[])
    unit = _unit(embed(texts))
    reason: list[str | None] = [None] * len(texts)
    matches: list[str | None] = [None] * len(texts)
    similarity = np.full(len(texts), np.nan)
    if val_texts:
        val_unit = _unit(embed(list(val_texts)))
        for start in range(0, len(texts), chunk):
            sims = unit[start:start + chunk] @ val_unit.T
            best = sims.argmax(axis=1)
            for k, (j, value) in enumerate(zip(best, sims[np.arange(len(best)), best])):
                if value >= threshold:
                    i = start + k
                    reason[i], matches[i], similarity[i] = "val_meaning", val_texts[j], value
    alive = np.zeros(len(texts), dtype=bool)  # kept so far, in order: a row yields only to kept rows
    for start in range(0, len(texts), chunk):
        sims = unit[start:start + chunk] @ unit[: start + chunk].T
        for k in range(sims.shape[0]):
            i = start + k
            if reason[i] is None:
                earlier = np.flatnonzero(alive[:i] & (sims[k, :i] >= threshold))
                if len(earlier):
                    j = earlier[np.argmax(sims[k, earlier])]
                    reason[i], matches[i], similarity[i] = "same_meaning", texts[j], sims[k, j]
            alive[i] = reason[i] is None
    gone = ~alive
    removed = kept[gone].assign(reason=[reason[i] for i in np.flatnonzero(gone)],
                                matches=[matches[i] for i in np.flatnonzero(gone)],
                                similarity=np.round(similarity[gone], 4))
    return kept[alive].reset_index(drop=True), removed.reset_index(drop=True)


def _unit(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
