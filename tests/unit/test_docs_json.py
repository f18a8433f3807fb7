"""Every ```json block in README.md and docs/*.md is valid JSON, so a reader can copy it as it is.

A block that is deliberately not JSON (comments, elisions) is fenced as ```jsonc or ```text instead: only
```json blocks are parsed.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```json[ \t]*\n(?P<body>.*?)^(?P=indent)```", re.MULTILINE | re.DOTALL)
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def json_blocks(text: str) -> list[tuple[int, str]]:
    """(line, body) of each ```json block; an indented fence (in a list item) has its indent removed."""
    return [(text[: m.start()].count("\n") + 1, textwrap.dedent(m.group("body"))) for m in FENCE.finditer(text)]


def test_the_block_finder_sees_indented_blocks_and_skips_jsonc() -> None:
    text = '```json\n{"a": 1}\n```\n- item\n  ```json\n  [1, 2]\n  ```\n```jsonc\n{"a": 1} // no\n```\n'
    assert json_blocks(text) == [(1, '{"a": 1}\n'), (5, "[1, 2]\n")]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_json_blocks_parse(doc: Path) -> None:
    bad = []
    for line, body in json_blocks(doc.read_text()):
        try:
            json.loads(body)
        except json.JSONDecodeError as e:
            bad.append(f"{doc.name}:{line + e.lineno}: {e.msg}")
    assert not bad, "\n".join(bad)


def test_the_schema_examples_are_schemas() -> None:
    from flywheel.schema import Schema

    blocks = [json.loads(body) for _, body in json_blocks((REPO / "docs" / "schema.md").read_text())]
    schemas = [b for b in blocks if isinstance(b, dict) and "features" in b]
    assert schemas
    for b in schemas:
        Schema.model_validate(b)
