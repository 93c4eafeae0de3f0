"""studio.py's pull and import logic with an in-memory Label Studio (fast; the live server is in
tests/test_labelstudio_live.py): late labels, skipped tasks, nothing imported twice."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from raysweep import labeling, studio
from raysweep.data import DataError
from tests.test_select import project  # noqa: F401 - the fixture


class FakeClient:
    url = "http://ls.invalid"
    token_kind = "legacy token"

    def __init__(self):
        self.store: list[dict] = []
        self.description = ""

    def tasks(self, project_id):
        return self.store

    def import_tasks(self, project_id, tasks):
        for t in tasks:
            self.store.append(dict(t, id=len(self.store) + 1, annotations=[]))

    def update_project(self, project_id, **fields):
        self.description = fields["description"]

    def label(self, row_id, label):
        t = next(t for t in self.store if t["data"]["row_id"] == row_id)
        t["annotations"] = [{"result": [] if label is None else [{"value": {"choices": [label]}}],
                             "was_cancelled": label is None}]


def _round(d, session, log):
    project = labeling.prepare(d, allow_open=True, log=log)
    if not studio.pull(session, project, log):
        return None
    r = labeling.next_round(labeling.prepare(d, log=log), use_ray=False, log=log)
    studio.push(session, r, log)
    return r


def test_pull_takes_late_labels_skips_and_imports_nothing_twice(project):  # noqa: F811
    d, gold = project
    lines: list[str] = []
    session = studio.Studio(FakeClient(), 1, d / studio.STATE, {"imported": []})
    r1 = _round(d, session, lines.append)
    assert len(session.client.store) == 6 and session.client.description.startswith("raysweep, round-001: keep")
    batch1 = list(pd.read_csv(r1 / "to_label.csv", dtype=str)["id"])
    with pytest.raises(DataError, match="none of its 6 tasks is finished"):
        _round(d, session, lines.append)
    session.client.label(batch1[0], None)  # skipped
    session.client.label(batch1[1], gold[batch1[1]])
    r2 = _round(d, session, lines.append)
    assert "4 tasks of round-001 are still open there" in "\n".join(lines)
    assert list(pd.read_csv(r1 / "labels.csv", dtype=str)["id"]) == [batch1[1]]
    # a task of round 1 labeled after round 1 closed counts with round 2's labels
    batch2 = list(pd.read_csv(r2 / "to_label.csv", dtype=str)["id"])
    session.client.label(batch1[2], gold[batch1[2]])
    session.client.label(batch2[0], gold[batch2[0]])
    r3 = _round(d, session, lines.append)
    assert set(pd.read_csv(r2 / "labels.csv", dtype=str)["id"]) == {batch1[2], batch2[0]}
    assert json.loads((r3 / "round.json").read_text())["labeled"] == 8 + 3
    # a crash before round 3's import was recorded: the repeat sends nothing twice
    before = len(session.client.store)
    session.state["imported"].remove(r3.name)
    assert studio.import_round(session, r3, lines.append) == 0 and len(session.client.store) == before
