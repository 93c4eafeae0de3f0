"""Rebuild this example from the SST-5 copy bundled with raysweep (deterministic).

labeled.csv: 10 train sentences of each class with their label; unlabeled.csv: 600 other train
sentences with the label removed. Run from the repository root:
    .venv/bin/python examples/label-your-own-data/make_example.py
"""

from pathlib import Path

import numpy as np
import pandas as pd

from raysweep.config import DataConfig
from raysweep.data import load_dataset

HERE = Path(__file__).resolve().parent
N_LABELED_PER_CLASS, N_UNLABELED, SEED = 10, 600, 0


def main() -> None:
    train, _, _ = load_dataset(DataConfig())
    names = DataConfig().class_names
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(train))
    labeled = np.concatenate([[i for i in order if train["label"][i] == c][:N_LABELED_PER_CLASS]
                              for c in range(len(names))])
    unlabeled = [i for i in order if i not in set(labeled)][:N_UNLABELED]
    pd.DataFrame({"id": [f"sst-{i}" for i in labeled], "text": train["text"][labeled].to_numpy(),
                  "label": [names[c] for c in train["label"][labeled]]}).to_csv(HERE / "labeled.csv", index=False)
    pd.DataFrame({"id": [f"sst-{i}" for i in unlabeled], "text": train["text"][unlabeled].to_numpy()}).to_csv(
        HERE / "unlabeled.csv", index=False)


if __name__ == "__main__":
    main()
