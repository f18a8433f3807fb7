"""The prediction form as data: widgets, ranges and defaults from a schema and a manifest's statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd

from app.ui.form_fields import MISSING, ChoiceField, NumberField, build_fields, median_from_profile, to_instance
from app.ui.uploads import object_name
from flywheel.data.sample_data import GENERATORS
from flywheel.schema import load_schema
from flywheel.training import drift


def test_one_field_per_feature_with_schema_ranges_and_midpoints() -> None:
    schema = load_schema("savings")
    fields = {f.name: f for f in build_fields(schema)}
    assert list(fields) == schema.feature_names
    age = fields["age"]
    assert isinstance(age, NumberField)
    assert (age.integer, age.min, age.max, age.step, age.default, age.format) == (True, 18, 100, 1, 59, "%d")
    assert all(isinstance(v, int) for v in (age.min, age.max, age.step, age.default))
    income = fields["income"]
    assert isinstance(income, NumberField)
    assert (income.integer, income.min, income.max, income.default) == (False, 0.0, 100000.0, 50000.0)
    assert income.step == 1000.0  # a tenth of the range, rounded down to a power of ten, / 10
    region = fields["region"]
    assert isinstance(region, ChoiceField)
    assert region.options == ("north", "south", "east", "west", "central") and region.index == 0
    assert "(USD/month)" in income.label and "household net income" in income.help


def test_defaults_are_the_training_medians_and_most_frequent_category() -> None:
    schema = load_schema("savings")
    frame = GENERATORS["savings"](3000, seed=3, drift=0.0)
    categories = {c: list(schema.by_name[c].categories or ()) for c in schema.categorical}
    stats = drift.profile_frame(frame[schema.feature_names], schema.numeric, categories)
    fields = {f.name: f for f in build_fields(schema, stats)}
    for name in schema.numeric:
        f = fields[name]
        assert isinstance(f, NumberField)
        median = float(np.nanmedian(frame[name].astype(float)))
        assert f.default == (round(median) if f.integer else median), name
    # dependents repeats values (0, 1, 2, ...): duplicate decile edges are dropped, the median survives
    assert len(stats["dependents"]["edges"]) < 9
    region = fields["region"]
    assert isinstance(region, ChoiceField)
    assert region.options[region.index] == frame["region"].value_counts().idxmax()
    # the step follows the spread of the training data
    income = fields["income"]
    assert isinstance(income, NumberField) and income.step == 10 ** (np.floor(np.log10(frame["income"].std())) - 1)


def test_median_from_profile_edge_cases() -> None:
    assert median_from_profile(None) is None
    assert median_from_profile({"kind": "numeric", "edges": [], "proportions": [], "missing": 1.0}) is None
    skewed = drift.numeric_profile(pd.Series([0] * 70 + [5] * 20 + [9] * 10))
    assert median_from_profile(skewed) == 0.0
    assert median_from_profile(drift.numeric_profile(pd.Series(np.arange(1, 102)))) == 51.0


def test_nullable_categorical_offers_missing_and_instances_carry_none() -> None:
    schema = load_schema("churn")
    fields = build_fields(schema)
    by_name = {f.name: f for f in fields}
    payment, contract = by_name["payment_method"], by_name["contract"]
    assert isinstance(payment, ChoiceField) and isinstance(contract, ChoiceField)
    assert payment.options == ("card", "bank", "check", MISSING)
    assert contract.options == ("monthly", "annual", "two_year")
    values = {"tenure_months": 12, "monthly_charges": 70.5, "support_calls": 2.0, "contract": "annual",
              "payment_method": MISSING}  # fmt: skip
    instance = to_instance(fields, values)
    assert instance == {"tenure_months": 12, "monthly_charges": 70.5, "support_calls": 2, "contract": "annual",
                        "payment_method": None}  # fmt: skip
    assert isinstance(instance["support_calls"], int)
    savings = build_fields(load_schema("savings"))
    assert to_instance(savings, {"credit_score": None, "region": "west"})["credit_score"] is None


def test_upload_object_names_are_safe() -> None:
    assert object_name("batch 1.csv") == "batch-1.csv"
    assert object_name("../../etc/passwd") == "passwd.csv"
    assert object_name("C:\\Users\\me\\My Data.CSV") == "My-Data.csv"
    assert object_name("...csv") == "batch.csv"
