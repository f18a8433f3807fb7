"""Flywheel: keep a scikit-learn model fresh in production."""

__version__ = "0.1.0"
