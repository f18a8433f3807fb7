"""In-process latency per call: the Pipeline path (frame + predict [+ predict_proba]) vs the fast predictor.

    python bench/fastpath.py [--rows 20000]

Trains the Pipelines of flywheel/training/pipelines.py on sample data, checks the fast path with verify(), then
times both on the same checked columns for 1 row and 1,000 rows (one OpenMP thread, as the bench servers run).
Never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def per_call(fn: Callable[[], Any], budget: float = 1.0) -> float:
    """Median seconds per call over ~budget seconds."""
    fn()
    times: list[float] = []
    end = time.perf_counter() + budget
    while time.perf_counter() < end or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000, help="training rows")
    args = parser.parse_args()

    from flywheel.data.sample_data import GENERATORS
    from flywheel.data.validation import validate_batch
    from flywheel.schema import load_schema
    from flywheel.serving.fastpath.builder import compile_pipeline, reference, verify
    from flywheel.training.pipelines import ESTIMATORS

    print(f"{'model':16} {'rows':>5} {'pipeline µs':>12} {'fast µs':>9} {'speed-up':>9} {'fast rows/s':>12}  verify")
    for dataset, estimator in (("savings", "hgb"), ("churn", "hgb"), ("savings", "linear"), ("churn", "linear")):
        schema = load_schema(dataset)
        gen = GENERATORS[dataset]
        frame = validate_batch(gen(args.rows, seed=1).to_csv(index=False).encode(), "b.csv", schema)
        model = ESTIMATORS[estimator](schema).fit(frame[list(schema.feature_names)], frame[schema.target.name])
        fast = compile_pipeline(model, schema)
        if fast is None:
            print(f"{dataset}/{estimator}: no fast path")
            continue
        t = time.perf_counter()
        fast.warm()
        warm = time.perf_counter() - t
        golden = json.loads(gen(20, seed=9).drop(columns=[schema.target.name]).to_json(orient="records"))
        t = time.perf_counter()
        verdict = verify(fast, model, schema, golden)
        checked = time.perf_counter() - t
        test = validate_batch(gen(1000, seed=5).to_csv(index=False).encode(), "t.csv", schema)
        cols = {f.name: test[f.name].tolist() for f in schema.features}
        for n in (1, 1000):
            part = {k: v[:n] for k, v in cols.items()}
            slow = per_call(partial(reference, model, schema, part))
            quick = per_call(partial(fast.predict, part))
            print(f"{dataset + '/' + estimator:16} {n:5} {slow * 1e6:12.1f} {quick * 1e6:9.1f} {slow / quick:8.0f}x "
                  f"{n / quick:12,.0f}  exact={verdict.exact} on {verdict.rows_checked} rows "
                  f"(warm {warm:.2f} s, verify {checked:.2f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
