"""mypy's scope (pyproject.toml, [tool.mypy]): it follows only the aws_cdk modules listed there and skips the
libraries that only our dependencies import. A module the stack imports must be listed, a class of a followed module
must not inherit from a skipped one, and a skipped library must not be imported by our code: else its types would be
Any (or a class's base Any: any attribute accepted) and mypy would check nothing against them."""

from __future__ import annotations

import ast
import importlib.util
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ["flywheel", "lambdas", "app", "cdk", "bench"]


OVERRIDES = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["overrides"]


def _overrides(follow: str) -> list[str]:
    return [m for o in OVERRIDES if o.get("follow_imports") == follow for m in o["module"]]


def _is_followed(module: str) -> bool:
    """mypy's precedence: a module's own name, else the most specific `a.b.*` pattern, else followed (the default)."""
    followed, skipped = _overrides("normal"), _overrides("skip")
    if module in followed or module in skipped:
        return module in followed
    patterns = [p for p in followed + skipped if p.endswith(".*") and (module + ".").startswith(p[:-1])]
    return not patterns or max(patterns, key=len) in followed


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


def _stack_imports() -> set[str]:
    used = {m for m in _imported(["cdk"]) if m == "aws_cdk" or (m.startswith("aws_cdk.") and _is_submodule(m))}
    assert used, "no aws_cdk import found: the scan is broken"
    return used


def _bases(modules: set[str]) -> tuple[set[str], list[str]]:
    """The aws_cdk modules that classes of `modules` inherit from, transitively, and "module.Class <- base" for
    each base module mypy would skip. aws_cdk's I* interfaces inherit from aws_cdk.interfaces.* (IBucket from
    IBucketRef): a skipped base is Any, and mypy then accepts any attribute of a bucket, a role, a queue."""
    spec = importlib.util.find_spec("aws_cdk")
    assert spec is not None and spec.submodule_search_locations
    package = Path(next(iter(spec.submodule_search_locations)))
    todo, seen, bases, skipped = list(modules), set(modules), set(), []
    while todo:
        module = todo.pop()
        source = (package / Path(*module.split(".")[1:]) / "__init__.py").read_text()
        imports = re.findall(r"^\s*import (aws_cdk[\w.]*) as (\w+)$", source, re.M)
        aliases = {alias: name for name, alias in imports}
        for cls, names in re.findall(r"^class (\w+)\((.*?)\):$", source, re.M | re.S):
            for alias in set(re.findall(r"\b(\w+)\.\w+", names)) & aliases.keys():
                base = aliases[alias]
                bases.add(base)
                if not _is_followed(base):
                    skipped.append(f"{module}.{cls} <- {base}")
                if base not in seen:
                    seen.add(base)
                    todo.append(base)
    return bases, skipped


def test_every_aws_cdk_module_the_stack_imports_or_inherits_from_is_followed() -> None:
    used = _stack_imports()
    bases, skipped = _bases(used)
    assert bases, "no base class found: the scan is broken"
    assert not skipped, f"classes inherit from modules mypy skips (add them to pyproject.toml): {skipped[:10]}"
    listed = {m for m in _overrides("normal") if not m.endswith(".*")}
    assert used <= listed, f"add to pyproject.toml's followed aws_cdk modules: {sorted(used - listed)}"
    stale = listed - used - bases
    assert not stale, f"neither imported nor inherited from, drop from pyproject.toml: {sorted(stale)}"


def test_no_skipped_library_is_imported_by_our_code() -> None:
    assert [p for p in _overrides("skip") if p != "aws_cdk.*"]
    # aws_cdk: the test above (`from aws_cdk import Duration` names a class, not a module)
    hits = sorted(m for m in _imported(CHECKED) if m.split(".")[0] != "aws_cdk" and not _is_followed(m))
    assert not hits, f"our code imports what mypy skips (pyproject.toml): {hits}"
