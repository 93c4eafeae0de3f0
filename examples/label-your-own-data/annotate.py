"""A simulated annotator for the example: labels the open batch of a project with SST-5's own
labels (looked up in the SST-5 copy bundled with raysweep), as a person would in Label Studio.

    .venv/bin/python examples/label-your-own-data/annotate.py PROJECT OUT.json            # a Label Studio JSON export
    .venv/bin/python examples/label-your-own-data/annotate.py PROJECT OUT.csv             # id,label
    .venv/bin/python examples/label-your-own-data/annotate.py PROJECT --label-studio URL  # in the live project
    ... --skip 2     leave the first 2 rows unlabeled (skipped tasks)
"""

import argparse
import json
from pathlib import Path

import pandas as pd

from raysweep.config import DataConfig
from raysweep.data import load_dataset
from raysweep.labelstudio import simulated_export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("out", type=Path, nargs="?", help="the file to write (not with --label-studio)")
    parser.add_argument("--label-studio", metavar="URL",
                        help="annotate the open batch's tasks in the project's Label Studio project through its API "
                             "(token in LABEL_STUDIO_API_KEY)")
    parser.add_argument("--skip", type=int, default=0, help="skip this many rows of the batch")
    args = parser.parse_args()
    rounds = sorted(p for p in (args.project / "rounds").glob("round-*") if not (p / "labels.csv").exists())
    if not rounds:
        raise SystemExit(f"{args.project}: no batch is waiting for labels")
    batch = rounds[-1]
    train, _, _ = load_dataset(DataConfig())
    names = DataConfig().class_names
    gold = dict(zip(train["text"], (names[c] for c in train["label"])))
    rows = pd.read_csv(batch / "to_label.csv", dtype={"id": str}, keep_default_na=False)
    answers = {i: gold[t] for i, t in zip(rows["id"], rows["text"])}
    skip = set(rows["id"][: args.skip])
    if args.label_studio:
        import os

        from raysweep.lsclient import Client
        from raysweep.studio import STATE, annotate

        state = json.loads((args.project / STATE).read_text())
        client = Client(args.label_studio, os.environ["LABEL_STUDIO_API_KEY"])
        done, skipped = annotate(client, state["project"], {i: None if i in skip else answers[i] for i in rows["id"]})
        print(f"{batch.name}: labeled {done} tasks, skipped {skipped} in Label Studio project {state['project']}")
        return
    if args.out is None:
        parser.error("name the file to write, or pass --label-studio URL")
    if args.out.suffix == ".json":
        tasks = json.loads((batch / "labelstudio" / "tasks.json").read_text())
        args.out.write_text(json.dumps(simulated_export(tasks, answers, skip), indent=1))
    else:
        pd.DataFrame({"id": rows["id"], "label": ["" if i in skip else answers[i] for i in rows["id"]]}).to_csv(
            args.out, index=False)
    print(f"{batch.name}: labeled {len(rows) - len(skip)} rows, skipped {len(skip)} -> {args.out}")


if __name__ == "__main__":
    main()
