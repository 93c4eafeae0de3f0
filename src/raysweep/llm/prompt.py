"""The generation and labeling prompts: the study's wording by default, real few-shot examples.

Every prompt is a fixed prefix (the instructions, the label meanings and the few-shot examples)
followed by what varies between calls (a labeling call's sentences). By default
(`llm.few_shot: fixed`) the examples are one set per run, drawn with `llm.seed` alone, so every
call of a run shares its prefix and a provider bills that prefix at its cached price after the
first call (`usage.prompt_tokens_details.cached_tokens`; llama.cpp's server reuses its KV cache
the same way). `few_shot: per_call` is the study's way: each call draws its own examples with
the seed `(llm.seed, request_id)`, more varied prompts and no shared prefix.

Either way a call's prompt is a pure function of the config and its `request_id`, so call 17
asks the same question in every run: a resumed run sends exactly the calls that are missing, and
the store can tell whether a stored response still matches the config.
"""

from __future__ import annotations

import json
from string import Template

import numpy as np
import pandas as pd

from raysweep.hashing import json_digest, text_digest
from raysweep.loader import ConfigError

SST5_CLASS_NAMES = ("very negative", "negative", "neutral", "positive", "very positive")

# The study's prompt: the task, the five label meanings, a few real examples per class as JSON,
# and "generate N samples" answered as a JSON list of [sentence, label] pairs.
DEFAULT_TEMPLATE = """\
You are helping to build a data set for fine-grained sentiment classification of movie review \
sentences (the Stanford Sentiment Treebank, SST-5). Each sentence has one of five labels:
$labels

Here are real examples from the data set, as a JSON list of [sentence, label] pairs:
$examples

Generate $n new samples in the same style: varied sentences about movies, with labels spread \
over all five classes. Answer with a JSON list of $n [sentence, label] pairs and nothing else, \
where label is the number 0, 1, 2, 3 or 4.
"""


def label_meanings(class_names: tuple[str, ...] | list[str]) -> str:
    return "\n".join(f"{i}: {name}" for i, name in enumerate(class_names))


def sample_examples(examples: pd.DataFrame, per_class: int, seed: int, request_id: int | None) -> list[list]:
    """`per_class` random rows of each label (all of them if a label has fewer), label order.

    `request_id` None: the run's one fixed set (seeded by `seed` alone); else call `request_id`'s own."""
    rng = np.random.default_rng([seed] if request_id is None else [seed, request_id])
    picked = []
    for label in sorted(examples["label"].unique()):
        texts = examples.loc[examples["label"] == label, "text"].to_numpy()
        take = min(per_class, len(texts))
        for i in sorted(rng.choice(len(texts), size=take, replace=False)):
            picked.append([str(texts[i]), int(label)])
    return picked


def render(template: str, n: int, examples: list[list], class_names) -> str:
    try:
        return Template(template).substitute(
            n=n,
            examples=json.dumps(examples, ensure_ascii=False),
            labels=label_meanings(class_names),
        )
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"llm.template: bad placeholder {exc} (known: $n, $examples, $labels)") from None


def build_messages(template: str, n: int, examples: pd.DataFrame, per_class: int, seed: int,
                   request_id: int | None, class_names) -> list[dict]:
    """The chat messages of call `request_id` (None: any call of a `few_shot: fixed` run, whose
    prompts are all this one): one user message, as in the study."""
    shown = sample_examples(examples, per_class, seed, request_id) if per_class else []
    return [{"role": "user", "content": render(template, n, shown, class_names)}]


def template_digest(template: str) -> str:
    return text_digest(template, 16)


def examples_digest(examples: pd.DataFrame) -> str:
    """Which real rows the prompts draw from: another labeled split means other prompts."""
    pairs = sorted(zip(examples["text"].astype(str), examples["label"].astype(int), strict=True))
    return json_digest(pairs, 16, ascii_only=False)


def check_examples(examples: pd.DataFrame, num_classes: int) -> None:
    """Fail in one line on example data the prompt cannot use."""
    missing = {"text", "label"} - set(examples.columns)
    if missing:
        raise ValueError(f"examples: missing column(s) {', '.join(sorted(missing))} (need text, label)")
    if len(examples) == 0:
        raise ValueError("examples: no rows to show the LLM")
    labels = set(int(v) for v in examples["label"].unique())
    bad = sorted(v for v in labels if not 0 <= v < num_classes)
    if bad:
        raise ValueError(f"examples: label(s) {bad} outside 0..{num_classes - 1}")


# --------------------------------------------------------------------------- labeling (llm/annotate.py)

# The line before the sentences of a labeling call: the fake server finds them after it.
SENTENCES_HEADER = "Sentences to label, as a JSON list:"

# The same task description and few-shot examples as generation, then the sentences to label:
# the `llm_annotated` pool asks the LLM for labels only, of real rows a strategy chose.
LABEL_TEMPLATE = """\
You are labeling sentences of movie reviews for fine-grained sentiment classification (the \
Stanford Sentiment Treebank, SST-5). Each sentence has one of these labels:
$labels

Here are labeled examples from the data set, as a JSON list of [sentence, label] pairs:
$examples

$header
$sentences

Answer with a JSON list of exactly $n labels, one for each sentence in the same order, each \
a number from 0 to $last, and nothing else.
"""


def build_label_messages(texts: list[str], examples: pd.DataFrame, per_class: int, seed: int,
                         request_id: int | None, class_names) -> list[dict]:
    """The chat messages of labeling call `request_id`: few-shot examples drawn as generation
    draws them (`request_id` None: the run's fixed set), then `texts` as one JSON line, last, so
    that every call of a fixed run shares the prefix before them."""
    shown = sample_examples(examples, per_class, seed, request_id) if per_class else []
    content = Template(LABEL_TEMPLATE).substitute(
        labels=label_meanings(class_names), examples=json.dumps(shown, ensure_ascii=False),
        header=SENTENCES_HEADER, sentences=json.dumps(list(texts), ensure_ascii=False), n=len(texts),
        last=len(class_names) - 1)
    return [{"role": "user", "content": content}]


def sentences_in(content: str) -> list[str] | None:
    """The sentences a labeling prompt asks about, or None if `content` is no labeling prompt."""
    head, found, rest = content.partition(SENTENCES_HEADER + "\n")
    if not found:
        return None
    try:
        texts = json.loads(rest.split("\n", 1)[0])
    except json.JSONDecodeError:
        return None
    return texts if isinstance(texts, list) and all(isinstance(t, str) for t in texts) else None

