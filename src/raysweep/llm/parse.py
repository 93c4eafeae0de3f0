"""From what a model really returns to [sentence, label] rows.

Models asked for "a JSON list of [sentence, label] pairs" answer with fences, prose, trailing
commas, dicts, label names, lists cut off at max_tokens, or nothing at all. `parse_reply`
recovers what can be recovered and says, per reply, what it repaired (the rows are kept) and
what it dropped (the failure log), both by kind, so that a summary can count them.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from dataclasses import dataclass, field

from raysweep.llm.dedup import normalize

# Repaired: the rows are kept.
REPAIRS = {
    "code_fence": "the JSON was inside a ``` fence",
    "prose": "text before or after the JSON",
    "trailing_comma": "a comma before ] or }",
    "python_literal": "Python syntax (single quotes) instead of JSON",
    "control_character": "a raw newline or tab inside a string, which strict JSON refuses",
    "truncated": "the reply was cut off (finish_reason=length); its complete items are kept",
    "wrapped": "the list was inside an object such as {\"samples\": [...]}",
    "single_pair": "one [sentence, label] pair instead of a list of them",
    "dict_item": "an item {\"sentence\": ..., \"label\": ...} instead of a pair",
    "swapped_pair": "an item [label, sentence]",
    "label_name": "a label given by name, e.g. \"very positive\"",
    "label_format": "a label given as \"3\", 3.0 or \"3 (positive)\"",
}
# Dropped: counted in the failure log.
FAILURES = {
    "empty_reply": "the reply had no content",
    "not_text": "the reply's content was not text (a list, a number, an object)",
    "not_json": "no JSON could be read from the reply (or it nests too deeply, or holds a number too long to read)",
    "bad_text": "a sentence that is not valid Unicode text (a lone surrogate such as \\ud800)",
    "bad_reply": "a reply of a shape nothing else here names; it is kept, never parsed into rows",
    "no_list": "the JSON holds no list of samples",
    "truncated_item": "the item cut off at the end of a truncated reply",
    "bad_item": "an item that is neither a [sentence, label] pair nor a dict with both",
    "empty_text": "a sentence with no words",
    "bad_label": "a label that is neither a number nor a label name",
    "label_out_of_range": "a label number outside 0..num_classes-1",
}

TEXT_KEYS = ("sentence", "text", "review", "sample", "content")
LABEL_KEYS = ("label", "sentiment", "class", "score", "rating")

# A reply of pairs nests three levels ([ [ ... ] ]), four when wrapped in an object. Far deeper is
# no reply of samples, and scanning or decoding it would only cost time (or the stack).
MAX_DEPTH = 32

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)
_INT = re.compile(r"^\s*(-?\d{1,9})\s*$")
_LEADING_INT = re.compile(r"^\s*(-?\d{1,9})\b")

# The study's words for SST-5's five classes: its prompt says "somewhat negative" and "somewhat
# positive" where SST-5's class names say "negative" and "positive". A model may answer in
# either, so with five classes both map (the data's own class names first).
STUDY_WORDS = ("very negative", "somewhat negative", "neutral", "somewhat positive", "very positive")


@dataclass
class ParsedReply:
    rows: list[tuple[str, int]] = field(default_factory=list)
    repairs: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (kind, the offending text, shortened)

    def fail(self, kind: str, detail: object) -> None:
        if isinstance(detail, str):
            text = detail[:200]
        else:
            try:
                text = json.dumps(detail, ensure_ascii=False, default=str)[:200]
            except (ValueError, TypeError, RecursionError):  # too deep, an int too long, a tuple key
                text = f"<{type(detail).__name__}>"
        self.failures.append((kind, text))


def parse_reply(content: object, class_names) -> ParsedReply:
    """Rows from one reply's text (see _parse_reply); any shape it does not foresee is one
    `bad_reply` failure, never an exception: replies are stored before they are parsed, so an
    exception here would fail every rerun on the same stored reply."""
    try:
        return _parse_reply(content, class_names)
    except Exception as exc:  # noqa: BLE001 - the guarantee above
        out = ParsedReply()
        out.fail("bad_reply", f"{type(exc).__name__} while parsing")
        return out


def _parse_reply(content: object, class_names) -> ParsedReply:
    """Rows from one reply's text. A reply cut off at max_tokens (finish_reason 'length') shows
    it in the JSON itself, an unclosed list, so the text is all that is needed.

    Whatever `content` is (a stored reply may hold anything a server sent), the result is rows
    and logged failures, never an exception: a reply must not stop a run, this one or a later one.
    """
    out = ParsedReply()
    if content is not None and not isinstance(content, str):
        out.fail("not_text", content)
        return out
    if content is None or not content.strip():
        out.fail("empty_reply", content or "")
        return out
    value = _decode(content, out)
    if value is None:
        return out
    for item in _items(value, out):
        row = _row(item, class_names, out)
        if row is not None:
            out.rows.append(row)
    return out


# --------------------------------------------------------------------------- text -> JSON value


def _decode(content: str, out: ParsedReply):
    text = content
    fence = _FENCE.search(text)
    if fence:
        out.repairs["code_fence"] += 1
        text = fence.group(1)
    starts = [i for i in (text.find("["), text.find("{")) if i >= 0]
    if not starts:
        out.fail("not_json", content)
        return None
    start = min(starts)
    try:
        closed_at, cut_at, open_stack = _scan(text, start)
    except _TooDeep:
        out.fail("not_json", content)
        return None
    if closed_at is not None:
        body = text[start:closed_at]
        if (text[:start].strip() or text[closed_at:].strip()) and not fence:
            out.repairs["prose"] += 1
    else:
        # Never closed: cut off. Keep everything up to the last complete container and close
        # what is still open at that point.
        if cut_at is None:
            out.fail("truncated_item", text[start:])
            return None
        out.repairs["truncated"] += 1
        if text[cut_at:].strip(" \n\t,"):
            out.fail("truncated_item", text[cut_at:].strip(" \n\t,"))
        body = text[start:cut_at] + "".join("]" if c == "[" else "}" for c in reversed(open_stack))
    body, commas = _strip_trailing_commas(body)
    if commas:
        out.repairs["trailing_comma"] += 1
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        pass
    except (ValueError, RecursionError):  # an int of thousands of digits; nesting beyond the stack
        out.fail("not_json", content)
        return None
    try:
        # A raw newline or tab inside a string: SmolLM2 under llama.cpp's JSON grammar wrote one
        # in each of 3 replies of a real run here (all 3 lost, 60 rows), which strict JSON refuses.
        value = json.loads(body, strict=False)
        out.repairs["control_character"] += 1
        return value
    except json.JSONDecodeError:
        pass
    except (ValueError, RecursionError):
        out.fail("not_json", content)
        return None
    try:
        value = ast.literal_eval(body)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # TypeError: {[1]: 2}
        out.fail("not_json", content)
        return None
    out.repairs["python_literal"] += 1
    return value


class _TooDeep(Exception):
    pass


def _scan(text: str, start: int):
    """Walk the JSON from `start`, aware of strings.

    Returns (end of the top-level value or None if it never closes, the end of the last
    complete container inside it, the containers still open at that point).
    """
    stack: list[str] = []
    # The containers open at the last cut are stack[:cut_depth] at the end: every pop is a close,
    # which moves the cut, so nothing below it changes after. (Copying the stack at each close
    # made a reply of 50,000 nested brackets take seconds.)
    cut_at, cut_depth = None, 0
    quote = None
    i = start
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c in "[{":
            stack.append(c)
            if len(stack) > MAX_DEPTH:
                raise _TooDeep
        elif c in "]}":
            stack.pop()
            if not stack:
                return i + 1, cut_at, stack[:cut_depth]
            cut_at, cut_depth = i + 1, len(stack)
        i += 1
    return None, cut_at, stack[:cut_depth]


def _strip_trailing_commas(body: str) -> tuple[str, int]:
    """Remove commas that are followed (after whitespace) by ] or }, outside strings."""
    out, removed, quote, i = [], 0, None, 0
    while i < len(body):
        c = body[i]
        if quote:
            out.append(c)
            if c == "\\" and i + 1 < len(body):
                out.append(body[i + 1])
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
            out.append(c)
        elif c == ",":
            j = i + 1
            while j < len(body) and body[j] in " \t\r\n":
                j += 1
            if j < len(body) and body[j] in "]}":
                removed += 1
            else:
                out.append(c)
        else:
            out.append(c)
        i += 1
    return "".join(out), removed


# --------------------------------------------------------------------------- value -> items -> rows


def _is_pair(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and not isinstance(value[1], (list, dict))


def _items(value, out: ParsedReply) -> list:
    if isinstance(value, dict):
        if _key(value, TEXT_KEYS) is not None and _key(value, LABEL_KEYS) is not None:
            return [value]  # one sample as an object; dict_item is counted per item
        lists = [v for v in value.values() if isinstance(v, list)]
        if not lists:
            out.fail("no_list", value)
            return []
        out.repairs["wrapped"] += 1
        value = lists[0]
    if not isinstance(value, list):
        out.fail("no_list", value)
        return []
    if _is_pair(value):
        out.repairs["single_pair"] += 1
        return [value]
    return value


def _key(item: dict, names: tuple[str, ...]):
    lowered = {str(k).strip().lower(): k for k in item}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


def _row(item, class_names, out: ParsedReply) -> tuple[str, int] | None:
    if isinstance(item, dict):
        text_key, label_key = _key(item, TEXT_KEYS), _key(item, LABEL_KEYS)
        if text_key is None or label_key is None:
            out.fail("bad_item", item)
            return None
        out.repairs["dict_item"] += 1
        text, raw_label = item[text_key], item[label_key]
    elif isinstance(item, (list, tuple)) and len(item) == 2:
        text, raw_label = item
        if not isinstance(text, str) and isinstance(raw_label, str) and _label(text, class_names)[0] is not None \
                and _label(raw_label, class_names)[0] is None:
            out.repairs["swapped_pair"] += 1
            text, raw_label = raw_label, text
    else:
        out.fail("bad_item", item)
        return None
    if not isinstance(text, str):
        out.fail("bad_item", item)
        return None
    text = " ".join(text.split())
    if not _encodable(text):
        out.fail("bad_text", repr(text))
        return None
    if not normalize(text):
        out.fail("empty_text", item)
        return None
    label, how = _label(raw_label, class_names)
    if label is None:
        out.fail("bad_label", item)
        return None
    if not 0 <= label < len(class_names):
        out.fail("label_out_of_range", item)
        return None
    if how:
        out.repairs[how] += 1
    return text, label


def _encodable(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (a JSON \\ud800 escape decodes to a lone surrogate,
    which no file, Parquet column or tokenizer takes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _label(value, class_names) -> tuple[int | None, str | None]:
    """(label number, the repair it took or None); (None, None) if it is no label at all."""
    if isinstance(value, bool) or value is None:
        return None, None
    if isinstance(value, int):
        return value, None
    if isinstance(value, float):
        return (int(value), "label_format") if value.is_integer() else (None, None)
    if not isinstance(value, str):
        return None, None
    match = _INT.match(value)
    if match:
        return int(match.group(1)), "label_format"
    names = {_name(n): i for i, n in enumerate(class_names)}
    if len(class_names) == len(STUDY_WORDS):
        for i, word in enumerate(STUDY_WORDS):
            names.setdefault(_name(word), i)
    if _name(value) in names:
        return names[_name(value)], "label_name"
    match = _LEADING_INT.match(value)
    if match:
        return int(match.group(1)), "label_format"
    return None, None


def _name(value: str) -> str:
    """A label name with case, spacing and punctuation forgiven: "Very_Positive." is "very positive"."""
    return " ".join(re.sub(r"[\W_]+", " ", str(value).lower()).split())


def failure_counts(replies: list[ParsedReply]) -> tuple[dict, dict]:
    """(repairs by kind, failures by kind) over many replies, kinds in a fixed order."""
    repairs, failures = Counter(), Counter()
    for reply in replies:
        repairs.update(reply.repairs)
        failures.update(kind for kind, _ in reply.failures)
    return ({k: repairs[k] for k in REPAIRS if repairs[k]}, {k: failures[k] for k in FAILURES if failures[k]})


# --------------------------------------------------------------------------- labels of given sentences


@dataclass
class ParsedLabels:
    """One labeling reply: a label per sentence sent, or none at all (`failure` says why)."""

    labels: list[int] | None = None
    repairs: Counter = field(default_factory=Counter)
    failure: str | None = None  # a FAILURES kind, or "wrong_count"


LABEL_FAILURES = {"wrong_count": "a labeling reply with more or fewer labels than sentences sent"}


def parse_labels(content: object, n: int, class_names) -> ParsedLabels:
    """The `n` labels of a labeling reply (see _parse_labels); any unforeseen shape is the
    failure `bad_reply`, never an exception (as parse_reply)."""
    try:
        return _parse_labels(content, n, class_names)
    except Exception:  # noqa: BLE001 - a stored reply must never poison a rerun
        return ParsedLabels(failure="bad_reply")


def _parse_labels(content: object, n: int, class_names) -> ParsedLabels:
    """The `n` labels of a labeling reply (llm/annotate.py), in the order the sentences were sent.

    Accepts what `parse_reply` repairs (fences, prose, trailing commas, an object around the
    list) and items that are a label (number or name), a dict with a label key, or a
    [sentence or position, label] pair. A reply with another number of labels, or one bad
    label, labels nothing: with a label missing, every later one could belong to another row.
    """
    out = ParsedReply()
    if content is not None and not isinstance(content, str):
        return ParsedLabels(failure="not_text")
    if content is None or not content.strip():
        return ParsedLabels(failure="empty_reply")
    value = _decode(content, out)
    if value is None:
        return ParsedLabels(repairs=out.repairs, failure=out.failures[-1][0] if out.failures else "not_json")
    if isinstance(value, dict):  # {"labels": [...]}: the first list in it
        lists = [v for v in value.values() if isinstance(v, list)]
        if not lists:
            return ParsedLabels(repairs=out.repairs, failure="no_list")
        out.repairs["wrapped"] += 1
        value = lists[0]
    if not isinstance(value, list):
        return ParsedLabels(repairs=out.repairs, failure="no_list")
    if len(value) != n:
        return ParsedLabels(repairs=out.repairs, failure="wrong_count")
    labels = []
    for item in value:
        if isinstance(item, dict):
            key = _key(item, LABEL_KEYS)
            item = item[key] if key is not None else None
        elif isinstance(item, list) and len(item) == 2:
            item = item[1]
        label, how = _label(item, class_names)
        if label is None:
            return ParsedLabels(repairs=out.repairs, failure="bad_label")
        if not 0 <= label < len(class_names):
            return ParsedLabels(repairs=out.repairs, failure="label_out_of_range")
        if how:
            out.repairs[how] += 1
        labels.append(label)
    return ParsedLabels(labels=labels, repairs=out.repairs)
