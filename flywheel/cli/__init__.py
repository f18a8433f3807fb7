"""The `flywheel` command: one module per verb group, gathered by flywheel/cli/main.py."""

from flywheel.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
