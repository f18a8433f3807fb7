"""`flywheel schema infer` (flywheel/data/schema_inference.py) on real public datasets and on the awkward cases.

The datasets are scikit-learn's bundled ones (no download), written to CSV here: each inferred schema must accept
its own file through `flywheel validate` and train a model that beats the naive baseline.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from flywheel.cli.main import main
from flywheel.data import schema_inference
from flywheel.data.schema_inference import CannotInfer, infer_schema
from flywheel.data.validation import validate_batch
from flywheel.schema import Schema, load_schema
from flywheel.training.gate import PRIMARY_METRIC
from flywheel.training.pipelines import fit_candidate, holdout_mask, naive_baseline, score

REPO = Path(__file__).resolve().parents[2]


def infer(capsys: pytest.CaptureFixture[str], csv: Path, target: str, *extra: str) -> tuple[int, str, str]:
    code = main(["schema", "infer", str(csv), "--target", target, *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def infer_to_file(capsys: pytest.CaptureFixture[str], csv: Path, target: str) -> tuple[Schema, str]:
    out = csv.with_suffix(".schema.json")
    code, stdout, err = infer(capsys, csv, target, "--out", str(out))
    assert code == 0, err
    assert stdout == "" and "passes `flywheel validate`" in err
    return load_schema(str(out)), err


def column_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("  ")]


def trains_above_naive(csv: Path, schema: Schema) -> tuple[float, float]:
    """Fit the trainer's candidates on the validated file; the holdout score of the best and of the naive model."""
    frame = validate_batch(csv.read_bytes(), csv.name, schema)
    hold = holdout_mask(frame, 0.25)
    x, y = frame[schema.feature_names], frame[schema.target.name]
    trained = fit_candidate(schema, x[~hold], y[~hold], ["linear", "hgb"], folds=3, threads=1)
    metric = PRIMARY_METRIC[schema.task]
    naive = naive_baseline(schema).fit(x[~hold], y[~hold])
    return score(schema, trained.model, x[hold], y[hold])[metric], score(schema, naive, x[hold], y[hold])[metric]


def validate_cli(capsys: pytest.CaptureFixture[str], csv: Path, schema_file: Path) -> int:
    code = main(["validate", str(csv), "--schema", str(schema_file)])
    capsys.readouterr()
    return code


def test_wine_three_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "wine.csv"
    load_wine(as_frame=True).frame.to_csv(csv, index=False)
    schema, err = infer_to_file(capsys, csv, "target")
    assert schema.task == "classification" and schema.target.classes == ("0", "1", "2")
    assert len(schema.features) == 13 and all(f.type == "numeric" for f in schema.features)
    assert len(column_lines(err)) == 14  # one per column, the target's first
    assert column_lines(err)[0].startswith("  target 'target': classification (3 distinct whole numbers")
    assert validate_cli(capsys, csv, csv.with_suffix(".schema.json")) == 0
    best, naive = trains_above_naive(csv, schema)
    assert best > 0.85 and naive <= 0.34, (best, naive)


def test_breast_cancer_as_text_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns={"target": "diagnosis"})
    frame["diagnosis"] = frame["diagnosis"].map(dict(enumerate(data.target_names)))
    csv = tmp_path / "cancer.csv"
    frame.to_csv(csv, index=False)
    schema, _ = infer_to_file(capsys, csv, "diagnosis")
    assert schema.task == "classification" and schema.target.classes == ("benign", "malignant")
    assert "mean radius" in schema.feature_names  # spaces in names are fine in a schema
    # six columns sit on 0 in 13 rows each: the floor rule bounds them; the others are merely positive: no bound
    assert sorted(f.name for f in schema.features if f.min == 0) == sorted(
        c for c in frame.columns if c != "diagnosis" and (frame[c] == 0).sum() >= 2
    )
    assert all(f.max is None and not f.integer and not f.nullable for f in schema.features)
    assert validate_cli(capsys, csv, csv.with_suffix(".schema.json")) == 0
    best, naive = trains_above_naive(csv, schema)
    assert best > 0.9 and naive == 0.5, (best, naive)


def test_diabetes_with_a_category_and_missing_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = load_diabetes(as_frame=True, scaled=False).frame
    frame["sex"] = frame["sex"].map({1.0: "female", 2.0: "male"})
    frame["age"] = frame["age"].astype(int)  # written "59": an integer column
    frame.loc[frame.index % 17 == 3, "bmi"] = np.nan  # empty cells
    frame.loc[frame.index % 23 == 5, "sex"] = "NA"  # a null word
    csv = tmp_path / "diabetes.csv"
    frame.to_csv(csv, index=False)
    schema, err = infer_to_file(capsys, csv, "target")
    assert schema.task == "regression" and schema.target.min is None  # 25..346, never 0: no floor to see
    by = schema.by_name
    assert by["sex"].type == "categorical" and by["sex"].categories == ("female", "male") and by["sex"].nullable
    assert by["bmi"].type == "numeric" and by["bmi"].nullable and not by["bmi"].integer
    assert by["age"].integer and not by["age"].nullable and by["age"].min is None
    assert not by["s1"].integer  # written "157.0": could be 157.5 next time
    empty = int((frame.index % 23 == 5).sum())
    assert f"'sex': categorical, 2 categories ['female', 'male'], nullable ({empty} empty)" in err
    assert validate_cli(capsys, csv, csv.with_suffix(".schema.json")) == 0
    best, naive = trains_above_naive(csv, schema)
    assert best > 0.3 and naive < 0.05, (best, naive)


def test_the_example_schema_is_this_commands_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("make_csv", REPO / "examples" / "breast-cancer" / "make_csv.py")
    assert spec and spec.loader
    make_csv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_csv)
    csv = tmp_path / "breast-cancer.csv"
    assert make_csv.main([str(csv)]) == 0
    code, out, _ = infer(capsys, csv, "diagnosis")
    assert code == 0
    assert out == (REPO / "examples" / "breast-cancer" / "schema.json").read_text()
    assert json.loads(out)["target"] == {"name": "diagnosis", "classes": ["benign", "malignant"]}


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bounds_and_integers_follow_the_data_conservatively(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({
        "count": rng.poisson(1.0, n),  # many zeros, whole: integer, min 0
        "amount": np.where(rng.random(n) < 0.1, 0.0, rng.exponential(50, n)).round(2),  # floats with a floor at 0
        "celsius": rng.uniform(0.5, 30, n).round(1),  # positive, never 0: no bound
        "balance": rng.normal(0, 100, n).round(2),  # negative values: no bound
        "rare_zero": np.concatenate([[0.0], rng.uniform(1, 100, n - 1)]),  # one 0 in 400: not a floor
        "whole_floats": rng.integers(1, 9, n).astype(float),  # written "3.0"
        "y": rng.normal(size=n),
    })  # fmt: skip
    src = write(tmp_path, frame.to_csv(index=False))
    by = infer_schema(src, "data.csv", "y").schema.by_name
    assert (by["count"].min, by["count"].integer) == (0.0, True)
    assert (by["amount"].min, by["amount"].integer) == (0.0, False)
    assert by["celsius"].min is None and by["balance"].min is None and by["rare_zero"].min is None
    assert by["whole_floats"].integer is False
    assert all(f.max is None for f in by.values())


def test_an_identifier_column_is_refused_with_what_to_do(tmp_path: Path) -> None:
    rows = "\n".join(f"C{i:04d},{i % 3},{i * 0.5}" for i in range(300))
    src = write(tmp_path, "customer,plan,y\n" + rows + "\n")
    with pytest.raises(CannotInfer) as e:
        infer_schema(src, "data.csv", "y")
    assert (
        "'customer': more than 100 distinct values" in e.value.message and "remove them from the CSV" in e.value.message
    )
    small = write(tmp_path, "customer,y\n" + "\n".join(f"C{i},{i}" for i in range(30)) + "\n", "small.csv")
    with pytest.raises(CannotInfer, match="'customer': all 30 values differ"):
        infer_schema(small, "small.csv", "y")


def test_a_number_column_with_a_word_for_missing_is_pointed_out(tmp_path: Path) -> None:
    rows = "\n".join(f"{'?' if i % 50 == 7 else i * 1.5},{i}" for i in range(300))
    src = write(tmp_path, "x,y\n" + rows + "\n")
    with pytest.raises(
        CannotInfer, match=r"'x': 294 of 300 values are numbers but not \['\?'\]: if those mean missing"
    ):
        infer_schema(src, "data.csv", "y")
    fixed = write(tmp_path, "x,y\n" + rows.replace("?", "") + "\n", "fixed.csv")
    assert infer_schema(fixed, "fixed.csv", "y").schema.by_name["x"].nullable


def test_target_problems_name_the_rows(tmp_path: Path) -> None:
    rows = [f"{i},{'' if i in (3, 40) else i % 2}" for i in range(50)]
    src = write(tmp_path, "x,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(CannotInfer, match=r"target 'label' is empty on line\(s\) \[5, 42\]"):
        infer_schema(src, "data.csv", "label")
    text = write(tmp_path, "x,y\n1,a\n2,b\n3,c\n", "text.csv")
    with pytest.raises(CannotInfer, match=r"target 'y' is not a number on line\(s\) \[2, 3, 4\]"):
        infer_schema(text, "text.csv", "y", task="regression")
    one = write(tmp_path, "x,y\n1,a\n2,a\n", "one.csv")
    with pytest.raises(CannotInfer, match="one value only"):
        infer_schema(one, "one.csv", "y")
    with pytest.raises(CannotInfer, match=r"no column 'Label'; names are case-sensitive: 'label'\?"):
        infer_schema(src, "data.csv", "Label")


def test_task_guess_and_override(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i % 4}" for i in range(80))
    src = write(tmp_path, "x,stars\n" + rows + "\n")
    found = infer_schema(src, "data.csv", "stars")
    assert found.schema.task == "classification" and found.schema.target.classes == ("0", "1", "2", "3")
    assert "pass --task regression" in found.notes[0]
    regression = infer_schema(src, "data.csv", "stars", task="regression").schema
    assert regression.task == "regression" and regression.target.min == 0.0


def test_header_names_a_schema_cannot_hold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    indexed = tmp_path / "indexed.csv"
    frame.to_csv(indexed)  # pandas writes its index under an empty name
    code, out, err = infer(capsys, indexed, "y")
    assert code == 1 and out == "" and "column(s) [1] of the header have no name (a pandas index?" in err
    dup = write(tmp_path, "a, a ,y\n1,2,3\n", "dup.csv")
    with pytest.raises(CannotInfer, match=r"repeats column\(s\) \['a'\]"):
        infer_schema(dup, "dup.csv", "y")
    spaced = write(tmp_path, " a ,\ufeffb,y\n1,x,0\n2,z,1\n", "spaced.csv")
    assert infer_schema(spaced, "spaced.csv", "y").schema.feature_names == ["a", "b"]  # as validation compares
    code, _, err = infer(capsys, write(tmp_path, "a;b;y\n1;2;3\n", "semi.csv"), "y")
    assert code == 1 and "no column 'y'" in err


def test_bytes_validation_rejects_are_reported_as_validate_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ragged = write(tmp_path, "a,y\n1,2\n3,4,5\n", "ragged.csv")
    code, out, err = infer(capsys, ragged, "y")
    assert code == 1 and out == "" and "malformed CSV: line 3 has 3 field(s), the header has 2" in err
    binary = tmp_path / "x.csv"
    binary.write_bytes(b"\xff\xfea\x00,\x00y\x00")
    code, _, err = infer(capsys, binary, "y")
    assert code == 1 and "UTF-16" in err


def test_repeated_rows_are_caught_by_the_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write(tmp_path, "a,y\n" + "1,2\n" * 10 + "".join(f"{i},{i}\n" for i in range(40)))
    code, out, err = infer(capsys, src, "y")
    assert code == 1 and json.loads(out)["task"] == "regression"  # the schema is right; the data repeats itself
    assert "does not pass `flywheel validate`" in err and "repeats an earlier row" in err


def test_memory_is_bounded_per_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many blocks and many distinct values: the scan keeps at most MAX_CATEGORIES + 1 values per column."""
    monkeypatch.setattr("flywheel.data.validation.BLOCK_BYTES", 4096)  # ~300 blocks from a small file
    n = 60_000
    frame = pd.DataFrame({"id": np.arange(n), "city": np.array(["a", "b", "c"])[np.arange(n) % 3],
                          "v": np.arange(n) * 0.25, "y": np.arange(n) % 2})  # fmt: skip
    src = write(tmp_path, frame.to_csv(index=False))
    rows, stats = schema_inference.scan(src, "data.csv")
    assert rows == n
    by = {s.name: s for s in stats}
    assert (
        by["id"].counts is None and by["v"].counts is None and by["city"].counts == {"a": 20000, "b": 20000, "c": 20000}
    )
    found = infer_schema(src, "data.csv", "y")
    assert "counts up by one on every row" in next(line for line in found.notes if line.startswith("'id'"))
    assert "counts up" not in next(line for line in found.notes if line.startswith("'v'"))


def test_help_from_the_module_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "flywheel.cli", "schema", "infer", "--help"], capture_output=True,
                         text=True, cwd=REPO)  # fmt: skip
    assert out.returncode == 0 and "--target COLUMN" in out.stdout and "--task" in out.stdout, out.stderr


def test_a_header_over_the_column_limit_is_refused_naming_the_count(tmp_path: Path) -> None:
    """A hostile width is refused before any per-column work (20k columns took 35 s and 540 MB before the limit)."""
    wide = write(tmp_path, ",".join(f"c{i}" for i in range(4999)) + ",y\n" + ",".join(["1"] * 5000) + "\n")
    with pytest.raises(CannotInfer, match=r"the header has 5000 columns; schema infer takes at most 1000"):
        infer_schema(wide, "data.csv", "y")
    limit = schema_inference.MAX_COLUMNS
    rows = "\n".join(",".join([str(r)] * limit) for r in range(3))
    fits = write(tmp_path, ",".join(f"c{i}" for i in range(limit - 1)) + ",y\n" + rows + "\n", "fits.csv")
    assert len(infer_schema(fits, "fits.csv", "y").schema.features) == limit - 1


def test_repeated_names_among_many_columns_are_all_named(tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(900)] + ["c5", " c7 ", "c5", "c899", "y"]
    dup = write(tmp_path, ",".join(names) + "\n" + ",".join(["1"] * len(names)) + "\n")
    with pytest.raises(CannotInfer) as e:
        infer_schema(dup, "data.csv", "y")
    assert (
        e.value.message == "data.csv: the header repeats column(s) ['c5', 'c7', 'c899'] (names compared without spaces)"
    )


def test_a_long_text_value_makes_the_column_free_text(tmp_path: Path) -> None:
    long = "x" * 260 + "END"
    rows = "\n".join(f"{['short', 'other', long][i % 3]},{i % 2},{i}" for i in range(60))
    src = write(tmp_path, "note,flag,y\n" + rows + "\n")
    with pytest.raises(CannotInfer) as e:
        infer_schema(src, "data.csv", "y")
    message = e.value.message
    assert f"'note': values up to 263 characters (e.g. '{'x' * 40}…'): free text?" in message, message
    assert "END" not in message and "x" * 41 not in message
    at_limit = write(tmp_path, "note,flag,y\n" + rows.replace(long, "x" * 200) + "\n", "at_limit.csv")
    assert infer_schema(at_limit, "at_limit.csv", "y").schema.by_name["note"].categories == (
        "other",
        "short",
        "x" * 200,
    )
    target = write(tmp_path, "a,label\n" + "\n".join(f"{i},{['a', long][i % 2]}" for i in range(40)) + "\n", "t.csv")
    with pytest.raises(CannotInfer, match=r"target 'label' has values up to 263 characters .*: not class labels"):
        infer_schema(target, "t.csv", "label")


def test_values_in_the_notes_are_shortened(tmp_path: Path) -> None:
    wordy = ["alpha " * 25, "beta " * 30]  # 150 characters each: categories, shown cut to 40
    rows = "\n".join(f"{wordy[i % 2]},{wordy[(i // 2) % 2]}" for i in range(40))
    found = infer_schema(write(tmp_path, "kind,label\n" + rows + "\n"), "data.csv", "label")
    assert found.schema.target.classes == tuple(sorted(w.strip() for w in wordy))  # kept whole in the schema
    assert all(len(line) < 250 for line in found.notes), found.notes
    assert f"'{('alpha ' * 7)[:40]}…'" in found.notes[0] and f"'{('beta ' * 8)[:40]}…'" in found.notes[1]
