"""Label Studio's import and export formats for `raysweep select`, as plain JSON and XML.

Import: one task per row to label, `{"data": {"row_id", "text"}, "predictions": [...]}`, where the
prediction is the model's label as a pre-annotation. A pre-annotation attaches only when its
`from_name` / `to_name` match a control and an object of the project's labeling config, so the
matching config is written beside the tasks (`config.xml`: paste it under Settings > Labeling
Interface before importing).

Export: Label Studio's JSON export (tasks with `annotations`, a skipped task's annotation has
`was_cancelled: true`) and its JSON-MIN export (flat rows with the choice under the control's
name). Both are read back into (id, label) pairs plus the ids that were skipped.
No Label Studio package is needed: the formats are small and documented
(https://labelstud.io/guide/task_format, https://labelstud.io/guide/export).
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

from raysweep.data import DataError

CONTROL = "label"  # the <Choices> name: the pre-annotations' from_name
OBJECT = "text"  # the <Text> name: their to_name
MODEL_VERSION = "raysweep"
ROW_ID = "row_id"  # the project's id of a task's row


def labeling_config(classes: list[str]) -> str:
    """The labeling config whose names the tasks' pre-annotations refer to."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (f'<View>\n  <Text name="{OBJECT}" value="$text"/>\n'
            f'  <Choices name="{CONTROL}" toName="{OBJECT}" choice="single" showInLine="true">\n'
            f"{choices}\n  </Choices>\n</View>\n")


def task(row_id: str, text: str, predicted: str | None, score: float | None,
         model_version: str = MODEL_VERSION) -> dict:
    """One import task; with a prediction, the model's label as a pre-annotation. `score` is the
    strategy's score of the row (higher: label it sooner), so sorting Label Studio's task list by
    prediction score orders it as the batch's ranking does."""
    # `row_id`, not `id`: Label Studio's JSON-MIN export flattens data beside its own task `id`.
    out = {"data": {ROW_ID: row_id, OBJECT: text}}
    if predicted is not None:
        pred = {"model_version": model_version,
                "result": [{"from_name": CONTROL, "to_name": OBJECT, "type": "choices",
                            "value": {"choices": [predicted]}}]}
        if score is not None:
            pred["score"] = float(score)
        out["predictions"] = [pred]
    return out


def is_export(path: Path) -> bool:
    """Whether a returned-labels file is a Label Studio JSON / JSON-MIN export (a JSON array)."""
    if path.suffix.lower() != ".json":
        return False
    with open(path, encoding="utf-8") as fh:
        head = fh.read(64).lstrip()
    return head.startswith("[")


def read_export(path: Path) -> tuple[list[tuple[int, str, str]], list[str]]:
    """((task number, id, label) per labeled task, ids of skipped tasks) from an export.

    A task with no annotation, or whose every annotation was cancelled (skipped), stays
    unlabeled. With several annotations the last one that was not cancelled counts.
    """
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable Label Studio JSON export ({exc})") from None
    return read_tasks(tasks, str(path))


def read_tasks(tasks, path: str) -> tuple[list[tuple[int, str, str]], list[str]]:
    """`read_export` of tasks already parsed (an export file, or the API's task list); `path`
    names where they came from in error lines."""
    if not isinstance(tasks, list):
        raise DataError(f"{path}: a Label Studio export is a JSON array of tasks")
    labeled, skipped = [], []
    for n, t in enumerate(tasks, start=1):
        if not isinstance(t, dict):
            raise DataError(f"{path}: task {n}: expected a JSON object")
        data = t.get("data") if isinstance(t.get("data"), dict) else t  # JSON-MIN rows are flat
        row_id = data.get(ROW_ID)
        if row_id is None:
            raise DataError(f"{path}: task {n}: no data.{ROW_ID} (was it imported from raysweep's tasks.json?)")
        row_id = str(row_id)
        if "annotations" not in t:  # JSON-MIN: the choice sits under the control's name
            label = t.get(CONTROL)
            if isinstance(label, dict):  # JSON-MIN of a multi-choice control: {"choices": [...]}
                label = (label.get("choices") or [None])[0]
            if label is None:
                skipped.append(row_id)
            else:
                labeled.append((n, row_id, str(label)))
            continue
        kept = [a for a in t.get("annotations") or [] if not a.get("was_cancelled")]
        choices = [r.get("value", {}).get("choices") for r in (kept[-1].get("result") or [])] if kept else []
        choices = [c for c in choices if c]
        if not choices:
            skipped.append(row_id)
            continue
        if len(choices[0]) != 1:
            raise DataError(f"{path}: task {n} (id {row_id}): {len(choices[0])} choices, expected one label")
        labeled.append((n, row_id, str(choices[0][0])))
    return labeled, skipped


def simulated_export(tasks: list[dict], answers: dict[str, str], skip: set[str] = frozenset()) -> list[dict]:
    """What Label Studio's JSON export of `tasks` looks like once an annotator has labeled them:
    `answers` maps a row id to its label, `skip` holds ids the annotator skipped. For the
    README's example loop and the tests: an annotator simulated from known labels."""
    out = []
    for n, t in enumerate(tasks, start=1):
        row_id = t["data"][ROW_ID]
        cancelled = row_id in skip or row_id not in answers
        result = [] if cancelled else [{"from_name": CONTROL, "to_name": OBJECT, "type": "choices",
                                         "value": {"choices": [answers[row_id]]}}]
        out.append({"id": n, "data": t["data"], "predictions": t.get("predictions", []),
                    "annotations": [{"id": n, "result": result, "was_cancelled": cancelled, "task": n}]})
    return out
