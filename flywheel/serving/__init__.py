"""Serving core: the model host (hot reload), micro-batching, input checks and metrics."""
