"""mypy's scope (pyproject.toml, [tool.mypy]): it follows only the aws_cdk modules listed there and skips the
libraries that only our dependencies import. A module the stack imports must be listed, and a skipped library must
not be imported by our code: else its types would be Any and mypy would check nothing against them."""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ["flywheel", "lambdas", "app", "cdk", "bench"]


def _overrides(follow: str) -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [m for o in config["tool"]["mypy"]["overrides"] if o.get("follow_imports") == follow for m in o["module"]]


def _imported(folders: list[str]) -> set[str]:
    """Every module our code imports by name (`import a.b` -> a.b; `from a import b` -> a and a.b)."""
    found: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found |= {alias.name for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _is_submodule(name: str) -> bool:
    """`name` (a.b) is a module of installed package a, not a name inside a (found without importing a)."""
    top, _, rest = name.partition(".")
    spec = importlib.util.find_spec(top)
    if not rest or spec is None or not spec.submodule_search_locations:
        return False
    return any((Path(p) / rest.replace(".", "/")).with_suffix(".py").exists() or (Path(p) / rest).is_dir()
               for p in spec.submodule_search_locations)  # fmt: skip


def test_every_aws_cdk_module_the_stack_imports_is_followed() -> None:
    followed = set(_overrides("normal"))
    used = {m for m in _imported(["cdk"]) if m == "aws_cdk" or (m.startswith("aws_cdk.") and _is_submodule(m))}
    assert used, "no aws_cdk import found: the scan is broken"
    assert used <= followed, f"add to pyproject.toml's followed aws_cdk modules: {sorted(used - followed)}"
    assert followed <= used, f"no longer imported, drop from pyproject.toml: {sorted(followed - used)}"


def test_no_skipped_library_is_imported_by_our_code() -> None:
    skipped = [p for p in _overrides("skip") if p != "aws_cdk.*"]
    assert skipped
    ours = _imported(CHECKED)
    hits = sorted(m for m in ours for pattern in skipped if fnmatch(m, pattern) or m == pattern.removesuffix(".*"))
    assert not hits, f"our code imports what mypy skips (pyproject.toml): {hits}"
