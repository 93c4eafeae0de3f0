"""`raysweep select --label-studio URL`: the loop with a live Label Studio project, no files by hand.

Each call:
1. checks the URL and the token (LABEL_STUDIO_API_KEY) with one call, before any work;
2. finds the project's Label Studio project (its id is in `labelstudio.json` in the project
   directory) or creates it: the labeling config from the classes, in their order;
3. if the open round's tasks are not all in Label Studio yet (a first call, or a crash during an
   import), imports the missing ones and stops there: there is nothing to pull yet;
4. else pulls every finished annotation: the open round's, and any of an earlier round's rows
   labeled since (a task left open stays in Label Studio and counts when it is done). Skipped
   (cancelled) tasks stay unlabeled, as with an export. With none of the open round's tasks
   finished it stops with one line: closing the round would throw the batch away;
5. writes the next round as `raysweep select` does and imports it: one task per row, the model's
   label as a prediction with the strategy's score and `model_version` = the round's name;
6. writes the round's stopping line (stopping.py) into the Label Studio project's description.

Safe to repeat after a crash: an import first lists the project's tasks and sends only rows not
there yet (by `data.row_id`), and a round closes only by writing labels.csv last. A crash between
creating the Label Studio project and recording its id is found again by the title, which holds
a key written to labelstudio.json before the project is created.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from raysweep import labeling, labelstudio
from raysweep.data import DataError
from raysweep.lsclient import Client, LabelStudioError

STATE = "labelstudio.json"  # {url, project, key, imported: [round names]}; never the token


@dataclass
class Studio:
    client: Client
    project_id: int
    state_path: Path
    state: dict

    @property
    def project_url(self) -> str:
        return f"{self.client.url}/projects/{self.project_id}"

    def save(self) -> None:
        _write_state(self.state_path, self.state)


def _write_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


def connect(project_dir: Path, cfg, url: str | None, log=print) -> Studio:
    """Check URL and token, then find or create the Label Studio project (steps 1-2)."""
    url = url or cfg.label_studio.url
    env = cfg.label_studio.token_env
    token = os.environ.get(env, "")
    if not token.strip():
        raise LabelStudioError(f"{env} is not set: put a Label Studio token in it (Account & Settings: a "
                               "personal access token, or a legacy token)")
    client = Client(url, token)
    client.whoami()  # the one call that tells a wrong URL or token apart from everything else
    state_path = project_dir / STATE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state.get("url") and state["url"] != client.url and state.get("project") is not None:
        raise LabelStudioError(f"{state_path}: this project is linked to Label Studio project {state['project']} at "
                               f"{state['url']}, not {client.url} (move {STATE} away to start a new one there)")
    state.setdefault("key", uuid.uuid4().hex[:8])
    state.setdefault("imported", [])
    state["url"] = client.url
    title = cfg.label_studio.title or f"raysweep {project_dir.resolve().name}"
    title = f"{title} [{state['key']}]"
    if state.get("project") is not None:
        found = client.project(state["project"])
        if found is None:
            raise LabelStudioError(f"{state_path}: Label Studio project {state['project']} no longer exists at "
                                   f"{client.url} (move {STATE} away to create a new one)")
    else:
        _write_state(state_path, state)  # the key first: a crash after the create finds the project by title
        found = next((p for p in client.projects() if p.get("title") == title), None)
        if found is None:
            found = client.create_project(title, labelstudio.labeling_config(labeling_classes(project_dir, cfg)),
                                          "raysweep select: the stopping line appears here after each round.")
            log(f"Label Studio: created project {found['id']} ({title!r}) at {client.url}")
        state["project"] = int(found["id"])
        _write_state(state_path, state)
    studio = Studio(client, int(state["project"]), state_path, state)
    log(f"Label Studio: project {studio.project_id} at {studio.project_url} ({client.token_kind})")
    return studio


def labeling_classes(project_dir: Path, cfg) -> list[str]:
    """The project's classes, in the order the labeling buttons show them."""
    return labeling.load_project(project_dir, cfg).classes


def import_round(studio: Studio, round_dir: Path, log=print) -> int:
    """Import the round's tasks that Label Studio does not have yet; returns how many were sent."""
    tasks = json.loads((round_dir / "labelstudio" / "tasks.json").read_text())
    there = {str(t.get("data", {}).get(labelstudio.ROW_ID)) for t in studio.client.tasks(studio.project_id)}
    missing = [t for t in tasks if str(t["data"][labelstudio.ROW_ID]) not in there]
    if missing:
        studio.client.import_tasks(studio.project_id, missing)
    if round_dir.name not in studio.state["imported"]:
        studio.state["imported"].append(round_dir.name)
        studio.save()
    log(f"Label Studio: {round_dir.name}: {len(missing)} tasks imported"
        + (f" ({len(tasks) - len(missing)} were there already)" if len(missing) < len(tasks) else "")
        + f"; label them at {studio.project_url}")
    return len(missing)


def describe(studio: Studio, round_dir: Path) -> None:
    """The round's stopping line as the Label Studio project's description (what a labeler sees)."""
    summary = json.loads((round_dir / "round.json").read_text())
    line = summary.get("stopping", {}).get("line")
    if line:
        studio.client.update_project(studio.project_id, description=f"raysweep, {round_dir.name}: {line}")


def pull(studio: Studio, project: labeling.Project, log=print) -> bool:
    """Close the open round with the annotations finished in Label Studio (step 4). False when
    the open round had to be imported first (step 3): the call stops there."""
    open_round = project.open_round
    if open_round is None:
        return True
    if open_round.name not in studio.state["imported"]:
        import_round(studio, open_round, log)
        describe(studio, open_round)
        return False
    tasks = studio.client.tasks(studio.project_id)
    # A task without any annotation is still being labeled, not skipped: it is left out, and a
    # later call takes its label when it comes.
    done = [t for t in tasks if t.get("annotations")]
    labeled, skipped = labelstudio.read_tasks(done, f"Label Studio project {studio.project_id}")
    batch = set(pd.read_csv(open_round / "to_label.csv", dtype=str, keep_default_na=False)["id"])
    position = {row_id: i for i, row_id in enumerate(project.ids)}
    rows = []
    for n, row_id, label in labeled:
        at = position.get(row_id)
        if at is None or project.labels[at] >= 0 or not project.offered[at]:
            continue  # another project's row, or labeled already (a label changed since is not taken: see docs)
        if label not in project.classes:
            raise DataError(f"Label Studio project {studio.project_id}: task of row {row_id!r}: label {label!r} is not "
                            f"one of the classes ({', '.join(project.classes)})")
        rows.append((row_id, label))
    mine = [r for r in rows if r[0] in batch]
    skipped = [i for i in dict.fromkeys(skipped) if i in batch and i not in {r[0] for r in rows}]
    if not mine and not skipped:
        raise DataError(f"{open_round.name}: none of its {len(batch)} tasks is finished in Label Studio yet "
                        f"({studio.project_url}); label some, then run this again")
    labeling.close_round(project, pd.DataFrame(rows, columns=["id", "label"]), skipped, log)
    left = len(batch) - len(mine) - len(skipped)
    if left:
        log(f"Label Studio: {left} tasks of {open_round.name} are still open there; their labels count when they come")
    return True


def prepare(project_dir: str | Path, url: str | None, overrides=(), sweep_file=None, results_dir=None,
            log=print) -> tuple[labeling.Project | None, Studio]:
    """Everything before the encoder pass: the config and files, the connection, the pull. The
    project is None when this call only imported the open round (nothing to train on yet)."""
    project_dir = Path(project_dir)
    cfg = labeling.load_project_config(project_dir, overrides, sweep_file)
    labeling.load_project(project_dir, cfg)  # the files are checked before the network
    studio = connect(project_dir, cfg, url, log)
    project = labeling.prepare(project_dir, overrides, sweep_file=sweep_file, results_dir=results_dir, log=log,
                               allow_open=True)
    if not pull(studio, project, log):
        return None, studio
    return labeling.prepare(project_dir, overrides, sweep_file=sweep_file, results_dir=results_dir,
                            log=lambda *_: None), studio


def push(studio: Studio, round_dir: Path, log=print) -> None:
    """Import the round just written and put its stopping line in the project's description."""
    import_round(studio, round_dir, log)
    describe(studio, round_dir)


def annotate(client: Client, project_id: int, answers: dict[str, str | None]) -> tuple[int, int]:
    """Post one annotation per task whose row is in `answers` (None: skip the task, as an annotator
    pressing Skip does) and that has none yet: what a person does in the browser, through the same
    API. For the README's example loop and the tests. Returns (labeled, skipped)."""
    done = skipped = 0
    for t in client.tasks(project_id):
        row_id = str(t.get("data", {}).get(labelstudio.ROW_ID))
        if row_id not in answers or t.get("annotations"):
            continue
        label = answers[row_id]
        result = [] if label is None else [{"from_name": labelstudio.CONTROL, "to_name": labelstudio.OBJECT,
                                            "type": "choices", "value": {"choices": [label]}}]
        client.call("POST", f"/api/tasks/{int(t['id'])}/annotations",
                    {"result": result, "was_cancelled": label is None})
        done, skipped = done + (label is not None), skipped + (label is None)
    return done, skipped
