"""In-process latency per call: the Pipeline path (frame + predict [+ predict_proba]) vs the fast predictor.

    python bench/fastpath.py [--rows 20000] [--descent] [--budget 1.0]

Trains the Pipelines of flywheel/training/pipelines.py on sample data, checks the fast path with verify(), then
times both on the same checked columns for 1, 64, 1,000 and 10,000 rows (one OpenMP thread, as the bench
servers run). Each call takes other rows than the last (up to 100 windows of the 10,000): the same row over
and over would let the branch predictor learn the descent's path. For the tree models it also times the tree
evaluation alone (`raw`, on the estimator's input matrix) and reports it per tree and row, and which loop
serves that size. --descent: the one-row-one-tree descent that served every size before the bit-vector loops
(fastpath/bitforest.py), for a before/after on the same machine. Never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
SIZES = (1, 64, 1000, 10_000)
TEST_ROWS = 10_000


def per_call(fn: Callable[[int], Any], budget: float) -> float:
    """Median seconds per call over ~budget seconds; call i gets argument i."""
    fn(0)
    times: list[float] = []
    end = time.perf_counter() + budget
    while time.perf_counter() < end or len(times) < 5:
        t = time.perf_counter()
        fn(len(times))
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def cycling(fn: Callable[[Any], object], items: Sequence[Any]) -> Callable[[int], object]:
    """fn on items[i], round the list: each call takes other rows than the last."""

    def call(i: int) -> object:
        return fn(items[i % len(items)])

    return call


def windows(cols: dict[str, list[Any]], n: int) -> list[dict[str, list[Any]]]:
    """Up to 100 different n-row slices of the test columns, made before timing."""
    starts = sorted({(j * 997 * n) % (TEST_ROWS - n + 1) for j in range(min(100, TEST_ROWS // n))})
    return [{k: v[s : s + n] for k, v in cols.items()} for s in starts]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000, help="training rows")
    parser.add_argument("--descent", action="store_true", help="tree models: the descent loop at every size")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of timing per figure")
    args = parser.parse_args()

    from flywheel.data.sample_data import GENERATORS
    from flywheel.data.validation import validate_batch
    from flywheel.schema import load_schema
    from flywheel.serving.fastpath.bitforest import block_for
    from flywheel.serving.fastpath.builder import compile_pipeline, reference, verify
    from flywheel.training.pipelines import ESTIMATORS

    print(f"{'model':15} {'rows':>6} {'pipeline µs':>12} {'fast µs':>10} {'speed-up':>9} {'fast rows/s':>12} "
          f"{'trees µs':>10} {'ns/tree-row':>11}  loop")  # fmt: skip
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
        tree: Any = fast if hasattr(fast, "roots") else None  # a TreePredictor: time its tree evaluation too
        if args.descent and tree is not None:
            tree.bits = None
        warm = time.perf_counter() - t
        golden = json.loads(gen(20, seed=9).drop(columns=[schema.target.name]).to_json(orient="records"))
        t = time.perf_counter()
        verdict = verify(fast, model, schema, golden)
        checked = time.perf_counter() - t
        test = validate_batch(gen(TEST_ROWS, seed=5).to_csv(index=False).encode(), "t.csv", schema)
        cols = {f.name: test[f.name].tolist() for f in schema.features}
        for n in SIZES:
            parts = windows(cols, n)
            slow = per_call(cycling(partial(reference, model, schema), parts), min(args.budget, 0.5))
            quick = per_call(cycling(fast.predict, parts), args.budget)
            line = (f"{dataset + '/' + estimator:15} {n:6} {slow * 1e6:12.1f} {quick * 1e6:10.1f} {slow / quick:8.0f}x "
                    f"{n / quick:12,.0f}")  # fmt: skip
            if tree is not None:
                raw = per_call(cycling(tree.raw, [tree.matrix(p) for p in parts]), args.budget)
                loop = "one row at a time" if block_for(n) == 1 else f"blocks of {block_for(n)}"
                loop = loop if tree.bits is not None else "descent"
                line += f" {raw * 1e6:10.1f} {raw / n / len(tree.roots) * 1e9:11.2f}  {loop}"
            print(line, flush=True)
        size = f", {len(tree.roots)} trees" if tree is not None else ""
        took = f"warm {warm:.2f} s, verify {checked:.2f} s"
        print(f"{'':15} exact={verdict.exact} on {verdict.rows_checked} rows{size} ({took})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
