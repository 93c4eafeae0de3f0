"""Small hand-made results directories whose statistics can be worked out by hand.

Validation accuracy of `random` is base[freeze] + 0.05 * fraction + offset[seed]; `entropy` is
the same plus 0.02 at every fraction > 0. So per seed the paired difference is exactly 0.02,
while the seeds themselves spread by +-0.01: only a correctly paired comparison is that tight.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

BASE = {"last-linear": 0.40, "pooler": 0.44}
OFFSET = {0: -0.01, 1: 0.0, 2: 0.01}
FRACTIONS = (0.0, 1.0, 2.0)
CLASS_NAMES = ["very negative", "negative", "neutral", "positive", "very positive"]


def trial_rows() -> list[dict]:
    rows = []
    for freeze, base in BASE.items():
        for strategy in ("random", "entropy"):
            for fraction in FRACTIONS:
                for seed, offset in OFFSET.items():
                    acc = base + 0.05 * fraction + offset + (0.02 if strategy == "entropy" and fraction > 0 else 0)
                    confusion = (np.eye(5, dtype=int) * 8 + 2).tolist()
                    rows.append({
                        "cell_id": f"real-{strategy}-{fraction:g}-{freeze}", "pool": "real", "strategy": strategy,
                        "fraction": fraction, "freeze": freeze, "seed": seed, "encoder": "minilm",
                        "pooling": "pooler", "status": "ok", "error": "", "val_accuracy": acc,
                        "val_macro_f1": acc - 0.05, "train_accuracy": 0.9 + 0.01 * fraction, "n_labeled": 100,
                        "n_added": int(100 * fraction), "n_train": int(100 * (1 + fraction)), "wall_s": 10.0,
                        "train_s": 8.0, "confusion": json.dumps(confusion)})
    # A failed trial with a seed no successful trial has: it must not count anywhere.
    rows.append({**rows[-1], "seed": 3, "status": "failed", "error": "RuntimeError: out of memory",
                 "val_accuracy": np.nan, "val_macro_f1": np.nan, "train_accuracy": np.nan, "confusion": ""})
    return rows


SWEEP = {"name": "handmade", "description": "a hand-made table",
         "compare": {"pool": ["real"], "strategy": ["random", "entropy"], "fraction": list(FRACTIONS),
                     "freeze": list(BASE)},
         "replicate": {"seed": list(OFFSET)}, "recipe": {"epochs": 2},
         "encoder": {"name": "minilm", "pooling": "pooler"},
         "data": {"class_names": CLASS_NAMES}}


def write_trials(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(trial_rows()).to_csv(d / "trials.csv", index=False)
    (d / "sweep.yaml").write_text(yaml.safe_dump(SWEEP, sort_keys=False))
    return d


def write_extras(d: Path) -> Path:
    """The optional inputs: generation outputs, embeddings, real labels and diagnostics."""
    rng = np.random.default_rng(0)
    gen = d / "generation"
    gen.mkdir(parents=True, exist_ok=True)
    llm = np.repeat(np.arange(5), 20)
    teacher = np.where(rng.random(100) < 0.6, llm, rng.integers(0, 5, 100))
    pd.DataFrame({"text": [f"sentence {i}" for i in range(100)], "llm_label": llm,
                  "teacher_label": teacher}).to_csv(gen / "generated.csv", index=False)
    (gen / "generation.json").write_text(json.dumps({"agreement": float((llm == teacher).mean()),
                                                     "teacher_val_accuracy": 0.41, "rows_kept": 100}))
    np.savez(gen / "embeddings.npz", real=rng.normal(size=(60, 8)), generated=rng.normal(1.0, 1.0, size=(40, 8)))
    pd.DataFrame({"label": rng.integers(0, 5, 200)}).to_csv(gen / "real_labels.csv", index=False)
    diag = d / "diagnostics"
    diag.mkdir(exist_ok=True)
    for freeze in BASE:
        entropy = rng.random(50)
        pd.DataFrame({"freeze": freeze, "seed": np.repeat([0, 1], 25), "entropy": entropy,
                      "sqbc": 0.5 * entropy + rng.random(50)}).to_csv(diag / f"{freeze}.csv", index=False)
    # The sweep also writes a summary here; the analysis must read past it.
    pd.DataFrame({"freeze": list(BASE), "seed": 0, "pearson": 0.5, "spearman": 0.5}).to_csv(
        diag / "correlation.csv", index=False)
    return d
