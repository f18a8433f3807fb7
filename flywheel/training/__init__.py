"""Fitting and judging a candidate offline: the pipelines, the promotion gate, drift statistics, the training
window, memory capacity.
"""
