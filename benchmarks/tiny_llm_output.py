"""A tiny output with all four LLM pools, for `raysweep analyze` to read (its cost answer).

    python benchmarks/tiny_llm_output.py ROOT

Writes ROOT/sst5-600.csv (the first 600 train and 200 dev rows of the bundled SST-5),
ROOT/tiny-llm.yaml and runs it into ROOT/out with the bundled encoder. The fake OpenAI-compatible
server answers generation and labeling as `gpt-4o-mini`, so the calls are billed at its list
price in `llm.prices`; its labels are crc32 of the text mod 5, so the accuracies say nothing
about an LLM's labels. Run it with an older raysweep on PYTHONPATH to get records made before
`cost_usd` existed (what docs/measurements.md's "cost answer" section did).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from raysweep.config import load_sweep
from raysweep.data import bundled_path
from raysweep.llm.fake_server import FakeOpenAI
from raysweep.sweep import run_sweep


def main() -> None:
    root = Path(sys.argv[1])
    root.mkdir(parents=True, exist_ok=True)
    df = pd.read_csv(bundled_path(), keep_default_na=False)
    pd.concat([df[df.split == "train"].head(600), df[df.split == "dev"].head(200)]).to_csv(
        root / "sst5-600.csv", index=False)
    server = FakeOpenAI(rows_per_reply=10, model="gpt-4o-mini").start()
    try:
        (root / "tiny-llm.yaml").write_text(f"""
name: tiny-llm
compare: {{pool: [real, llm, llm_teacher, llm_annotated], strategy: [random], fraction: [0, 0.25, 0.5],
          freeze: [last-linear]}}
replicate: {{seed: [0, 1, 2]}}
data: {{path: {root / 'sst5-600.csv'}}}
recipe: {{epochs: 3}}
llm: {{base_url: {server.base_url}, api_key_env: none, model: gpt-4o-mini, n_rows: 60, samples_per_call: 10,
       concurrency: 1, retry_backoff: 0.01, timeout: 30}}
teacher: {{freeze: last-linear, epochs: 3}}
""")
        table = run_sweep(load_sweep(root / "tiny-llm.yaml"), root / "out")
        print(table[["pool", "fraction", "seed", "status", "val_accuracy", "n_added"]].to_string())
    finally:
        server.stop()


if __name__ == "__main__":
    main()
