"""Demo data from a documented generating process (docs/sample-data.md); deterministic per seed.

Nothing is downloaded: these generators are the only source of demo data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REGIONS = ("north", "south", "east", "west", "central")
_REGION_P = np.array([0.2, 0.25, 0.2, 0.2, 0.15])
_REGION_INCOME = np.array([1.0, 0.9, 1.1, 1.2, 0.95])
_REGION_COST = np.array([1.0, 0.85, 1.15, 1.3, 0.95])


def savings(rows: int, seed: int = 0, drift: float = 0.0) -> pd.DataFrame:
    """Household finances -> monthly savings. `drift` (0 = baseline, 1 = strong) shifts the population
    (richer, more indebted, more westerly, costlier) and the propensity to save, so an old model goes stale."""
    if rows < 1:
        raise ValueError("rows must be >= 1")
    rng = np.random.default_rng(seed)
    p = _REGION_P + drift * np.array([-0.05, -0.05, 0.0, 0.1, 0.0])
    region_idx = rng.choice(len(REGIONS), size=rows, p=p / p.sum())
    age = np.clip(rng.normal(42 + 3 * drift, 12, rows), 18, 90).round()
    tenure = np.minimum(age - 18, rng.gamma(2.0, 3.0, rows)).round(1)
    dependents = np.clip(rng.poisson(0.6 + 0.8 * ((age > 25) & (age < 55))), 0, 8)
    age_curve = 1 - 0.5 * ((age - 50) / 45) ** 2
    income = (
        np.exp(rng.normal(np.log(4200), 0.45, rows))
        * _REGION_INCOME[region_idx]
        * (1 + 0.015 * np.minimum(tenure, 20))
        * age_curve
        * (1 + 0.4 * drift)
    )
    income = np.clip(income, 500, 80_000)
    expenses = (1200 + 450 * dependents) * _REGION_COST[region_idx] * (1 + 0.35 * drift) + 0.35 * income * rng.normal(
        1, 0.1, rows
    )
    expenses = np.clip(expenses, 300, 90_000)
    debt = rng.exponential(15_000 * (1 + drift), rows) * np.where(age < 40, 1.5, 1.0)
    credit = np.clip(rng.normal(690 - debt / 4000 + 2 * tenure, 55), 300, 850).round()
    disposable = income - expenses - 0.025 * debt
    # the propensity to save rises steeply with creditworthiness and after 35: an interaction a linear
    # model cannot represent, which is what makes the gradient-boosted candidate worth having
    propensity = 0.1 + 0.8 / (1 + np.exp(-(credit - 680) / 25)) - 0.15 * drift
    propensity = np.clip(propensity * (1 + 0.01 * np.clip(age - 35, 0, 30)), 0.05, 1.0)
    savings_ = np.where(disposable > 0, disposable * propensity, 0.8 * disposable) + rng.normal(0, 120, rows)
    credit_obs = np.where(rng.random(rows) < 0.05, np.nan, credit)
    return pd.DataFrame(
        {
            "income": income.round(2),
            "expenses": expenses.round(2),
            "age": age.astype(int),
            "dependents": dependents.astype(int),
            "debt": debt.round(2),
            "credit_score": pd.array(credit_obs, dtype="Float64").astype("Int64"),
            "tenure_years": tenure,
            "region": np.asarray(REGIONS)[region_idx],
            "monthly_savings": np.clip(savings_, -20_000, 50_000).round(2),
        }
    )


def churn(rows: int, seed: int = 0, drift: float = 0.0) -> pd.DataFrame:
    """Subscribers -> churned yes/no (the classification example)."""
    rng = np.random.default_rng(seed)
    contract = rng.choice(["monthly", "annual", "two_year"], size=rows, p=[0.55, 0.3, 0.15])
    tenure = np.clip(rng.gamma(1.5, 18, rows), 0, 240).round()
    charges = np.clip(rng.normal(65 + 15 * drift, 25, rows), 5, 1000).round(2)
    calls = np.clip(rng.poisson(1.2 + drift, rows), 0, 100)
    pay = rng.choice(["card", "bank", "check"], size=rows).astype(object)
    pay[rng.random(rows) < 0.03] = None
    logit = (
        -1.0
        + 1.4 * (contract == "monthly")
        - 1.2 * (contract == "two_year")
        - 0.03 * tenure
        + 0.02 * (charges - 65)
        + 0.45 * calls
        + 0.5 * (pay == "check")
    )
    churned = rng.random(rows) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "tenure_months": tenure.astype(int),
            "monthly_charges": charges,
            "support_calls": calls.astype(int),
            "contract": contract,
            "payment_method": pay,
            "churned": np.where(churned, "yes", "no"),
        }
    )


GENERATORS = {"savings": savings, "churn": churn}
