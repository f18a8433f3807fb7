"""Write scikit-learn's bundled breast cancer data as a CSV: a stand-in for your own data (docs/schema.md, "Your own
data"). 569 tumours, 30 measurements each and the `diagnosis` (benign or malignant); nothing is downloaded.

    .venv/bin/python examples/breast-cancer/make_csv.py /tmp/breast-cancer.csv
    .venv/bin/flywheel schema infer /tmp/breast-cancer.csv --target diagnosis   # = examples/breast-cancer/schema.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_breast_cancer


def frame() -> pd.DataFrame:
    """The data with snake_case column names (`mean radius` -> `mean_radius`) and the diagnosis as a word."""
    data = load_breast_cancer(as_frame=True)
    out = data.frame.rename(columns=lambda c: c.replace(" ", "_")).rename(columns={"target": "diagnosis"})
    out["diagnosis"] = out["diagnosis"].map(dict(enumerate(data.target_names)))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    frame().to_csv(out, index=False)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
