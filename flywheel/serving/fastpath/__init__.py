"""The exact fast path: a fitted Pipeline compiled to trees or linear algebra, proved identical before it serves."""
