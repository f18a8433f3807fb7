"""bench/machine.py: the steadiness probe printed beside the serving benchmark's figures."""

from __future__ import annotations

from bench import machine


def test_the_spread_is_relative_to_the_median_window() -> None:
    s = machine.steadiness(seconds=0.5, window=0.05)
    assert s["windows"] >= 5
    assert 0 < s["min"] <= s["p5"] <= 1.0 <= s["max"]


def test_the_description_names_the_spread_and_the_idle_settings() -> None:
    text = machine.describe(seconds=0.3)
    assert text.startswith("machine: a fixed CPU loop ran at ") and "of its median speed" in text
    assert ("cpuidle" in text) and text.endswith(machine.idle_settings())
