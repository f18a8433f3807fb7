"""The README's AWS CLI section works with the AWS CLI v1 too: v1 reads only AWS_DEFAULT_REGION."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_aws_cli_section_sets_the_region_for_cli_v1() -> None:
    text = README.read_text()
    section = text.split("The same with the AWS CLI", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    exported = " ".join(line for line in section.splitlines() if line.startswith(("export", "  ", "\t")))
    assert re.search(r"\bAWS_DEFAULT_REGION=\S+", exported), section
    assert re.search(r"\bAWS_REGION=\S+", exported), section
